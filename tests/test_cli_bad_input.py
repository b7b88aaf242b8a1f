"""Hostile input to the real CLIs (subprocesses): a one-line error naming the fix, the documented
exit status, no traceback, and nothing written where it should not be (issue 11, items 1, 2, 5, 6,
12-15). Nothing here trains: checkpoints and experiments are written by the real checkpoint code.
S3 cases are in tests/integration/test_cli_bad_input_s3.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SPACE = "base: quickstart\nsearch:\n  optim.lr: {type: loguniform, low: 1.0e-5, high: 1.0e-2}\n"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A checkpoint, an experiment with best.json and a prepared dataset, made without training."""
    from ganray import checkpoint as ckpt
    from ganray.config import load_config
    from ganray.data.cli import prepare
    from ganray.models import build_models
    from ganray.storage import Storage, join
    from ganray.tune.outcome import Outcome, TrialOutcome, write_outcome

    root = tmp_path_factory.mktemp("world")
    exp = str(root / "exp")
    run = join(exp, "trials", "t1")
    cfg = load_config("quickstart", ["model.ngf=8", "model.ndf=8"])
    G, D = build_models(cfg.model)
    state = {"epoch": 1, "config": cfg.to_dict(), "G": G.state_dict(), "D": D.state_dict()}
    uri = ckpt.save_checkpoint(Storage(), run, state, {"fid": 10.0})
    write_outcome(
        Outcome(exp, "fid", "min", [TrialOutcome("t1", "done", {}, run, 1, 10.0, 1, uri, "", [])]), Storage()
    )
    prepare("fashion-mnist", str(root / "ds"), 32, limit=20, log=lambda m: None)
    (root / "corrupt.pt").write_bytes(Path(uri).read_bytes()[:2000])
    (root / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (root / "dup.yaml").write_text(SPACE + "  optim.lr: {type: loguniform, low: 1.0e-4, high: 1.0e-3}\n")
    (root / "never.yaml").write_text(
        SPACE + "  optim.beta1: {type: uniform, low: 0.1, high: 0.9, when: {model.arch: [dcgan-demod]}}\n"
    )
    (root / "space.yaml").write_text(SPACE)
    (root / "alias.yaml").write_text("train: &t {epochs: 2}\noptim: *t\n")
    (root / "file").write_text("x")
    torch.save({"not": "ganray"}, root / "foreign.pt")
    return {"root": root, "ckpt": uri, "exp": exp}


# (name, argv with {root}/{ckpt}/{exp} placeholders, exit status, fragment of the one-line error,
#  paths below the work dir that must not exist afterwards)
CASES = [
    ("storage one slash", ["train", "--storage", "s3:/x"], 2, "did you mean 's3://x'", ["s3:"]),
    ("storage no bucket", ["train", "--storage", "s3://"], 2, "names no bucket", ["s3:"]),
    ("storage gs", ["train", "--storage", "gs://b/runs"], 2, "gs:// filesystem is not installed", ["gs:"]),
    ("storage memory", ["train", "--storage", "memory://"], 2, "memory:// lives inside one process", ["memory:"]),
    ("run name escape", ["train", "--storage", "runs", "--run-name", "../../escape"], 1,
     "is not a single folder name", ["runs", "../../escape", "../escape"]),
    ("lr nan", ["train", "--set", "optim.lr=nan"], 1, "optim.lr: nan is not a finite number", []),
    ("val_fraction nan", ["train", "--set", "data.val_fraction=.nan"], 1, "is not a finite number", []),
    ("ema nan", ["train", "--set", "train.ema_decay=nan"], 1, "train.ema_decay: nan is not a finite", []),
    ("seed 2**64", ["train", "--set", f"train.seed={2**64}"], 1, "does not fit in 64 bits", []),
    ("workers 0", ["train", "--workers", "0"], 2, "omit --workers to train in-process", []),
    ("config is a folder", ["train", "--config", "{root}"], 1, "is a folder, not a YAML file", []),
    ("config is binary", ["train", "--config", "{root}/binary.yaml"], 1, "is not a text file", []),
    ("tune storage typo", ["tune", "--space", "{root}/space.yaml", "--storage", "s3:/b"], 2,
     "did you mean 's3://b'", ["s3:"]),
    ("tune name escape", ["tune", "--space", "{root}/space.yaml", "--storage", "runs", "--name", "../up"], 2,
     "experiment name (--name) '../up' is not a single folder name", ["runs", "../up"]),
    ("tune resume nothing", ["tune", "--space", "{root}/space.yaml", "--storage", "runs", "--resume"], 2,
     "no experiment to resume", ["runs"]),
    ("space duplicate key", ["tune", "--space", "{root}/dup.yaml", "--storage", "runs"], 2,
     "found duplicate key 'optim.lr'", ["runs"]),
    ("space when never holds", ["tune", "--space", "{root}/never.yaml", "--storage", "runs"], 2,
     "search.optim.beta1.when: never holds: model.arch is 'dcgan'", ["runs"]),
    ("prepare non-empty", ["data", "prepare", "fashion-mnist", "{root}/ds", "--resolution", "32"], 2,
     "is not empty", []),
    ("prepare limit -5", ["data", "prepare", "fashion-mnist", "ds2", "--resolution", "32", "--limit", "-5"], 2,
     "must be at least 0, got -5", ["ds2"]),
    ("prepare resolution 33", ["data", "prepare", "fashion-mnist", "ds2", "--resolution", "33"], 2,
     "use a power of two", ["ds2"]),
    ("prepare memory", ["data", "prepare", "fashion-mnist", "memory://ds", "--resolution", "32"], 2,
     "memory:// lives inside one process", ["memory:"]),
    ("generate memory", ["generate", "--checkpoint", "{ckpt}", "--out", "memory://g.png"], 2,
     "memory:// lives inside one process", ["memory:"]),
    ("generate huge grid", ["generate", "--checkpoint", "{ckpt}", "--n", "100000", "--out", "g.png"], 1,
     "a grid holds at most 1024 images", ["g.png"]),
    ("generate n unbounded", ["generate", "--checkpoint", "{ckpt}", "--n", "100000000", "--out", "g.npz"], 2,
     "must be between 1 and 10000000", ["g.npz"]),
    ("generate into a non-empty folder", ["generate", "--checkpoint", "{ckpt}", "--out", "{root}"], 1,
     "already holds files", []),
    ("generate unknown format", ["generate", "--checkpoint", "{ckpt}", "--out", "g.gif"], 1,
     "cannot tell what to write", ["g.gif"]),
    ("generate foreign checkpoint", ["generate", "--checkpoint", "{root}/foreign.pt", "--out", "g.png"], 1,
     "foreign.pt", ["g.png"]),
    ("pull dest is a file", ["pull", "{exp}", "--dest", "{root}/file"], 1, "is a file", []),
    ("pull corrupt best.json", ["pull", "{root}", "--dest", "d"], 1, "best.json does not exist", ["d"]),
    ("metrics corrupt checkpoint", ["metrics", "fid", "--checkpoint", "{root}/corrupt.pt"], 2,
     "cannot be read", []),
    ("metrics foreign checkpoint", ["metrics", "fid", "--checkpoint", "{root}/foreign.pt"], 2, "foreign.pt", []),
    ("metrics tpu", ["metrics", "fid", "--checkpoint", "{ckpt}", "--device", "tpu"], 2,
     "'tpu' is not a device ganray runs on", []),
    # Found by probing further (not in the issue):
    ("storage empty", ["train", "--storage", ""], 2, "storage URI '' is empty", []),
    ("yaml alias", ["train", "--config", "{root}/alias.yaml"], 1, "aliases (*t) are not allowed", []),
    ("space is a folder", ["tune", "--space", "{root}", "--storage", "runs"], 2, "is a folder", ["runs"]),
    ("pull trial escape", ["pull", "{exp}", "--trial", "../../t1", "--dest", "d"], 1,
     "--trial '../../t1' is not a single folder name", ["d"]),
    ("generate unwritable", ["generate", "--checkpoint", "{ckpt}", "--out", "/proc/g.png"], 1,
     "No such file or directory: '/proc/g.png'", []),
    ("too few images for a batch", ["train", "--storage", "runs", "--set", "data.subset=1"], 1,
     "1 training images give no full batch of 128", ["runs"]),
    ("endpoint not a url", ["generate", "--checkpoint", "s3://b/c.pt", "--endpoint-url", "::::"], 1,
     "is not a URL; write http(s)://HOST[:PORT]", []),
    ("metrics num_samples unbounded", ["metrics", "fid", "--checkpoint", "{ckpt}", "--num-samples", "1000000000"], 2,
     "metrics.num_samples: 1000000000 is out of range", []),
    ("metrics cache typo", ["metrics", "fid", "--checkpoint", "{ckpt}", "--cache", "s3:/c"], 2,
     "did you mean 's3://c'", ["s3:"]),
]  # fmt: skip
if not torch.cuda.is_available():
    CASES.append(
        (
            "metrics cuda without gpu",
            ["metrics", "fid", "--checkpoint", "{ckpt}", "--device", "cuda"],
            2,
            "no CUDA GPU is visible on this machine; use --device cpu",
            [],
        )  # fmt: skip
    )


def run_cli(argv: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m ganray.<argv[0]> argv[1:]`` with this checkout first on the path, no AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", f"ganray.{argv[0]}", *argv[1:]]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name, argv, code, fragment, absent", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_one_line_error(world, tmp_path, name, argv, code, fragment, absent):
    work = tmp_path / "a" / "b" / "work"
    work.mkdir(parents=True)
    argv = [a.format(root=world["root"], ckpt=world["ckpt"], exp=world["exp"]) for a in argv]
    done = run_cli(argv, work)
    err = done.stderr
    assert done.returncode == code, err
    assert "Traceback" not in err and fragment in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert "error" in last, err  # the error is the last line, not buried in a log
    for path in absent:
        assert not (work / path).exists(), f"{name}: {path} was created"
    assert not any(work.iterdir()), f"{name}: wrote {sorted(p.name for p in work.iterdir())}"


def test_generate_jpg_writes_real_jpeg(world, tmp_path):
    done = run_cli(["generate", "--checkpoint", world["ckpt"], "--n", "4", "--out", "g.jpg"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG SOI marker, not PNG bytes


def test_pull_a_moved_experiment_from_its_new_place(world, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(world["exp"], moved)
    shutil.move(str(moved), tmp_path / "moved2")
    done = run_cli(["pull", str(tmp_path / "moved2"), "--dest", "d"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "d" / "epoch_0001.pt").read_bytes() == Path(world["ckpt"]).read_bytes()
