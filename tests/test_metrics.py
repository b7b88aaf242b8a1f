"""Metrics engine: Fréchet distance, streaming stats, KID, precision/recall, IS, PPL,
the reference cache and evaluate_generator (also on 2 gloo ranks), and the CLI.

Everything here uses tiny random networks and synthetic data; the real-data
sanity checks and the backbones live in test_metrics_backbones.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance
from torch import nn

from ganray.config import DataConfig, MetricsConfig
from ganray.data import ImageDataset
from ganray.metrics import BackboneError, build_backbone, evaluate_generator, frechet_distance
from ganray.metrics.backbones import Backbone, resolve_backbone_name
from ganray.metrics.classifier import ClassifierArch, FeatureClassifier, save_classifier
from ganray.metrics.features import MeanCov, compute_image_stats, stats_of
from ganray.metrics.isc import inception_score
from ganray.metrics.kid import kernel_distance
from ganray.metrics.ppl import perceptual_path_length
from ganray.metrics.prdc import precision_recall
from ganray.metrics.reference import reference_stats
from ganray.metrics.sampling import latents
from ganray.storage import Storage

# ------------------------------------------------------------------ helpers


class TinyG(nn.Module):
    """z [N, 8] -> images [N, 1, 16, 16] in [-1, 1]; BatchNorm + dropout make eval mode matter."""

    def __init__(self, latent_dim: int = 8) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(64, 256),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 16, 16)


class TinyMappingG(TinyG):
    """The same with a mapping network, so PPL runs in W."""

    def __init__(self) -> None:
        super().__init__(latent_dim=8)
        self.w_dim = 8
        self.mapping = nn.Sequential(nn.Linear(8, 8), nn.LeakyReLU(0.2))

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w).view(-1, 1, 16, 16)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.mapping(z))


class CountingBackbone(Backbone):
    """A Backbone that counts its forward passes (a spy for cache tests)."""

    calls: int = 0

    def forward_all(self, x):  # noqa: ANN001, ANN201
        self.calls += 1
        return super().forward_all(x)


def tiny_backbone(seed: int = 0) -> CountingBackbone:
    torch.manual_seed(seed)
    net = FeatureClassifier(ClassifierArch(1, 16, 4, (8, 16), 16)).eval()
    return CountingBackbone("tiny", net, 16, False, f"tiny{seed}", logits_dim=4)


def tiny_dataset(n: int = 300, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 16, 16), dtype=torch.uint8, generator=g)
    return ImageDataset(images, torch.zeros(n, dtype=torch.long), f"tiny.train.s{seed}.n{n}")


def small_cfg(**kw) -> MetricsConfig:  # noqa: ANN003
    return MetricsConfig(**{"num_samples": 200, "batch_size": 64, **kw})


# ------------------------------------------------------------ Fréchet / stats


@pytest.mark.parametrize("n, d", [(400, 32), (20, 32)])  # (20, 32): singular covariances, eps fallback
def test_frechet_distance_equals_pytorch_fid(n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, d))
    b = rng.normal(0.3, 1.2, size=(n, d)) @ rng.normal(size=(d, d)) * 0.3
    m1, s1, m2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    ours, theirs = frechet_distance(m1, s1, m2, s2), calculate_frechet_distance(m1, s1, m2, s2)
    assert abs(ours - theirs) / abs(theirs) < 1e-6
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-6 * np.trace(s1))


def test_streaming_mean_cov_equals_numpy_in_float64() -> None:
    rng = np.random.default_rng(1)
    feats = (rng.normal(size=(1000, 16)) * 0.01 + 50.0).astype(np.float32)  # large mean, small spread
    acc = MeanCov(16, flush_rows=100)  # several flushes of buffered rows
    for part in np.array_split(feats, 7):
        acc.update(part)
    mu, sigma = acc.result()
    ref = feats.astype(np.float64)
    np.testing.assert_allclose(mu, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(ref, rowvar=False), rtol=1e-7, atol=1e-12)
    m2, s2 = stats_of(feats)
    assert np.allclose(m2, mu) and np.allclose(s2, sigma)


def test_compute_image_stats_streams_batches() -> None:
    bb = tiny_backbone()
    seen = []

    def batches():  # noqa: ANN202 - a lazy stream; one batch alive at a time
        for i in range(5):
            seen.append(i)
            yield torch.rand(20, 1, 16, 16) * 2 - 1

    mu, sigma, feats = compute_image_stats(batches(), bb, keep_features=True)
    assert seen == list(range(5)) and bb.calls == 5
    assert mu.shape == (16,) and sigma.shape == (16, 16) and feats.shape == (100, 16)
    assert np.allclose(mu, feats.astype(np.float64).mean(0))


# ------------------------------------------------------------------ KID / PR / IS


def test_kid_near_zero_for_same_distribution_and_positive_otherwise() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(600, 32)), rng.normal(size=(600, 32))
    same, _ = kernel_distance(a, b, num_subsets=20, max_subset_size=300)
    shifted, _ = kernel_distance(a, b + 0.5, num_subsets=20, max_subset_size=300)
    assert abs(same) < 0.05 * shifted
    assert shifted > 0


def test_kid_equals_the_stylegan2_ada_formula() -> None:
    """The chunked implementation computes exactly the per-subset loop of StyleGAN2-ADA's metric."""
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(300, 24)), rng.normal(0.2, 1.0, size=(250, 24))
    n, m, num_subsets, t = 24, 100, 7, 0.0
    pick = np.random.default_rng(0)
    for _ in range(num_subsets):
        x = fake[pick.choice(len(fake), m, replace=False)]
        y = real[pick.choice(len(real), m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    ours, _ = kernel_distance(real, fake, num_subsets=num_subsets, max_subset_size=m, seed=0)
    assert ours == pytest.approx(t / num_subsets / m, rel=1e-5)


def test_precision_recall_separates_fidelity_from_coverage() -> None:
    rng = np.random.default_rng(3)
    real = rng.normal(size=(800, 8))
    p, r = precision_recall(real, rng.normal(size=(800, 8)))
    assert p > 0.8 and r > 0.8
    collapsed = rng.normal(scale=0.3, size=(800, 8))  # one narrow mode inside the real support
    p_c, r_c = precision_recall(real, collapsed)
    assert p_c > 0.8 and r_c < 0.3  # faithful but not diverse
    p_far, r_far = precision_recall(real, rng.normal(size=(800, 8)) + 10)
    assert p_far == 0.0 and r_far == 0.0


def test_inception_score_bounds() -> None:
    uniform = np.zeros((500, 10))
    assert inception_score(uniform)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(500) % 10] * 50
    assert inception_score(confident)[0] == pytest.approx(10.0, rel=1e-3)


# ------------------------------------------------------------------------ PPL


class LinearG(nn.Module):
    """images = (z or w) @ B, as 1x4x4 images; with ``mapping``, an identity Z->W map (PPL in W)."""

    def __init__(self, B: torch.Tensor, mapping: bool) -> None:
        super().__init__()
        self.latent_dim = B.shape[0]
        self.B = nn.Parameter(B)
        if mapping:
            self.w_dim, self.mapping = B.shape[0], nn.Identity()

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        return (w @ self.B).view(-1, 1, 4, 4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(z)


def linear_backbone(W: torch.Tensor) -> Backbone:
    """Features = flattened image @ W: feature distances are exact quadratic forms."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = nn.Parameter(W, requires_grad=False)

        def forward(self, x):  # noqa: ANN001, ANN202
            return x.flatten(1) @ self.W, None

    return Backbone("linear", Net(), W.shape[1], False, "linear")


def _ppl(G: nn.Module, backbone: Backbone, pairs: int = 200) -> float:
    out = perceptual_path_length(G, backbone, pairs, 64, torch.device("cpu"), seed=0)
    assert out["ppl_distance"] in ("lpips", f"{backbone.name}-features")
    return out["ppl"]


def test_ppl_in_w_equals_the_closed_form_for_a_linear_generator() -> None:
    """Linear G and features: the path from w0 to w1 moves the features by (w1 - w0) @ B @ W
    per unit of t, so each pair's eps^-2-scaled squared distance is |(w1 - w0) @ B @ W|^2,
    for any eps; PPL averages it over the pairs between the 1st and 99th percentiles."""
    g = torch.Generator().manual_seed(0)
    B, W = torch.randn(8, 16, generator=g) * 0.1, torch.randn(16, 5, generator=g) * 0.1
    G, bb = LinearG(B, mapping=True), linear_backbone(W)
    w0, w1 = latents(range(200), 8, seed=0, stream=2), latents(range(200), 8, seed=0, stream=3)
    d = ((w1 - w0).double() @ B.double() @ W.double()).square().sum(1).sort().values.numpy()
    expected = d[1:-1].mean()  # 200 pairs: the 1st/99th percentiles drop the smallest and largest
    assert _ppl(G, bb) == pytest.approx(expected, rel=1e-2)
    assert d.mean() != pytest.approx(expected, rel=1e-2)  # the filter matters at this tolerance


@pytest.mark.parametrize("mapping", [True, False], ids=["w", "z"])
def test_ppl_zero_when_output_ignores_the_latent_and_quadratic_in_sensitivity(mapping: bool) -> None:
    g = torch.Generator().manual_seed(0)
    B, W = torch.randn(8, 16, generator=g) * 0.1, torch.randn(16, 5, generator=g) * 0.1
    bb = linear_backbone(W)
    assert _ppl(LinearG(B * 0, mapping), bb) == pytest.approx(0.0, abs=1e-9)
    one, three = _ppl(LinearG(B, mapping), bb), _ppl(LinearG(B * 3, mapping), bb)
    assert one > 1e-2 and three == pytest.approx(9 * one, rel=1e-2)  # 3x the image motion


def test_ppl_of_real_networks_labels_space_and_distance() -> None:
    bb = tiny_backbone()
    torch.manual_seed(0)
    out_w = perceptual_path_length(TinyMappingG(), bb, 64, 32, torch.device("cpu"), seed=0)
    out_z = perceptual_path_length(TinyG(), bb, 64, 32, torch.device("cpu"), seed=0)
    assert out_w["ppl_space"] == "w" and out_z["ppl_space"] == "z"
    const = TinyG()
    nn.init.zeros_(const.net[0].weight)  # output independent of z -> zero path length
    const_ppl = perceptual_path_length(const, bb, 64, 32, torch.device("cpu"), seed=0)["ppl"]
    assert const_ppl == pytest.approx(0.0, abs=1e-9)
    for out in (out_w, out_z):
        assert out["ppl_distance"] in ("lpips", "tiny-features")
        assert out["ppl"] > 1e-4  # images of a random network move with the latent (measured: 2e-3 w, 2e-2 z)


# ------------------------------------------------------------ reference cache


def test_reference_stats_cached_on_storage_second_call_loads() -> None:
    storage, cache = Storage(), "memory://ganray-test/ref-cache"
    bb, ds = tiny_backbone(), tiny_dataset()
    first = reference_stats(DataConfig(), bb, storage, cache, num_samples=200, batch_size=64, dataset=ds)
    calls = bb.calls
    assert not first.from_cache and calls == 4 and storage.exists(first.uri)
    for key in (ds.dataset_id, "train", "tiny", "tiny0", "n200"):
        assert key in first.uri
    second = reference_stats(DataConfig(), bb, storage, cache, num_samples=200, batch_size=64, dataset=ds)
    assert second.from_cache and bb.calls == calls  # loaded, not recomputed
    np.testing.assert_array_equal(first.sigma, second.sigma)
    np.testing.assert_array_equal(first.features, second.features)
    other = reference_stats(DataConfig(), bb, storage, cache, num_samples=100, batch_size=64, dataset=ds)
    assert not other.from_cache and other.uri != first.uri  # another sample count is another key


# ---------------------------------------------------------- evaluate_generator


def test_evaluate_generator_all_metrics_deterministic_and_side_effect_free() -> None:
    storage, cache = Storage(), "memory://ganray-test/eval-cache"
    bb, ds, G = tiny_backbone(), tiny_dataset(), TinyMappingG()
    G.train()
    G.net[1].eval()  # a submodule in its own mode must stay so
    cfg = small_cfg(kid=True, pr=True, inception_score=True, ppl=True)
    rng_before = torch.get_rng_state()
    a = evaluate_generator(G, cfg, DataConfig(), storage, cache, "cpu", seed=3, backbone=bb, dataset=ds)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert G.training and not G.net[1].training and G.net[3].training
    b = evaluate_generator(G, cfg, DataConfig(), storage, cache, "cpu", seed=3, backbone=bb, dataset=ds)
    for key in ("fid", "kid", "precision", "recall", "is", "ppl"):
        assert a[key] == b[key] and np.isfinite(a[key]), key
    assert a["fid"] > 0 and a["fid_num_samples"] == 200 and a["fid_reference_images"] == 200
    assert (
        a["fid_backbone"] == "tiny" and a["fid_label"] == "FID [tiny]" and not a["fid_backbone_is_inception"]
    )
    assert a["ppl_distance"] in ("lpips", "tiny-features")
    c = evaluate_generator(G, cfg, DataConfig(), storage, cache, "cpu", seed=4, backbone=bb, dataset=ds)
    assert c["fid"] != a["fid"]  # other seeds, other samples


def test_evaluate_generator_only_configured_metrics() -> None:
    bb, ds = tiny_backbone(), tiny_dataset()
    out = evaluate_generator(
        TinyG(),
        small_cfg(),
        DataConfig(),
        Storage(),
        "memory://ganray-test/only",
        "cpu",
        backbone=bb,
        dataset=ds,
    )
    assert "fid" in out and not {"kid", "precision", "is", "ppl"} & set(out)


def _ddp_worker(rank: int, world: int, init: str, cache: str, out_dir: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        G = TinyG()

        def evaluate(cfg):
            return evaluate_generator(
                G,
                cfg,
                DataConfig(),
                Storage(),
                cache,
                "cpu",
                rank=rank,
                world_size=world,
                backbone=tiny_backbone(),
                dataset=tiny_dataset(),
            )

        res = evaluate(small_cfg(num_samples=101, kid=True))
        # 3 samples on 2 ranks: shares of 1 and 2 images still meet in the same gathers.
        tiny = evaluate(small_cfg(num_samples=3, inception_score=True))
        res["tiny_num_samples"] = tiny["fid_num_samples"]
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump({k: v for k, v in res.items() if k != "eval_seconds"}, fh)
    finally:
        torch.distributed.destroy_process_group()


def test_evaluate_generator_on_two_ranks_equals_one_process(tmp_path) -> None:  # noqa: ANN001
    cache = str(tmp_path / "cache")
    torch.multiprocessing.spawn(
        _ddp_worker, args=(2, f"file://{tmp_path}/pg", cache, str(tmp_path)), nprocs=2
    )
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0 == r1  # every rank returns the same dict
    assert r0["tiny_num_samples"] == 3
    torch.manual_seed(0)
    G = TinyG()
    single = evaluate_generator(
        G,
        small_cfg(num_samples=101, kid=True),
        DataConfig(),
        Storage(),
        cache,
        "cpu",
        backbone=tiny_backbone(),
        dataset=tiny_dataset(),
    )
    assert single["fid"] == pytest.approx(r0["fid"], rel=1e-6)  # same 101 samples, split 50/51
    assert single["kid"] == pytest.approx(r0["kid"], rel=1e-6, abs=1e-9)


# ------------------------------------------------------------------ backbones


def test_classifier_backbone_from_uri_and_checksum(tmp_path) -> None:  # noqa: ANN001
    storage, uri = Storage(), "memory://ganray-test/backbones/tiny.pt"
    torch.manual_seed(0)
    net = FeatureClassifier(ClassifierArch(1, 16, 4, (8, 16), 16)).eval()
    with torch.no_grad():  # trained-looking BatchNorms, so folding them into the convs is not a no-op
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.5), m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.3), m.bias.normal_(0, 0.3)
    meta = save_classifier(net, uri, storage, {"name": "tiny-classifier", "command": "train-backbone ..."})
    bb = build_backbone(uri, MetricsConfig(), storage)
    assert bb.name == "tiny-classifier" and bb.weights_tag == meta["sha256"][:12] and not bb.is_inception
    x = torch.rand(3, 3, 40, 40) * 2 - 1  # RGB at 40 px is converted inside
    feats, logits = bb.forward_all(x)
    with torch.no_grad():
        want_feats, want_logits = net(x)  # the network as saved: unfused, eval mode
    assert feats.shape == (3, 16) and logits.shape == (3, 4)
    torch.testing.assert_close(feats, want_feats, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, want_logits, rtol=1e-4, atol=1e-5)
    data = bytearray(storage.read_bytes(uri))
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    storage.write_bytes(uri, bytes(data))
    with pytest.raises(BackboneError, match="sha256"):
        build_backbone(uri, MetricsConfig(), storage)


def test_missing_inception_weights_error_names_file_and_setting(tmp_path) -> None:  # noqa: ANN001
    cfg = MetricsConfig(backbone="inception", inception_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(
        BackboneError, match=r"pt_inception-2015-12-05-6726825d\.pth.*metrics\.inception_weights"
    ):
        build_backbone("inception", cfg)


def test_auto_backbone_resolution(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no cached Inception weights
    assert resolve_backbone_name(MetricsConfig(), "fashion-mnist") == "fashion-mnist-classifier"
    assert (
        resolve_backbone_name(MetricsConfig(inception_weights="s3://b/w.pth"), "fashion-mnist") == "inception"
    )
    with pytest.raises(BackboneError, match="train-backbone"):
        resolve_backbone_name(MetricsConfig(), "cifar10")
