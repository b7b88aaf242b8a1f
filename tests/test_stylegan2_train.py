"""StyleGAN2 training: phases, lazy-reg correction, EMA half-life, exact resume, 2-rank DDP = 1 rank."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

from ganray.config import ConfigError, load_config
from ganray.models import build_models
from ganray.optim import build_optimizers, lazy_corrected
from ganray.train.distributed import DistContext
from ganray.train.loop import Trainer
from ganray.train.step import GanState, ema_beta, gan_step

CPU = torch.device("cpu")
TINY = [
    "model.latent_dim=8",
    "model.stylegan2.network_capacity=2",
    "model.stylegan2.fmap_max=16",
    "model.stylegan2.w_dim=8",
    "model.stylegan2.mapping_layers=2",
    "train.batch_size=8",
    "train.reg.r1_gamma=1.0",
    "train.reg.r1_interval=2",
    "train.reg.pl_interval=2",
    "train.augment.policy=translation,cutout,color",
    "train.augment.p=0.5",
    "train.augment.ada_interval=1",
    "train.augment.ada_kimg=1",
]


def tiny_cfg(*extra):
    return load_config("stylegan2-quickstart", [*TINY, *extra])


def make_state(cfg, wrap=lambda m: m):
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    opt_g, opt_d = build_optimizers(G, D, cfg.optim, cfg.train.reg)
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    return GanState(wrap(G), wrap(D), opt_g, opt_d, torch.Generator().manual_seed(1), G_ema=G_ema)


def reals(n=8, seed=2):
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_lazy_regularization_correction():
    cfg = tiny_cfg()
    c = 4 / 5
    g = lazy_corrected(cfg.optim, 4)
    assert (g.lr, g.beta1, g.beta2) == pytest.approx((0.0025 * c, 0.0, 0.99**c))
    opt_g, opt_d = build_optimizers(*build_models(cfg.model), cfg.optim, cfg.train.reg)
    assert opt_g.param_groups[0]["lr"] == pytest.approx(0.0025 * 2 / 3)  # pl_interval 2
    assert opt_d.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (2 / 3)))  # r1_interval 2
    plain_g, _ = build_optimizers(*build_models(cfg.model), cfg.optim)
    assert plain_g.param_groups[0]["lr"] == 0.0025


def test_ema_half_life_in_images():
    beta = ema_beta(batch=32, ema_kimg=10, rampup=0, images_seen=0)
    assert beta ** (10_000 / 32) == pytest.approx(0.5)
    ramped = ema_beta(batch=32, ema_kimg=10, rampup=0.05, images_seen=64_000)  # half-life 3.2k images
    assert ramped ** (3_200 / 32) == pytest.approx(0.5)


def test_style_mixing_on_a_generator_without_styles_is_a_clear_error():
    cfg = load_config("quickstart", ["model.ngf=8", "model.ndf=8", "train.reg.style_mixing=0.5"])
    state = make_state(cfg)
    with pytest.raises(ConfigError, match="style_mixing.*stylegan2"):
        gan_step(state, reals(), cfg.train, cfg.optim, DistContext(device=CPU))


def test_resume_is_bit_for_bit(tmp_path):
    """2 epochs straight == 1 epoch, restart, 1 more: weights, G_ema, optimizers and extra state."""

    def cfg(root, epochs):
        return tiny_cfg(
            f"storage.uri={root}",
            "storage.run_name=run",
            "data.subset=400",
            "train.max_steps_per_epoch=2",
            f"train.epochs={epochs}",
            "train.grid_size=4",
            "metrics.fid=false",
            "train.ema_kimg=0.05",
            "train.ema_rampup=0.05",
        )

    straight = Trainer(cfg(tmp_path / "a", 2))
    straight.fit()
    Trainer(cfg(tmp_path / "b", 1)).fit()
    resumed = Trainer(cfg(tmp_path / "b", 2))
    assert resumed.epoch == 1
    resumed.fit()
    a, b = straight.state_dict(), resumed.state_dict()
    for key in ("G", "D", "G_ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resume"
    assert a["extra"] == b["extra"] and a["extra"]["step"] == 4
    assert {"pl_mean", "aug_p"} <= set(a["history"][-1])


# ---------------------------------------------------------------- 2 gloo ranks == 1 process

STEPS = 3


def _params(state):
    G = state.G.module if isinstance(state.G, DDP) else state.G
    D = state.D.module if isinstance(state.D, DDP) else state.D
    return [p.detach().clone() for p in [*G.parameters(), *D.parameters()]]


def _rank_main(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    cfg = tiny_cfg()
    state = make_state(cfg, wrap=DDP)
    ctx = DistContext(rank, 2, CPU)
    real = reals()[rank * 4 : (rank + 1) * 4]
    for _ in range(STEPS):
        gan_step(state, real, cfg.train, cfg.optim, ctx)
    if rank == 0:
        torch.save({"params": _params(state), "extra": state.extra}, out_file)
    # The DDP modules hold the process group: freed only at interpreter exit, its gloo threads
    # once aborted rank 0 ("terminate called without an active exception", SIGABRT in CI).
    del state
    dist.barrier()
    dist.destroy_process_group()


def test_phases_and_two_gloo_ranks_equal_one_process(tmp_path):
    """The phases run at their intervals; 2 DDP ranks on half batches end with 1 process's weights."""
    cfg = tiny_cfg()
    single = make_state(cfg)
    ran = []
    for _ in range(STEPS):
        out = gan_step(single, reals(), cfg.train, cfg.optim, DistContext(device=CPU))
        assert all(torch.isfinite(v) for v in out.values())
        ran.append(sorted(k for k in out if k in ("r1", "pl_penalty")))
    # Dreg and Greg (interval 2 each) run on steps 0 and 2 as their own optimizer steps.
    assert ran == [["pl_penalty", "r1"], [], ["pl_penalty", "r1"]]
    extra = single.extra
    assert extra["step"] == STEPS and extra["images"] == 8 * STEPS and extra["pl_mean"] > 0
    assert 0 <= extra["aug_p"] <= 1 and "ada_rt" in extra
    out = tmp_path / "rank0.pt"
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=False)
    for p1, p2 in zip(_params(single), two["params"]):
        assert torch.allclose(p1, p2, atol=1e-5, rtol=1e-4)
    assert two["extra"]["pl_mean"] == pytest.approx(single.extra["pl_mean"], rel=1e-5)
    assert two["extra"]["aug_p"] == pytest.approx(single.extra["aug_p"])


def test_short_fashion_mnist_run_improves_the_offline_fid(tmp_path):
    """640 real images of training lower FID (offline backbone, 300 samples) below init's."""
    cfg = load_config(
        "stylegan2-quickstart",
        [
            f"storage.uri={tmp_path}",
            "storage.run_name=run",
            "data.subset=2000",
            "model.stylegan2.network_capacity=4",
            "model.stylegan2.fmap_max=64",
            "train.batch_size=16",
            "train.max_steps_per_epoch=40",
            "train.epochs=1",
            "train.grid_size=4",
            "metrics.num_samples=300",
        ],
    )
    trainer = Trainer(cfg)
    before = trainer._evaluate(cfg.train.epochs)["fid"]
    after = trainer.fit()[-1]["fid"]
    assert after < 0.9 * before, (before, after)
