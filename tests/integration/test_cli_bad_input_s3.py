"""Hostile S3 input to the real CLIs against moto's server: no credentials is a one-line error naming
the fix (generate, pull, data prepare); generate streams an .npz to S3; prepare refuses a non-empty
S3 destination (issue 11 items 5, 14, 15; issue 10 item 14)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from ganray.storage import Storage


@pytest.fixture()
def s3_world(bucket, tmp_path):
    """A checkpoint and an experiment (best.json) in the bucket, written without training."""
    from ganray import checkpoint as ckpt
    from ganray.config import load_config
    from ganray.models import build_models
    from ganray.storage import join
    from ganray.tune.outcome import Outcome, TrialOutcome, write_outcome

    storage = Storage()
    exp = f"s3://{bucket}/exp"
    run = join(exp, "trials", "t1")
    cfg = load_config("quickstart", ["model.ngf=8", "model.ndf=8"])
    G, D = build_models(cfg.model)
    state = {"epoch": 1, "config": cfg.to_dict(), "G": G.state_dict(), "D": D.state_dict()}
    uri = ckpt.save_checkpoint(storage, run, state, {"fid": 10.0})
    write_outcome(
        Outcome(exp, "fid", "min", [TrialOutcome("t1", "done", {}, run, 1, 10.0, 1, uri, "", [])]), storage
    )
    return {"bucket": bucket, "ckpt": uri, "exp": exp}


def _no_credentials(cli, s3_endpoint, tmp_path) -> dict[str, str]:
    env = cli.env(AWS_ENDPOINT_URL=s3_endpoint)
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    # Nothing else may supply credentials: no files, no instance metadata probe (it would hang).
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@pytest.mark.parametrize(
    "module, args, code",
    [
        ("ganray.generate", ["--checkpoint", "{ckpt}", "--out", "{tmp}/g.png"], 1),
        ("ganray.pull", ["{exp}", "--dest", "{tmp}/d"], 1),
        (
            "ganray.data",
            ["prepare", "fashion-mnist", "s3://{bucket}/ds", "--resolution", "32", "--limit", "10"],
            2,
        ),
    ],
    ids=["generate", "pull", "prepare"],
)
def test_s3_without_credentials_is_a_one_line_error(cli, s3_world, s3_endpoint, tmp_path, module, args, code):
    argv = [a.format(tmp=tmp_path, **s3_world) for a in args]
    proc = cli.run(module, *argv, timeout=300, env=_no_credentials(cli, s3_endpoint, tmp_path))
    assert proc.returncode == code, cli.show(proc)
    assert "Traceback" not in proc.stderr, cli.show(proc)
    assert "no AWS credentials were found" in proc.stderr and "AWS_ACCESS_KEY_ID" in proc.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "g.png").exists()


def test_generate_streams_an_npz_to_s3_and_prepare_refuses_a_non_empty_s3_dest(cli, s3_world, s3_endpoint):
    out = f"s3://{s3_world['bucket']}/fakes.npz"
    proc = cli.run("ganray.generate", "--checkpoint", s3_world["ckpt"], "--seeds", "0-9", "--batch", "3",
                   "--out", out, env=cli.env(AWS_ENDPOINT_URL=s3_endpoint), timeout=300)  # fmt: skip
    assert proc.returncode == 0, cli.show(proc)
    arr = np.load(io.BytesIO(Storage().read_bytes(out)))["arr_0"]
    assert arr.shape == (10, 32, 32, 1) and arr.dtype == np.uint8
    dest = f"s3://{s3_world['bucket']}/exp"  # holds best.json and trials/: not a dataset
    proc = cli.run("ganray.data", "prepare", "fashion-mnist", dest, "--resolution", "32", "--limit", "10",
                   env=cli.env(AWS_ENDPOINT_URL=s3_endpoint), timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "is not empty" in proc.stderr, cli.show(proc)
    assert "manifest.json" not in Storage().listdir(dest)
