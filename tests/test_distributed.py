"""Rank helpers and the GPU switches that must turn on by themselves where CUDA exists."""

import pytest
import torch

from ganray.config import ConfigError, load_config
from ganray.models import build_models, list_archs
from ganray.optim import build_optimizers
from ganray.train.batches import Batches
from ganray.train.distributed import DistContext, compute_plan, default_device, to_channels_last, unwrap
from ganray.train.loop import run_name_for
from ganray.train.ray_trial import build_trainer
from ganray.train.step import GanState, gan_step, sample_slice

CPU = torch.device("cpu")


def _train(*overrides):
    return load_config("quickstart", list(overrides)).train


def test_compute_plan_decides_device_backend_amp_and_memory_format():
    gpu = compute_plan(_train(), gpu=True)
    assert (gpu.device_type, gpu.backend, gpu.amp_dtype, gpu.channels_last) == (
        "cuda",
        "nccl",
        torch.bfloat16,
        True,
    )
    assert compute_plan(_train("train.amp=fp16"), gpu=True).amp_dtype is torch.float16
    assert compute_plan(_train("train.amp=off"), gpu=True).amp_dtype is None
    assert compute_plan(_train("train.channels_last=false"), gpu=True).channels_last is False
    cpu = compute_plan(_train("train.amp=fp16"), gpu=False)
    assert (cpu.device_type, cpu.backend, cpu.amp_dtype, cpu.channels_last) == ("cpu", "gloo", None, False)
    # In a process: 'auto' follows CUDA, 'no' never uses it, 'yes' requires it.
    assert compute_plan(_train()).device_type == default_device().type
    assert compute_plan(_train("train.use_gpu=no")).device_type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.use_gpu=yes but this machine has no CUDA"):
            compute_plan(_train("train.use_gpu=yes"))


def test_the_ray_trial_takes_backend_and_gpus_from_the_plan(tmp_path):
    """What production runs: build_trainer's TorchTrainer (no Ray needed to build it)."""
    gpu = build_trainer(load_config("quickstart", ["train.use_gpu=yes", f"storage.uri={tmp_path}"]))
    assert gpu.backend_config.backend == "nccl" and gpu.scaling_config.use_gpu
    cpu = build_trainer(load_config("quickstart", ["train.use_gpu=no", f"storage.uri={tmp_path}"]))
    assert cpu.backend_config.backend == "gloo" and not cpu.scaling_config.use_gpu


@pytest.mark.parametrize("arch", list_archs())
def test_channels_last_converts_only_4d_tensors_of_every_arch(arch):
    cfg = load_config("quickstart", [f"model.arch={arch}", "model.ngf=8", "model.ndf=8"])
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    G.eval()
    D.eval()
    z, x = torch.randn(2, G.latent_dim), torch.rand(2, 1, 32, 32) * 2 - 1
    want_g, want_d = G(z), D(x)
    shapes = {n: p.shape for n, p in [*G.named_parameters(), *G.named_buffers()]}
    to_channels_last(G)
    to_channels_last(D)
    for module in (G, D):
        for t in [*module.parameters(), *module.buffers()]:
            if t.dim() == 4:
                assert t.is_contiguous(memory_format=torch.channels_last)
    assert {n: p.shape for n, p in [*G.named_parameters(), *G.named_buffers()]} == shapes
    # float32 rounding differs between memory formats; instance norm (stylegan) scales it with the output.
    tol = 1e-5 * max(1.0, float(want_g.abs().max()))
    assert torch.allclose(G(z), want_g, atol=tol) and torch.allclose(D(x), want_d, atol=1e-5)


def test_batches_follow_the_memory_format_they_are_given():
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)  # C=1 is both layouts
    for channels_last in (True, False):
        b = Batches(images, list(range(8)), 4, 0, DistContext(device=CPU), channels_last=channels_last)
        x = next(b.epoch(1))
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert x.is_contiguous() != channels_last


def test_single_process_context_is_identity():
    ctx = DistContext(device=CPU)
    t = torch.arange(3.0)
    assert ctx.is_main and not ctx.distributed
    assert torch.equal(ctx.all_reduce_sum(t), t) and torch.equal(ctx.all_gather_cat(t), t)
    assert ctx.broadcast_object({"a": 1}) == {"a": 1}
    m = torch.nn.Linear(2, 2)
    assert unwrap(m) is m


def test_noise_slices_tile_the_global_batch():
    """Rank r of W takes rows [r*B/W, (r+1)*B/W) of the noise one process would draw."""
    full = sample_slice(torch.Generator().manual_seed(3), 8, (4,), DistContext(device=CPU))
    parts = [
        sample_slice(torch.Generator().manual_seed(3), 8, (4,), DistContext(r, 2, torch.device("cpu")))
        for r in range(2)
    ]
    assert torch.equal(torch.cat(parts), full)


def test_mixed_precision_step_runs_under_autocast():
    """The AMP path (bf16 autocast) is exercised on CPU, where autocast supports bf16."""
    cfg = load_config("quickstart", ["model.ngf=8", "model.ndf=8"])
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    opt_g, opt_d = build_optimizers(G, D, cfg.optim)
    state = GanState(G, D, opt_g, opt_d, torch.Generator().manual_seed(0), amp_dtype=torch.bfloat16)
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    out = gan_step(state, real, cfg.train, cfg.optim, DistContext(device=CPU))
    assert all(torch.isfinite(v) for v in out.values())


def test_run_name_is_stable_and_ignores_storage():
    a = load_config("quickstart", ["storage.uri=/x"])
    b = load_config("quickstart", ["storage.uri=s3://bucket/y"])
    c = load_config("quickstart", ["optim.lr=1e-3"])
    assert run_name_for(a) == run_name_for(b) != run_name_for(c)
    assert run_name_for(a).startswith("dcgan-")
    assert run_name_for(load_config("quickstart", ["storage.run_name=mine"])) == "mine"
