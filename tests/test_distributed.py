"""Rank helpers and the GPU switches that must turn on by themselves where CUDA exists."""

import torch

from ganray.config import load_config
from ganray.models import build_models
from ganray.optim import build_optimizers
from ganray.train.distributed import DistContext, backend_for, default_device, unwrap
from ganray.train.loop import amp_dtype_for, run_name_for
from ganray.train.step import GanState, gan_step, sample_slice


def test_backend_and_device_follow_cuda():
    assert backend_for(torch.device("cuda")) == "nccl"
    assert backend_for(torch.device("cpu")) == "gloo"
    assert default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_amp_only_on_cuda():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert amp_dtype_for("auto", cuda) is torch.bfloat16
    assert amp_dtype_for("fp16", cuda) is torch.float16
    assert amp_dtype_for("off", cuda) is None
    assert amp_dtype_for("auto", cpu) is None and amp_dtype_for("fp16", cpu) is None


def test_single_process_context_is_identity():
    ctx = DistContext(device=torch.device("cpu"))
    t = torch.arange(3.0)
    assert ctx.is_main and not ctx.distributed
    assert torch.equal(ctx.all_reduce_sum(t), t) and torch.equal(ctx.all_gather_cat(t), t)
    assert ctx.broadcast_object({"a": 1}) == {"a": 1}
    m = torch.nn.Linear(2, 2)
    assert unwrap(m) is m


def test_noise_slices_tile_the_global_batch():
    """Rank r of W takes rows [r*B/W, (r+1)*B/W) of the noise one process would draw."""
    full = sample_slice(torch.Generator().manual_seed(3), 8, (4,), DistContext(device=torch.device("cpu")))
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
    out = gan_step(state, real, cfg.train, cfg.optim, DistContext(device=torch.device("cpu")))
    assert all(torch.isfinite(v) for v in out.values())


def test_run_name_is_stable_and_ignores_storage():
    a = load_config("quickstart", ["storage.uri=/x"])
    b = load_config("quickstart", ["storage.uri=s3://bucket/y"])
    c = load_config("quickstart", ["optim.lr=1e-3"])
    assert run_name_for(a) == run_name_for(b) != run_name_for(c)
    assert run_name_for(a).startswith("dcgan-")
    assert run_name_for(load_config("quickstart", ["storage.run_name=mine"])) == "mine"
