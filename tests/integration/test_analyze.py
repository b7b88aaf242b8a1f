"""``python -m ganray.analyze`` on a real tiny search made here, plus the live views of that search.

One session-wide experiment (2 trials on local Ray, ~2 min): trial A is a
dcgan-adain (mapping network) run that finishes; trial B is a plain DCGAN with
SGD at lr 1.0 and a 10x D rate that diverges to NaN in its 2nd epoch and ends
errored. The search logs to a local MLflow file store, and the report is also
built once while the search is still running.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from ganray.storage import Storage, join
from ganray.train import artifacts, tensorboard

sys.path.insert(0, str(Path(__file__).parent))
from chromium import find_chromium, inspect_page  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
GOOD = {"model.arch": "dcgan-adain", "optim.name": "adam", "optim.lr": 2e-4, "optim.d_lr_ratio": 1.0}
DIVERGES = {"model.arch": "dcgan", "optim.name": "sgd", "optim.lr": 1.0, "optim.d_lr_ratio": 10.0}
EPOCHS = 3

PAGE_CHECK = """(async () => {
  const imgs = Array.from(document.images); const bad = [];
  for (const im of imgs) {
    try { await im.decode(); } catch (e) { bad.push(im.getAttribute('src')); continue; }
    if (!(im.naturalWidth > 0 && im.naturalHeight > 0)) bad.push(im.getAttribute('src'));
  }
  const t = (id) => (document.getElementById(id) || {}).textContent;
  return {n: imgs.length, bad, best: t('best-trial'), fid: t('best-fid'), text: document.body.innerText,
          captions: Array.from(document.querySelectorAll('figcaption')).map(c => c.textContent)};
})()"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_ADDRESS"))}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", MLFLOW_ALLOW_FILE_STORE="true")
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    return env


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _show(p: subprocess.CompletedProcess) -> str:
    return f"exit {p.returncode}\n--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-6000:]}"


def _space(path: Path) -> str:
    space = {
        "base": "quickstart",
        "fixed": {
            "data.subset": 800,
            "train.epochs": EPOCHS,
            "train.batch_size": 64,
            "train.grid_size": 16,
            "train.workers": 1,
            "train.cpus_per_worker": 1,
            "model.ngf": 16,
            "model.ndf": 16,
            "metrics.num_samples": 200,
            "metrics.eval_every": 1,
        },
        "search": {
            "model.arch": {"type": "choice", "values": ["dcgan-adain", "dcgan"]},
            "optim.name": {"type": "choice", "values": ["adam", "sgd"]},
            "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1.0},
            "optim.d_lr_ratio": {"type": "loguniform", "low": 0.5, "high": 10.0},
        },
        "points_to_evaluate": [GOOD, DIVERGES],
        "tune": {"num_samples": 2, "searcher": {"type": "optuna", "sampler": "tpe", "seed": 0}},
    }
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return str(path)


@pytest.fixture(scope="session")
def experiment(tmp_path_factory):
    """The tiny search, its MLflow store, and a report built while it was still running."""
    root = tmp_path_factory.mktemp("analyze")
    mlruns = root / "mlruns"
    args = ["ganray.tune", "--space", _space(root / "space.yaml"), "--storage", str(root / "runs")]
    args += [
        "--name",
        "tiny",
        "--address",
        "local",
        "--max-concurrent",
        "2",
        "--mlflow-uri",
        f"file:{mlruns}",
    ]
    log = open(root / "tune.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", *args], cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT
    )
    uri = root / "runs" / "tiny"
    live = None
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        # While the driver runs (results.parquet is rewritten as each trial ends, so it no
        # longer marks the end of the search).
        if live is None and list(uri.glob("trials/*/metrics.jsonl")):
            live = _run("ganray.analyze", str(uri), "--out", str(root / "live"), "--no-models")
        time.sleep(1.0)
    proc.wait(60)
    log.close()
    assert proc.returncode == 0, (root / "tune.log").read_text()[-8000:]
    best = json.loads((uri / "best.json").read_text())
    out = root / "report"
    first = _run("ganray.analyze", str(uri), "--out", str(out))
    assert first.returncode == 0, _show(first)
    return SimpleNamespace(
        root=root, uri=uri, out=out, best=best, mlruns=mlruns, live=live, stdout=first.stdout
    )


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _trial_ids(uri: Path) -> dict[str, str]:
    """'good' / 'bad' -> trial id, from the stored configs."""
    out = {}
    for d in (uri / "trials").iterdir():
        if not d.name.startswith("_"):
            arch = yaml.safe_load((d / "config.yaml").read_text())["model"]["arch"]
            out["good" if arch == "dcgan-adain" else "bad"] = d.name
    return out


def test_table_rows_equal_stored_metrics(experiment):
    table = pq.read_table(experiment.out / "trials.parquet").to_pylist()
    s = Storage()
    ids = _trial_ids(experiment.uri)
    for tid in ids.values():
        stored = artifacts.read_metrics(s, str(experiment.uri / "trials" / tid))
        rows = sorted((r for r in table if r["trial_id"] == tid), key=lambda r: r["epoch"])
        assert [r["epoch"] for r in rows] == [r["epoch"] for r in stored]
        for got, want in zip(rows, stored):
            for k in ("fid", "d_loss", "g_loss", "val_d_acc_real", "images_seen", "lr_g"):
                assert got[k] == pytest.approx(want[k]), (tid, got["epoch"], k)
    good = [r for r in table if r["trial_id"] == ids["good"]]
    bad = [r for r in table if r["trial_id"] == ids["bad"]]
    assert {r["status"] for r in good} == {"finished"} and len(good) == EPOCHS
    assert {r["status"] for r in bad} == {"errored"} and "NonFiniteLossError" in bad[0]["error"]
    assert good[0]["param.optim.lr"] == pytest.approx(2e-4) and good[0]["arch"] == "dcgan-adain"
    assert good[-1]["wall_seconds"] > good[0]["wall_seconds"] > 0
    assert good[0]["fid_backbone"] == "fashion-mnist-classifier"  # the one used, not the config's "auto"


def test_comparisons_rank_trials(experiment):
    ids, best = _trial_ids(experiment.uri), experiment.best
    per_run = _csv(experiment.out / "comparisons" / "per_run.csv")
    fids = [float(r["best fid"]) for r in per_run if r["best fid"]]
    assert fids == sorted(fids) and per_run[0]["trial"] == best["trial_id"] == ids["good"]
    assert float(per_run[0]["best fid"]) == pytest.approx(best["best_fid"])
    assert {r["trial"]: r["status"] for r in per_run} == {ids["good"]: "finished", ids["bad"]: "errored"}
    assert 0.0 <= float(per_run[0]["avg val D acc"]) <= 1.0 and per_run[0]["best val G loss"]
    by_opt = {r["optimizer"]: r for r in _csv(experiment.out / "comparisons" / "by_optimizer.csv")}
    assert by_opt["adam"]["best trial"] == ids["good"] and by_opt["sgd"]["best trial"] == ids["bad"]
    fam = _csv(experiment.out / "comparisons" / "by_family.csv")
    assert fam[0]["model family"] == "dcgan-adain"  # the better family first
    imp = _csv(experiment.out / "comparisons" / "importance.csv")
    assert {r["parameter"] for r in imp} == set(GOOD)
    md = (experiment.out / "comparisons.md").read_text()
    assert "### Best fid per learning rate (G)" in md and "### Hyperparameter importance" in md
    cfg = yaml.safe_load((experiment.out / "best_config.yaml").read_text())
    assert cfg["model"]["arch"] == "dcgan-adain" and cfg["storage"]["run_name"] == best["trial_id"]


def test_every_plot_and_image_decodes_and_gif_has_one_frame_per_grid(experiment):
    out = experiment.out
    expected = ["plots/fid_vs_epoch.png", "plots/fid_vs_images.png", "plots/losses_top.png", "plots/lr_vs_best.png",
                "plots/lr_schedule.png", "plots/importance.png", "plots/parallel_coordinates.png",
                "images/grid_epoch_0000.png", f"images/grid_epoch_{EPOCHS:04d}.png", "images/progression.gif",
                "images/style_mixing_coarse.png", "images/style_mixing_middle.png", "images/mixing_5_latents.png",
                "images/truncation.png", "images/interp_z.gif", "images/interp_w.gif", "images/filters_G.png",
                "images/filters_D.png", "images/activations_early.png", "images/activations_late.png"]  # fmt: skip
    for rel in expected:
        with Image.open(out / rel) as im:
            im.load()
            assert im.width > 0 and im.height > 0, rel
    for path in [*out.glob("plots/*"), *out.glob("images/*")]:
        with Image.open(path) as im:
            im.load()
    grids = sorted((experiment.uri / "trials" / experiment.best["trial_id"] / "samples").glob("epoch_*.png"))
    with Image.open(out / "images" / "progression.gif") as gif:
        assert gif.n_frames == len(grids) == EPOCHS + 1
    arch = (out / "architecture.txt").read_text()
    assert "Generator: MappingGenerator" in arch and "Discriminator: DCGANDiscriminator" in arch
    assert f"trial {experiment.best['trial_id']}, epoch {experiment.best['epoch']}" in arch


def test_report_in_headless_chromium(experiment, tmp_path):
    if find_chromium() is None:
        pytest.fail("chromium is not installed: `make setup` installs Debian's chromium package")
    shot = tmp_path / "report.png"
    page = inspect_page((experiment.out / "index.html").as_uri(), PAGE_CHECK, str(shot))
    assert page.errors == []
    v = page.value
    assert v["n"] >= 20 and v["bad"] == []
    assert v["best"] == experiment.best["trial_id"] and v["fid"] == f"{experiment.best['best_fid']:.2f}"
    assert "errored" in v["text"] and "NonFiniteLossError" in v["text"]
    assert all(("trial" in c) for c in v["captions"]) and len(v["captions"]) == v["n"]
    with Image.open(shot) as im:
        assert im.height > 2000  # the full page, not just the first screen
    shutil.copy(shot, experiment.root / "report.png")


def test_browser_check_catches_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(
        "<!doctype html><html><body><p id='best-trial'>x</p><img src='missing.png'></body></html>"
    )
    res = inspect_page(page.as_uri(), PAGE_CHECK, str(tmp_path / "shot.png"))
    assert res.value["bad"] == ["missing.png"] and res.errors


def test_report_while_running_and_rerun_updates_it(experiment, tmp_path):
    live = experiment.live
    assert live is not None and live.returncode == 0, live and _show(live)
    text = (experiment.root / "live" / "index.html").read_text()
    assert "running" in text or "finished" in text
    # Re-running replaces the report: the final one knows both trials' final states.
    final = (experiment.out / "index.html").read_text()
    assert "errored" in final and "finished" in final
    again = _run("ganray.analyze", str(experiment.uri), "--out", str(experiment.root / "live"), "--no-models")
    assert again.returncode == 0, _show(again)
    assert "errored" in (experiment.root / "live" / "index.html").read_text()


def test_missing_and_corrupt_files_are_reported_and_skipped(experiment, tmp_path):
    exp = tmp_path / "damaged"
    shutil.copytree(experiment.uri, exp, ignore=shutil.ignore_patterns("_ray", "_tune", "_cache"))
    ids = _trial_ids(exp)
    good, bad = exp / "trials" / ids["good"], exp / "trials" / ids["bad"]
    (good / "samples" / "epoch_0002.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # corrupt grid
    with open(bad / "metrics.jsonl", "a") as fh:
        fh.write("{torn line\n")
    ckpt_file = good / "checkpoints" / f"epoch_{experiment.best['epoch']:04d}.pt"
    ckpt_file.write_bytes(ckpt_file.read_bytes()[:100])  # sha256 no longer matches its sidecar
    (bad / "config.yaml").write_text("model: [unclosed\n")
    (exp / "results.parquet").unlink()
    (bad / "error.json").unlink()  # no final state at all: shown as running

    out = tmp_path / "report"
    proc = _run("ganray.analyze", str(exp), "--out", str(out))
    assert proc.returncode == 0, _show(proc)
    page = (out / "index.html").read_text()
    for name in ("epoch_0002.png", "metrics.jsonl", ckpt_file.name, "config.yaml"):
        assert name in page.split("id='problems'")[1].split("</div>")[0], name
    with Image.open(out / "images" / "progression.gif") as gif:
        assert gif.n_frames == EPOCHS  # the corrupt grid is skipped
    rows = pq.read_table(out / "trials.parquet").to_pylist()
    assert {r["status"] for r in rows if r["trial_id"] == ids["bad"]} == {"running"}
    assert (out / "images" / "filters_G.png").exists()  # from the previous (intact) checkpoint

    missing = _run("ganray.analyze", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "r2"))
    assert missing.returncode == 2 and "holds no experiment" in missing.stderr


def test_analyze_reads_an_experiment_on_s3(experiment, bucket, s3_endpoint, tmp_path):
    s = Storage(s3_endpoint)
    remote = f"s3://{bucket}/searches/tiny"
    for path in experiment.uri.rglob("*"):
        rel = path.relative_to(experiment.uri).as_posix()
        if path.is_file() and not rel.startswith(("_tune", "trials/_")):
            s.write_bytes(join(remote, rel), path.read_bytes())
    out = tmp_path / "report"
    proc = _run("ganray.analyze", remote, "--out", str(out), "--endpoint-url", s3_endpoint)
    assert proc.returncode == 0, _show(proc)
    assert f"best: trial {experiment.best['trial_id']}" in proc.stdout
    assert (out / "images" / "progression.gif").exists() and (out / "images" / "truncation.png").exists()
    local = pq.read_table(experiment.out / "trials.parquet").to_pylist()
    assert pq.read_table(out / "trials.parquet").to_pylist() == local


def test_grids_reach_tensorboard_and_scalars_come_from_tune(experiment):
    run = experiment.uri / "trials" / experiment.best["trial_id"]
    for epoch in range(EPOCHS + 1):
        data = (run / "tensorboard" / f"events.out.tfevents.{epoch:010d}.ganray").read_bytes()
        ((step, tag, png),) = tensorboard.read_images(data)
        assert step == epoch and tag == tensorboard.GRID_TAG
        assert png == (run / "samples" / f"epoch_{epoch:04d}.png").read_bytes()
    (scalars,) = (experiment.uri / "_tune" / experiment.best["trial_id"]).glob("events.out.tfevents.*")
    fid = {ev.step: v.simple_value for ev in tensorboard.read_events(scalars.read_bytes()) for v in ev.summary.value if v.tag == "ray/tune/fid"}  # fmt: skip
    stored = artifacts.read_metrics(Storage(), str(run))
    assert list(fid.values()) == pytest.approx([r["fid"] for r in stored], rel=1e-5)  # Tune's TBX logger


def test_mlflow_has_one_run_per_trial_with_params_metrics_and_grids(experiment, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a local file store, as the search used
    client = MlflowClient(tracking_uri=f"file:{experiment.mlruns}")
    exp = client.get_experiment_by_name("tiny")
    runs = {r.data.tags["trial_name"]: r for r in client.search_runs([exp.experiment_id])}
    ids = _trial_ids(experiment.uri)
    assert set(runs) == set(ids.values())
    good = runs[ids["good"]]
    assert float(good.data.params["optim.lr"]) == pytest.approx(2e-4)
    history = client.get_metric_history(good.info.run_id, "fid")
    stored = artifacts.read_metrics(Storage(), str(experiment.uri / "trials" / ids["good"]))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [r["fid"] for r in stored]
    )
    names = sorted(a.path for a in client.list_artifacts(good.info.run_id, "samples"))
    assert names == [f"samples/epoch_{e:04d}.png" for e in range(EPOCHS + 1)]
    assert good.info.status == "FINISHED" and runs[ids["bad"]].info.status == "FAILED"
    local = client.download_artifacts(good.info.run_id, "samples/epoch_0001.png", str(experiment.root))
    assert (
        Path(local).read_bytes()
        == (experiment.uri / "trials" / ids["good"] / "samples" / "epoch_0001.png").read_bytes()
    )
