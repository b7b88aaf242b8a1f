"""ganray.pull: best.json locations are relative to the experiment; bad best.json / --dest are clear errors."""

from __future__ import annotations

import json
import shutil

import pytest

from ganray import checkpoint as ckpt
from ganray.config import load_config
from ganray.pull import main, pull
from ganray.storage import Storage, join
from ganray.tune.outcome import Outcome, TrialOutcome, write_outcome


def _experiment(root) -> str:
    """An experiment folder with one trial (t1, epoch 1, fid 12.5) and its best.json, no training."""
    from ganray.models import build_models

    exp = str(root)
    run = join(exp, "trials", "t1")
    cfg = load_config("quickstart", ["model.ngf=8", "model.ndf=8"])
    G, D = build_models(cfg.model)
    state = {"epoch": 1, "config": cfg.to_dict(), "G": G.state_dict(), "D": D.state_dict()}
    uri = ckpt.save_checkpoint(Storage(), run, state, {"fid": 12.5})
    trial = TrialOutcome("t1", "done", {}, run, 1, 12.5, 1, uri, "", [{"epoch": 1, "fid": 12.5}])
    write_outcome(Outcome(exp, "fid", "min", [trial]), Storage())
    return exp


@pytest.fixture()
def experiment(tmp_path):
    return _experiment(tmp_path / "exp")


def test_best_json_stores_locations_relative_to_the_experiment(experiment):
    best = json.loads(Storage().read_text(join(experiment, "best.json")))
    assert best["run"] == "trials/t1" and best["checkpoint"] == "trials/t1/checkpoints/epoch_0001.pt"


def test_a_moved_experiment_pulls_from_its_new_place(experiment, tmp_path):
    moved = tmp_path / "moved"
    shutil.move(experiment, moved)
    local = pull(str(moved), str(tmp_path / "d"))
    meta = json.loads((tmp_path / "d" / "pull.json").read_text())
    assert local.endswith("epoch_0001.pt") and meta["checkpoint_uri"].startswith(str(moved))


def test_a_copied_experiment_pulls_from_the_copy_not_the_original(experiment, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(experiment, copy)
    shutil.rmtree(join(experiment, "trials"))  # the original's checkpoints are gone
    pull(str(copy), str(tmp_path / "d"))
    assert (tmp_path / "d" / "epoch_0001.pt").read_bytes() == (
        copy / "trials/t1/checkpoints/epoch_0001.pt"
    ).read_bytes()
    assert json.loads((tmp_path / "d" / "pull.json").read_text())["checkpoint_uri"].startswith(str(copy))


def test_an_old_absolute_best_json_is_resolved_against_the_experiment_given(experiment, tmp_path):
    path = join(experiment, "best.json")
    best = json.loads(Storage().read_text(path))
    del best["run"], best["checkpoint"]
    Storage().write_text(path, json.dumps(best))
    moved = tmp_path / "moved"
    shutil.move(experiment, moved)
    assert pull(str(moved), str(tmp_path / "d")).endswith("epoch_0001.pt")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "is corrupt (not JSON"),
        ("[1, 2]", "is corrupt (needs trial_id, epoch and run)"),
        ('{"trial_id": "t1", "epoch": "x", "run": "trials/t1", "checkpoint": "c"}', "is corrupt (needs"),
        ('{"trial_id": "t1", "epoch": 1, "run": "../../etc", "checkpoint": "c"}', "is not a folder below"),
    ],
)
def test_a_corrupt_best_json_is_a_one_line_error(experiment, tmp_path, capsys, content, fragment):
    Storage().write_text(join(experiment, "best.json"), content)
    assert main([experiment, "--dest", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_dest_must_be_a_local_folder(experiment, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for dest, fragment in ((blocker, "is a file"), (blocker / "sub", "is below the file"),
                           ("s3://bucket/d", "pull downloads to a local folder")):  # fmt: skip
        assert main([experiment, "--dest", str(dest)]) == 1
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("experiment_arg", ["s3:/bucket/exp", "memory://exp", "s3://"])
def test_unusable_experiment_uris_are_usage_errors(experiment_arg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([experiment_arg, "--dest", str(tmp_path / "d")])
    assert e.value.code == 2 and "storage URI" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
