"""The backbone registry is complete at import, in a fresh process, whatever is imported first.

Each check runs in its own interpreter: inside pytest some earlier test has
always built a backbone already, which would hide a registry that fills late.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SHIPPED = ["fashion-mnist-classifier", "inception"]

PROBE = """
import json
import {first}
from ganray.config import MetricsConfig
from ganray.metrics.backbones import list_backbones, resolve_backbone_name
print(json.dumps({{
    "registered": list_backbones(),
    "auto_for_fashion": resolve_backbone_name(MetricsConfig(), "fashion-mnist"),
}}))
"""


def run_probe(first: str, tmp_path) -> dict:  # noqa: ANN001
    env = {
        **os.environ,
        "TORCH_HOME": str(tmp_path / "no-hub-cache"),
    }  # no Inception weights: auto -> offline
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(first=first)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "first",
    ["ganray.metrics.backbones", "ganray.metrics.classifier", "ganray.metrics.inception", "ganray.config"],
)
def test_registry_is_full_in_a_fresh_process_before_any_backbone_is_built(first, tmp_path) -> None:  # noqa: ANN001
    got = run_probe(first, tmp_path)
    assert got["registered"] == SHIPPED
    assert got["auto_for_fashion"] == "fashion-mnist-classifier"


def test_unknown_dataset_without_inception_weights_names_the_fix(tmp_path) -> None:  # noqa: ANN001
    probe = (
        "from ganray.config import MetricsConfig\n"
        "from ganray.metrics.backbones import BackboneError, resolve_backbone_name\n"
        "try:\n    resolve_backbone_name(MetricsConfig(), 'cifar10')\n"
        "except BackboneError as e:\n    print(e)\n"
    )
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "no-hub-cache")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert "train-backbone --dataset cifar10" in out.stdout
    assert "fashion-mnist-classifier, inception" in out.stdout  # the registered names, in a fresh process


# ------------------------------------------------- parquet shards name their origin


def prepared_fashion(tmp_path, drop_origin: bool = False) -> str:  # noqa: ANN001
    """A tiny Fashion-MNIST parquet dataset; ``drop_origin`` rewrites it as an older manifest."""
    from ganray.data import prepare

    dest = str(tmp_path / "fmnist-32")
    prepare("fashion-mnist", dest, 32, limit=20, log=lambda _: None)
    if drop_origin:
        path = tmp_path / "fmnist-32" / "manifest.json"
        manifest = json.loads(path.read_text())
        del manifest["origin"]
        path.write_text(json.dumps(manifest))
    return dest


@pytest.mark.parametrize("drop_origin", [False, True], ids=["manifest-with-origin", "older-manifest"])
def test_auto_backbone_of_parquet_shards_comes_from_their_manifest(
    tmp_path, monkeypatch, drop_origin
) -> None:  # noqa: ANN001
    from ganray.config import DataConfig, MetricsConfig
    from ganray.data.geometry import Origin, origin_of
    from ganray.metrics.backbones import build_backbone, resolve_backbone_name
    from ganray.storage import Storage

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub-cache"))
    data = DataConfig(source="parquet", uri=prepared_fashion(tmp_path, drop_origin))
    assert origin_of(data, Storage()) == Origin("fashion-mnist", prepared_side=32)
    assert resolve_backbone_name(MetricsConfig(), data, Storage()) == "fashion-mnist-classifier"
    assert build_backbone("auto", MetricsConfig(), Storage(), data=data).name == "fashion-mnist-classifier"


def test_train_backbone_on_parquet_shards_names_the_missing_uri_and_works_with_it(tmp_path, capsys) -> None:  # noqa: ANN001
    from ganray.metrics.cli import main

    assert main(["train-backbone", "--dataset", "parquet"]) == 2
    assert "data.uri is empty" in capsys.readouterr().err
    shards = prepared_fashion(tmp_path)  # a train split only: the classifier is measured on a holdout
    out = str(tmp_path / "bb.pt")
    argv = ["train-backbone", "--dataset", "parquet", "--data-uri", shards, "--epochs", "1", "--out", out]
    assert main(argv) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["uri"] == out and meta["eval_split"].startswith("holdout") and meta["train_images"] == 18
