"""One FID backbone per search: resolved once by the driver, in every trial's config, on record.

No Ray here: the driver's pinning, the trial configs it hands out and the
outcome files are plain functions over a real space file and real storage.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ganray.metrics.backbones import BackboneError
from ganray.storage import Storage, join
from ganray.tune.backbone import BACKBONE_FILE, pin_search_backbone, read_pinned
from ganray.tune.driver import SearchError, TrialContext, _pinned_backbone
from ganray.tune.outcome import Outcome, TrialOutcome, best_record, results_rows
from ganray.tune.space import load_space

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_inception_weights(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub-cache"))


def context(tmp_path, *overrides: str) -> TrialContext:  # noqa: ANN001
    space = load_space(str(ROOT / "tune_spaces" / "quickstart.yaml"), list(overrides))
    return TrialContext(space, str(tmp_path / "exp"))


def test_the_driver_pins_auto_and_every_trial_config_carries_it(tmp_path) -> None:  # noqa: ANN001
    ctx = context(tmp_path)
    assert ctx.trial_config({}, "t0").metrics.backbone == "auto"
    name = _pinned_backbone(ctx, Storage(), resuming=False)
    record = json.loads(Storage().read_text(join(ctx.experiment_uri, BACKBONE_FILE)))
    assert name == f"fashion-mnist-classifier@{record['fid_backbone_weights']}"  # network and weights
    pinned = dataclasses.replace(ctx, backbone=name)
    for i, params in enumerate([{"optim.lr": 1e-3}, {"optim.lr": 2e-3, "model.ngf": 48}]):
        assert pinned.trial_config(params, f"t{i}").metrics.backbone == name
    assert record["metrics.backbone"] == name and record["fid_backbone"] == "fashion-mnist-classifier"
    assert record["fid_backbone_is_inception"] is False
    assert record["fid_label"] == "FID [fashion-mnist-classifier]"
    assert len(record["fid_backbone_weights"]) == 12


def test_a_resumed_search_keeps_its_backbone_and_refuses_other_weights(tmp_path) -> None:  # noqa: ANN001
    ctx = context(tmp_path)
    first = pin_search_backbone(ctx, Storage(), resuming=False)
    assert pin_search_backbone(ctx, Storage(), resuming=True) == first
    uri = join(ctx.experiment_uri, BACKBONE_FILE)
    Storage().write_text(
        uri, json.dumps({**first, "metrics.backbone": "fashion-mnist-classifier@0123456789ab"})
    )
    with pytest.raises(BackboneError, match="pins fashion-mnist-classifier weights 0123456789ab, but"):
        pin_search_backbone(ctx, Storage(), resuming=True)
    # A record from before names carried the hash: the recorded weights still must match.
    Storage().write_text(uri, json.dumps({**first, "metrics.backbone": "fashion-mnist-classifier"}))
    assert pin_search_backbone(ctx, Storage(), resuming=True) == first


def test_a_backbone_the_driver_cannot_load_stops_the_search_before_any_trial(tmp_path) -> None:  # noqa: ANN001
    ctx = context(tmp_path, f"metrics.backbone={tmp_path / 'nowhere.pt'}")
    with pytest.raises(SearchError, match="FID backbone: .*nowhere.pt"):
        _pinned_backbone(ctx, Storage(), resuming=False)


def test_best_json_and_results_record_the_searchs_backbone(tmp_path) -> None:  # noqa: ANN001
    ctx = context(tmp_path)
    pin_search_backbone(ctx, Storage(), resuming=False)
    history = [
        {"epoch": 1, "fid": 40.0, "fid_backbone": "fashion-mnist-classifier"},
        {"epoch": 2, "fid": 30.0, "fid_backbone": "fashion-mnist-classifier"},
    ]
    trials = [
        TrialOutcome(
            "a", "finished", {"optim.lr": 1e-3}, join(ctx.trials_uri, "a"), 2, 30.0, 2, history=history
        ),
        TrialOutcome("b", "errored", {"optim.lr": 2e-3}, join(ctx.trials_uri, "b"), error="NaN"),
    ]
    outcome = Outcome(ctx.experiment_uri, "fid", "min", trials, read_pinned(Storage(), ctx.experiment_uri))
    best = best_record(outcome, Storage())
    assert best["trial_id"] == "a" and best["fid_backbone"] == "fashion-mnist-classifier"
    assert best["fid_label"] == "FID [fashion-mnist-classifier]"
    rows = results_rows(outcome)
    assert [r["fid_backbone"] for r in rows] == ["fashion-mnist-classifier"] * 3  # unevaluated trial too
    assert {r["metrics.backbone"].split("@")[0] for r in rows} == {"fashion-mnist-classifier"}
