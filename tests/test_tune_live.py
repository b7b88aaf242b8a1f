"""ganray.tune.live: the Tune callbacks a search gets, and MLflow stores checked before any trial."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from ray.tune.logger import TBXLoggerCallback

from ganray.tune.driver import SearchError
from ganray.tune.live import GridMLflowCallback, callbacks, mlflow_tracking_uri


def _opts(mlflow_uri: str = "") -> SimpleNamespace:
    return SimpleNamespace(mlflow_uri=mlflow_uri, endpoint_url="", region="")


def test_tensorboard_always_mlflow_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    (tb,) = callbacks(str(tmp_path / "exp"), "exp", _opts())
    assert isinstance(tb, TBXLoggerCallback)
    tb, ml = callbacks(str(tmp_path / "exp"), "exp", _opts(str(tmp_path / "mlruns")))
    assert isinstance(ml, GridMLflowCallback) and ml.tracking_uri == f"file:{tmp_path / 'mlruns'}"
    assert ml.experiment_name == "exp" and ml.trials_uri == str(tmp_path / "exp" / "trials")
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"  # MLflow 3 refuses file stores otherwise


def test_tracking_uris_are_kept_or_made_local():
    assert mlflow_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mlflow_tracking_uri("file:/x/mlruns") == "file:/x/mlruns"
    assert mlflow_tracking_uri("mlruns") == "file:" + os.path.abspath("mlruns")


def test_an_unusable_mlflow_store_fails_before_the_search(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(SearchError, match="--mlflow-uri .*cannot use this MLflow store"):
        callbacks(str(tmp_path / "exp"), "exp", _opts(f"file:{blocker}/mlruns"))
