"""Read any experiment (a search or a single run) back from storage, tolerating damage.

An experiment is what ``ganray.tune`` leaves (EXPERIMENT/trials/TRIAL_ID/ runs,
space.yaml, results.parquet, best.json) or a single ``ganray.train`` run (a
folder with metrics.jsonl). Nothing here needs a running cluster, and a search
that is still running reads fine: a trial's status comes from results.parquet
once the search wrote it, else from the run's own files (error.json, done.json).

A file that is missing or corrupt is recorded as a ``Problem`` and skipped:
the report shows it and goes on.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import posixpath
import re
from typing import Any

import yaml

from ganray import checkpoint as ckpt
from ganray.storage import Storage, join

log = logging.getLogger("ganray.analysis")

TRIALS_DIR = "trials"
RUNNING = "running"  # no final state yet (the search is still going, or was interrupted)
_GRID = re.compile(r"^epoch_(\d{4,})\.png$")


@dataclasses.dataclass
class Problem:
    """A file that could not be used, and why (shown in the report)."""

    uri: str
    message: str


@dataclasses.dataclass
class Trial:
    trial_id: str
    run_uri: str
    status: str  # finished | stopped | errored | unfinished | running
    error: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # the searched values
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the run's config.yaml
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # metrics rows, by epoch
    grids: dict[int, str] = dataclasses.field(default_factory=dict)  # epoch -> grid URI
    checkpoints: list[ckpt.CheckpointInfo] = dataclasses.field(default_factory=list)

    def cfg(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key (``optim.lr``), or ``default``."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node


@dataclasses.dataclass
class Experiment:
    uri: str
    metric: str  # the objective (fid)
    mode: str  # min | max
    trials: list[Trial]
    space: dict[str, Any] | None = None  # space.yaml (None for a single run)
    best_json: dict[str, Any] | None = None
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def is_search(self) -> bool:
        return self.space is not None


def _read_json(storage: Storage, uri: str, problems: list[Problem]) -> Any:
    if not storage.exists(uri):
        return None
    try:
        return json.loads(storage.read_text(uri))
    except (ValueError, UnicodeDecodeError, OSError) as e:
        problems.append(Problem(uri, f"unreadable JSON ({type(e).__name__}: {e}); skipped"))
        return None


def _read_yaml(storage: Storage, uri: str, problems: list[Problem]) -> Any:
    if not storage.exists(uri):
        return None
    try:
        return yaml.safe_load(storage.read_text(uri))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
        problems.append(Problem(uri, f"unreadable YAML ({type(e).__name__}); skipped"))
        return None


def read_history(storage: Storage, run_uri: str, problems: list[Problem]) -> list[dict[str, Any]]:
    """metrics.jsonl rows (bad lines skipped and reported), else metrics.parquet, else []."""
    uri = join(run_uri, "metrics.jsonl")
    rows: list[dict[str, Any]] = []
    if storage.exists(uri):
        try:
            text = storage.read_text(uri)
        except (OSError, UnicodeDecodeError) as e:
            problems.append(Problem(uri, f"unreadable ({type(e).__name__}); skipped"))
            text = ""
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                problems.append(Problem(uri, f"line {n} is not JSON; that epoch is skipped"))
                continue
            if isinstance(row, dict) and isinstance(row.get("epoch"), int):
                rows.append(row)
            else:
                problems.append(Problem(uri, f"line {n} has no integer 'epoch'; skipped"))
        return sorted(rows, key=lambda r: r["epoch"])
    pq_uri = join(run_uri, "metrics.parquet")
    if storage.exists(pq_uri):
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(io.BytesIO(storage.read_bytes(pq_uri))).to_pylist()
        except Exception as e:  # noqa: BLE001 - any Arrow error means a damaged table
            problems.append(Problem(pq_uri, f"unreadable Parquet ({type(e).__name__}); skipped"))
    return rows


def list_grids(storage: Storage, run_uri: str) -> dict[int, str]:
    """epoch -> URI of every sample grid a run stored."""
    folder = join(run_uri, "samples")
    out = {}
    for name in storage.listdir(folder):
        m = _GRID.match(name)
        if m:
            out[int(m.group(1))] = join(folder, name)
    return dict(sorted(out.items()))


def _final_states(storage: Storage, uri: str, problems: list[Problem]) -> dict[str, dict[str, Any]]:
    """trial id -> {status, error, params} from results.parquet (written when the search ends)."""
    pq_uri = join(uri, "results.parquet")
    if not storage.exists(pq_uri):
        return {}
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(io.BytesIO(storage.read_bytes(pq_uri))).to_pylist()
    except Exception as e:  # noqa: BLE001
        problems.append(Problem(pq_uri, f"unreadable Parquet ({type(e).__name__}); statuses taken from runs"))
        return {}
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        params = {k[len("param.") :]: v for k, v in r.items() if k.startswith("param.") and v is not None}
        out.setdefault(
            str(r.get("trial_id")),
            {"status": r.get("status"), "error": r.get("error") or "", "params": params},
        )
    return out


def _searched_params(space: dict[str, Any] | None, trial: Trial) -> dict[str, Any]:
    """The searched keys' values read from the trial's config (for a search still running)."""
    if not space:
        return {}
    out = {}
    for key, spec in (space.get("search") or {}).items():
        when = (spec or {}).get("when") or {}
        if all(trial.cfg(k) in allowed for k, allowed in when.items()):
            v = trial.cfg(key.partition("#")[0])
            if v is not None:
                out[key] = v
    return out


def load_trial(
    storage: Storage, run_uri: str, trial_id: str, final: dict[str, Any] | None, problems: list[Problem]
) -> Trial:
    """One trial (or run) from its folder; ``final`` is its results.parquet state, if any."""
    t = Trial(trial_id, run_uri, RUNNING)
    t.config = _read_yaml(storage, join(run_uri, "config.yaml"), problems) or {}
    t.history = read_history(storage, run_uri, problems)
    t.grids = list_grids(storage, run_uri)
    t.checkpoints = ckpt.list_checkpoints(storage, run_uri)
    err = _read_json(storage, join(run_uri, "error.json"), problems)
    if final and final.get("status"):
        t.status, t.error = str(final["status"]), str(final.get("error") or "")
        t.params = dict(final.get("params") or {})
    elif err:
        t.status, t.error = "errored", f"{err.get('error', 'error')}: {err.get('message', '')}"
    elif storage.exists(join(run_uri, "done.json")):
        t.status = "finished"
    return t


def load_experiment(uri: str, storage: Storage | None = None) -> Experiment:
    """Every trial of the experiment at ``uri`` (a search, or a single run folder)."""
    storage = storage or Storage()
    problems: list[Problem] = []
    uri = uri.rstrip("/")
    space = _read_yaml(storage, join(uri, "space.yaml"), problems)
    best_json = _read_json(storage, join(uri, "best.json"), problems)
    tune = (space or {}).get("tune") or {}
    metric, mode = tune.get("metric", "fid"), tune.get("mode", "min")
    trials_uri = join(uri, TRIALS_DIR)
    ids = [n for n in storage.listdir(trials_uri) if not n.startswith(("_", "."))]
    if ids or space is not None:
        final = _final_states(storage, uri, problems)
        trials = [load_trial(storage, join(trials_uri, i), i, final.get(i), problems) for i in ids]
        for t in trials:
            t.params = t.params or _searched_params(space, t)
        if space is None:
            space = {}
    elif storage.exists(join(uri, "metrics.jsonl")) or storage.exists(join(uri, "config.yaml")):
        trials = [load_trial(storage, uri, posixpath.basename(uri), None, problems)]
    else:
        raise FileNotFoundError(
            f"{uri} holds no experiment: expected trials/ and space.yaml (a ganray.tune search) or "
            f"metrics.jsonl (a ganray.train run). Pass the folder that ganray.tune printed as 'experiment'."
        )
    return Experiment(uri, metric, mode, trials, space, best_json, problems)
