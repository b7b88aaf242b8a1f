"""Live views of a running search: TensorBoard and MLflow, through Ray Tune's own logger callbacks.

- TensorBoard: Tune's ``TBXLoggerCallback`` writes every trial's per-epoch
  scalars under EXPERIMENT/_tune/TRIAL/; the rank-0 worker adds the sample grids
  as images under EXPERIMENT/trials/TRIAL/tensorboard/ (ganray.train.tensorboard).
  ``tensorboard --logdir EXPERIMENT`` shows both.
- MLflow (``--mlflow-uri``): Ray's ``MLflowLoggerCallback`` makes one MLflow run
  per trial with the trial's params and per-epoch metrics; the subclass here
  also attaches each epoch's sample grid (read from ganray's storage) to that
  run as an artifact under ``samples/``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.logger import TBXLoggerCallback

from ganray.storage import Storage, join


class GridMLflowCallback(MLflowLoggerCallback):
    """MLflowLoggerCallback that also logs the trial's stored sample grids as run artifacts."""

    def __init__(self, trials_uri: str, endpoint_url: str = "", region: str = "", **kw: Any) -> None:
        super().__init__(**kw)
        self.trials_uri, self.endpoint_url, self.region = trials_uri, endpoint_url, region
        self._logged: dict[str, set[str]] = {}

    def _log_grids(self, trial) -> None:
        storage = Storage(self.endpoint_url, self.region)
        folder = join(self.trials_uri, trial.trial_id, "samples")
        done = self._logged.setdefault(trial.trial_id, set())
        new = [n for n in storage.listdir(folder) if n.endswith(".png") and n not in done]
        if not new:
            return
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "samples"))
            for n in new:
                with open(os.path.join(d, "samples", n), "wb") as fh:
                    fh.write(storage.read_bytes(join(folder, n)))
            self.mlflow_util.save_artifacts(run_id=self._trial_runs[trial], dir=d)
        done.update(new)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        super().log_trial_result(iteration, trial, result)
        self._log_grids(trial)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        if trial in self._trial_runs:
            self._log_grids(trial)
        super().log_trial_end(trial, failed)

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment state; the MLflow client is rebuilt in setup().
        state = self.__dict__.copy()
        state["_trial_runs"], state["_logged"] = {}, {}
        return state


def mlflow_tracking_uri(uri: str) -> str:
    """A tracking URI; a plain path becomes a local ``file:`` store. MLflow 3 keeps its file store in
    maintenance mode and refuses it unless MLFLOW_ALLOW_FILE_STORE is set: a local store needs no
    server or database, which is what a laptop or a test wants, so it is allowed here."""
    if "://" not in uri and not uri.startswith("file:"):
        uri = "file:" + os.path.abspath(uri)
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def check_mlflow(uri: str) -> None:
    """Fail before any trial when a local MLflow store cannot be used (e.g. sqlite:/// without
    SQLAlchemy, an unwritable folder). Servers (http/https/databricks) are not probed: the client
    retries unreachable servers for minutes, and a server may come up after the search starts."""
    from ganray.tune.driver import SearchError

    if uri.split(":", 1)[0] in ("http", "https", "databricks"):
        return
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - MLflow raises many types for a bad store
        raise SearchError(
            f"--mlflow-uri {uri}: cannot use this MLflow store ({type(e).__name__}: {str(e)[:200]}); "
            f"give a local folder (file:/path/mlruns) or a tracking server (http://host:5000)"
        ) from None


def callbacks(experiment_uri: str, name: str, opts) -> list:
    """Tune callbacks for a search (``opts``: its SearchOptions): TensorBoard scalars always,
    MLflow when ``opts.mlflow_uri`` is set (the MLflow experiment is named after the search)."""
    out: list = [TBXLoggerCallback()]
    if opts.mlflow_uri:
        uri = mlflow_tracking_uri(opts.mlflow_uri)
        check_mlflow(uri)
        out.append(
            GridMLflowCallback(
                join(experiment_uri, "trials"),
                opts.endpoint_url,
                opts.region,
                tracking_uri=uri,
                experiment_name=name,
                tags={"ganray.experiment": experiment_uri},
            )
        )
    return out
