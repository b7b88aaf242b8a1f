"""The RayJob in k8s/, run for real: its entrypoint and runtime env, read from the
`kubectl kustomize k8s/` output, go through `ray job submit` (token auth) to a local
`ray start --head`, with data and storage on moto's S3 as the Pods see them.

What differs from a KubeRay cluster, and why it is faithful:
  - the image's repository (/home/ray/ganray) is this checkout, and the Ray head was
    started with it on PYTHONPATH, as the image has ganray installed;
  - the head's environment is the Pod's: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (KubeRay
    sets both from the token Secret), AWS_* as from the ganray-s3 Secret; the job CLI
    gets the same token, as KubeRay's submitter does;
  - the bucket in --storage and data.uri is the test's bucket, and a tiny override
    (1 trial, 2 epochs of 1.2k images, FID on 500 samples) is appended.
Afterwards `python -m ganray.pull` fetches the best checkpoint, as k8s/README.md says,
and the secret key appears in no log line and no result file.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from conftest import ray_head_cluster, submit_job

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "k8s"))
import check_manifests  # noqa: E402
from ganray_rules import IMAGE_REPO_DIR  # noqa: E402

pytestmark = pytest.mark.integration

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SECRET_KEY = f"ganray-test-secret-{uuid.uuid4().hex}"  # must never reach a log or a result file
TINY = [  # appended: argparse and --set keep the last value
    "--num-samples", "1", "--max-concurrent", "1",
    "--set", "train.epochs=2", "--set", "data.subset=1200", "--set", "metrics.num_samples=500",
    "--set", "train.grid_size=16",
]  # fmt: skip


@pytest.fixture()
def pod_head(cli, s3_endpoint, tmp_path):
    """A token-auth Ray head whose environment is a KubeRay Pod's; yields (URL, that environment)."""
    env = cli.env(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        AWS_ENDPOINT_URL=s3_endpoint,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
    )
    with ray_head_cluster(env, tmp_path) as (url, _):
        yield url, env


def _rendered_rayjob() -> dict:
    (job,) = [o for o in check_manifests.render(REPO / "k8s") if o["kind"] == "RayJob"]
    return job["spec"]


def _local_argv(entrypoint: str, bucket: str) -> list[str]:
    """The manifest's entrypoint with the image's repo mapped to this checkout and the test's bucket."""
    argv = shlex.split(entrypoint)
    space = argv.index("--space") + 1
    assert argv[space].startswith(IMAGE_REPO_DIR + "/"), argv[space]
    argv[space] = str(REPO / argv[space][len(IMAGE_REPO_DIR) + 1 :])
    storage = argv.index("--storage") + 1
    argv[storage] = f"s3://{bucket}/searches"
    (data,) = [i for i, a in enumerate(argv) if a.startswith("data.uri=")]
    argv[data] = f"data.uri=s3://{bucket}/data/fashion-mnist"
    return argv + TINY


def _upload_fashion_mnist(bucket: str, endpoint: str) -> None:
    files = sorted(FMNIST.glob("*-ubyte.gz"))
    assert len(files) == 4, f"Fashion-MNIST's 4 IDX files are not in {FMNIST}: `make data` installs them"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for f in files:
        s3.upload_file(str(f), bucket, f"data/fashion-mnist/{f.name}")


def test_the_rayjob_entrypoint_runs_against_a_token_auth_head_and_its_best_checkpoint_pulls(
    pod_head, cli, bucket, s3_endpoint, tmp_path
):
    spec = _rendered_rayjob()
    argv = _local_argv(spec["entrypoint"], bucket)
    runtime_env = yaml.safe_load(spec["runtimeEnvYAML"])
    _upload_fashion_mnist(bucket, s3_endpoint)

    url, env = pod_head
    no_token = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run(
        ["ray", "job", "list", "--address", url], env=no_token, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0 and "token" in refused.stderr.lower(), cli.show(refused)  # auth is on
    cmd = ["ray", "job", "submit", "--address", url, "--runtime-env-json", json.dumps(runtime_env), "--"]
    proc = submit_job(cmd + argv, cwd=tmp_path, env=env)  # not the repo: the job must not need a working dir
    assert proc.returncode == 0 and "succeeded" in proc.stdout, cli.show(proc)
    assert "best: trial" in proc.stdout, cli.show(proc)

    experiment = f"s3://{bucket}/searches/dcgan"  # the space file's name
    pulled = cli.run("ganray.pull", experiment, "--dest", str(tmp_path / "best"), env=env)
    assert pulled.returncode == 0, cli.show(pulled)
    assert list((tmp_path / "best").glob("*.pt")), list((tmp_path / "best").iterdir())

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="searches/")["Contents"]]
    for key in [k for k in keys if k.endswith((".json", ".yaml", ".jsonl", ".parquet"))]:
        assert SECRET_KEY.encode() not in s3.get_object(Bucket=bucket, Key=key)["Body"].read(), key
    assert SECRET_KEY not in proc.stdout + proc.stderr + pulled.stdout + pulled.stderr
