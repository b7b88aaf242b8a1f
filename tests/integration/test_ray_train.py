"""Ray Train trials on a real local Ray cluster (CPU, gloo): DDP, rank-0 artifacts, fault tolerance."""

import json
import os
import signal
import threading
import time

import pytest
import ray
import torch

from ganray import checkpoint as ckpt
from ganray.config import load_config
from ganray.storage import Storage, join
from ganray.train import artifacts
from ganray.train.loop import Trainer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_ray():
    from ganray.train.ray_trial import start_local_ray

    start_local_ray(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


def test_local_ray_processes_get_ganrays_train_settings(local_ray):
    """Ray's processes (a Train controller among them) read these at start-up, from their environment."""
    from ganray.train.ray_trial import LOCAL_RAY_ENV

    @ray.remote(num_cpus=0)
    def env(keys):
        return {k: os.environ.get(k) for k in keys}

    seen = ray.get(env.remote(list(LOCAL_RAY_ENV)))
    assert seen == {k: os.environ[k] for k in LOCAL_RAY_ENV}  # the defaults, or the user's own values


def test_state_api_inside_ray_finds_its_own_cluster_beside_a_second_one(local_ray, tmp_path):
    """Ray Train frees the CPUs of a trial that Tune stopped early (ASHA) from inside Ray,
    through the State API; with a second Ray on the machine its auto-detection failed
    ("Found multiple active Ray instances") and the next trial waited for ever."""
    from conftest import Cli, ray_head_cluster
    from ray.util.state import get_actor

    @ray.remote(num_cpus=0)
    class Probe:
        def ping(self) -> int:
            return 1

    @ray.remote(num_cpus=0)
    def state_of(actor_id: str) -> str | None:
        found = get_actor(actor_id, timeout=30)
        return found.state if found else None

    with ray_head_cluster(Cli.env(), tmp_path):
        probe = Probe.remote()
        ray.get(probe.ping.remote())
        actor_id = probe._actor_id.hex()
        assert ray.get(state_of.remote(actor_id)) == "ALIVE"
        ray.kill(probe)
        deadline = time.time() + 60
        while (state := ray.get(state_of.remote(actor_id))) != "DEAD" and time.time() < deadline:
            time.sleep(1)
        assert state == "DEAD"


def cfg_for(root, *extra, preset="quickstart"):
    return load_config(
        preset,
        [
            f"storage.uri={root}",
            "storage.run_name=trial",
            "data.subset=1200",
            "model.ngf=8",
            "model.ndf=8",
            "train.batch_size=32",
            "train.grid_size=16",
            "metrics.fid=false",
            "train.ema_decay=0",
            *extra,
        ],
    )


# Each case: preset, overrides, images seen after 2 epochs of 3 steps, (resolution, alpha) per epoch.
DDP_CASES = {
    # No batch statistics (BatchNorm's are per worker).
    "dcgan": ("quickstart", ["model.spectral_norm=true", "model.batchnorm_g=false"], 192, None),
    # Grows 4 -> 8 px with a batch per resolution: steps at images 0 (4 px, batch 32), 32, 48 | 64,
    # 80, 96 (8 px, batch 16; the fade is [32, 96)). Epoch 1 ends mid-fade (its resume: alpha 1/2).
    "progan-growing": (
        "quickstart",
        [
            "model.arch=progan",
            "model.latent_dim=16",
            "model.progan.network_capacity=2",
            "model.progan.fmap_max=16",
            "train.progressive.enabled=true",
            "train.progressive.stable_kimg=0.032",
            "train.progressive.fade_kimg=0.064",
            "train.progressive.batch_sizes=4:32,8:16",
            "train.loss=wgan-gp",
        ],
        112,
        [(8.0, 0.25), (8.0, 1.0)],
    ),
    # Issue 12: the preset's R1, path length and style mixing (0.9), with R1 every 2nd step and path
    # length every 3rd; DiffAugment (all ops) at p 0.5 whose ADA moves p every 4 steps; G_ema.
    "stylegan2-phases": (
        "stylegan2-quickstart",
        [
            "model.latent_dim=16",
            "model.stylegan2.network_capacity=2",
            "model.stylegan2.fmap_max=16",
            "model.stylegan2.w_dim=16",
            "train.reg.r1_interval=2",
            "train.reg.pl_interval=3",
            "train.augment.policy=color,translation,cutout",
            "train.augment.p=0.5",
            "train.augment.ada_kimg=1",
        ],
        192,
        None,
    ),
}


@pytest.mark.parametrize("case", list(DDP_CASES))
def test_two_workers_match_one_and_write_artifacts_once(local_ray, tmp_path, case):
    """2 DDP workers with global batch B == 1 in-process worker with batch B, for each family."""
    from ganray.train.ray_trial import run_trial

    preset, extra, images, stages = DDP_CASES[case]
    extra = [*extra, "train.max_steps_per_epoch=3", "train.epochs=2"]
    ray_cfg = cfg_for(tmp_path / "ray", "train.workers=2", *extra, preset=preset)
    metrics = run_trial(ray_cfg)
    assert metrics["epoch"] == 2 and metrics["checkpoint_uri"].endswith("epoch_0002.pt")

    local = Trainer(cfg_for(tmp_path / "local", *extra, preset=preset))
    local.fit()

    s, run = Storage(), join(str(tmp_path / "ray"), "trial")
    remote = ckpt.load_latest(s, run)
    for key in ("G", "D", "G_ema") if "G_ema" in remote else ("G", "D"):
        ref = local.state_dict()[key]
        for name, t in remote[key].items():
            if name.endswith("w_avg"):  # DDP broadcasts rank 0's buffers: it tracks rank 0's half batch
                continue
            torch.testing.assert_close(t, ref[name], rtol=1e-4, atol=1e-5, msg=f"{key}.{name}")
    for name, value in local.state_dict()["extra"].items():  # images, pl_mean, aug_p, alpha, ...
        if isinstance(value, float):
            assert remote["extra"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    # Rank 0 alone wrote: one row per epoch, one grid per epoch (+ epoch 0), one checkpoint per epoch.
    rows = artifacts.read_metrics(s, run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert s.listdir(join(run, "samples")) == ["epoch_0000.png", "epoch_0001.png", "epoch_0002.png"]
    assert [c.epoch for c in ckpt.list_checkpoints(s, run)] == [1, 2]
    assert remote["images_seen"] == local.images_seen == images
    if stages:
        assert [(r["resolution"], r["alpha"]) for r in rows] == stages
    # Same output format as the in-process run: same files, same metric columns.
    assert s.listdir(run) == s.listdir(join(str(tmp_path / "local"), "trial"))
    assert rows[-1].keys() == local.history[-1].keys()


def _descends_from_this_process(pid: int) -> bool:
    """True if ``pid`` is a descendant of this process (its local Ray's raylet forks the workers)."""
    me = os.getpid()
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])  # field 4: the parent's pid
        except (OSError, ValueError, IndexError):
            return False
        if pid == me:
            return True
    return False


def _kill_one_worker() -> int:
    """SIGKILL one Ray Train worker process of this test's Ray, found by its process title
    (Linux /proc); workers of other Ray clusters on the same machine are left alone."""
    for pid in sorted(int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                title = fh.read()
        except OSError:
            continue
        if title.startswith(b"ray::RayTrainWorker") and _descends_from_this_process(pid):
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError("no live RayTrainWorker process to kill")


def test_killed_worker_resumes_from_checkpoint_without_gaps(local_ray, tmp_path):
    from ganray.train.ray_trial import run_trial

    # ~35 steps per epoch on 2 workers: several seconds per epoch, so the kill lands mid-run.
    cfg = cfg_for(tmp_path, "train.workers=2", "train.epochs=4", "train.max_failures=2", "model.ngf=32")
    run, s = join(str(tmp_path), "trial"), Storage()
    killed = {}

    def killer():
        deadline = time.time() + 300
        while time.time() < deadline and not ckpt.list_checkpoints(s, run):
            time.sleep(0.1)
        killed["pid"] = _kill_one_worker()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    metrics = run_trial(cfg)
    t.join(timeout=5)
    assert "pid" in killed, "the worker was never killed"
    assert metrics["epoch"] == 4
    rows = artifacts.read_metrics(s, run)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # gap-free, none counted twice
    steps = rows[0]["steps"]
    assert [r["images_seen"] for r in rows] == [steps * 32 * e for e in (1, 2, 3, 4)]
    resumed_at = json.loads(s.read_text(join(run, "done.json")))["resumed_at"]
    assert resumed_at and resumed_at[0] >= 1  # restarted from a checkpoint, not from scratch
