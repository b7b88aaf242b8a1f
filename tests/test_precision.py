"""Per-block mixed precision of StyleGAN2 (num_fp16_res, conv_clamp): which blocks, which dtypes, clamping.

No GPU here: the reduced blocks run in real fp16 on the CPU (torch >= 2.x has
CPU fp16 convolutions), set by hand as the Trainer sets them on CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

from ganray.models import build_models
from ganray.models.ops import EqualConv2d
from ganray.models.precision import fp16_resolution, set_block_dtype
from ganray.models.stylegan2 import SynthesisLayer, ToRGB
from ganray.optim import build_optimizers
from ganray.train.distributed import DistContext, compute_plan
from ganray.train.loop import Trainer
from ganray.train.step import GanState, gan_step, grad_scalers
from tests.test_stylegan2_train import tiny_cfg as tiny

CPU = torch.device("cpu")


def models(*extra):
    torch.manual_seed(0)
    return build_models(tiny(*extra).model)


def block_outputs(G, D, z):
    """Output dtype of every G and D block (and G's image, D's logits) for one forward."""
    seen: dict[str, torch.dtype] = {}

    def hook(name):
        return lambda _m, _i, out: seen.__setitem__(name, out[0].dtype)

    handles = [b.register_forward_hook(hook(f"G{b.res}")) for b in G.synthesis.blocks]
    handles += [b.register_forward_hook(hook(f"D{r}")) for r, b in zip(D.resolutions, D.blocks)]
    handles.append(G.mapping_net.register_forward_hook(lambda _m, _i, out: seen.__setitem__("w", out.dtype)))
    img = G(z)
    logits = D(img)
    for h in handles:
        h.remove()
    return img, logits, seen


def test_fp16_resolution_is_the_n_highest_never_below_8px():
    assert fp16_resolution(32, 4) == 8  # 32, 16, 8 (4 would be the 4th, but 4 px stays fp32)
    assert fp16_resolution(32, 1) == 32
    assert fp16_resolution(32, 2) == 16
    assert fp16_resolution(256, 4) == 32  # 256, 128, 64, 32
    assert fp16_resolution(32, 0) == 64  # no block


@pytest.mark.parametrize(
    ("n", "g_low", "d_low"), [(2, [16, 32], [32, 16]), (4, [8, 16, 32], [32, 16, 8]), (0, [], [])]
)
def test_the_highest_blocks_are_flagged_in_g_and_d(n, g_low, d_low):
    G, D = models(f"model.stylegan2.num_fp16_res={n}")
    assert [b.res for b in G.synthesis.blocks if b.use_fp16] == g_low
    assert [r for r, b in zip(D.resolutions, D.blocks) if b.use_fp16] == d_low
    assert set_block_dtype(G, torch.float16) + set_block_dtype(D, torch.float16) == len(g_low) + len(d_low)


def test_fp16_blocks_forward_and_backward_on_cpu_with_fp32_boundaries():
    """Real fp16 in the top blocks (16, 32 px), fp32 below and at the boundaries; close to all-fp32."""
    G, D = models("model.stylegan2.num_fp16_res=2")
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    ref_img, ref_logits, ref_seen = block_outputs(G, D, z)
    assert set(ref_seen.values()) == {torch.float32}  # nothing set: every block fp32
    set_block_dtype(G, torch.float16)
    set_block_dtype(D, torch.float16)
    torch.manual_seed(5)  # same random noise inputs
    img, logits, seen = block_outputs(G, D, z)
    half = {k for k, v in seen.items() if v == torch.float16}
    assert half == {"G16", "G32", "D32", "D16"}
    assert seen["w"] == seen["G4"] == seen["G8"] == seen["D8"] == torch.float32
    assert img.dtype == logits.dtype == torch.float32
    assert torch.allclose(img, ref_img, atol=0.05 * ref_img.abs().max().item())
    assert torch.allclose(logits, ref_logits, atol=0.05 * ref_logits.abs().max().item() + 1e-3)
    logits.sum().backward()
    params = [*G.parameters(), *D.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    assert all(g.dtype == torch.float32 for g in grads)
    assert all(p.dtype == torch.float32 for p in params)
    assert all(torch.isfinite(g).all() for g in grads)
    assert G.synthesis.blocks[-1].conv1.weight.grad.abs().sum() > 0  # the fp16 block learns


def test_gan_steps_with_fp16_blocks_and_loss_scalers_train():
    """The GPU recipe run on the CPU: fp16 blocks, no autocast, GradScalers, every phase."""
    cfg = tiny("model.stylegan2.num_fp16_res=4")  # R1 and path length every 2 steps
    torch.manual_seed(0)
    G, D = build_models(cfg.model)
    assert set_block_dtype(G, torch.float16) == 3 and set_block_dtype(D, torch.float16) == 3
    before = [p.detach().clone() for p in G.parameters()]
    opt_g, opt_d = build_optimizers(G, D, cfg.optim, cfg.train.reg)
    scaler_g, scaler_d = grad_scalers(torch.float16, CPU)
    state = GanState(
        G, D, opt_g, opt_d, torch.Generator().manual_seed(1), scaler_g=scaler_g, scaler_d=scaler_d
    )
    real = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    for _ in range(4):
        out = gan_step(state, real, cfg.train, cfg.optim, DistContext(device=CPU))
        assert math.isfinite(out["d_loss"].item()) and math.isfinite(out["g_loss"].item())
    assert math.isfinite(state.extra["pl_mean"]) and state.extra["pl_mean"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))
    assert all(p.dtype == torch.float32 for p in G.parameters())


def test_cpu_runs_stay_fp32_and_cuda_plans_choose_the_block_dtype(tmp_path):
    plan = lambda *o: compute_plan(tiny(*o).train, gpu=True)  # noqa: E731
    assert plan().block_dtype is torch.float16  # auto: NVlabs' fp16 blocks (autocast stays bf16)
    assert plan("train.amp=bf16").block_dtype is torch.bfloat16
    assert plan("train.amp=off").block_dtype is None
    assert compute_plan(tiny("train.amp=fp16").train, gpu=False).block_dtype is None
    cfg = tiny(
        f"storage.uri={tmp_path}",
        "data.subset=200",
        "train.max_steps_per_epoch=1",
        "metrics.fid=false",
        "train.use_gpu=no",  # what a CUDA-less machine gets with auto
    )
    trainer = Trainer(cfg, DistContext(device=CPU))
    s = trainer.state
    blocks = [m for net in (s.G, s.D, s.G_ema) for m in net.modules() if getattr(m, "use_fp16", False)]
    assert len(blocks) == 9  # 3 per network at num_fp16_res 4, 32 px...
    assert all(b.low_dtype is None for b in blocks)  # ...all computing in fp32
    assert s.amp_dtype is None and s.scaler_g is None and s.scaler_d is None
    img, logits, seen = block_outputs(s.G, s.D, torch.randn(2, 8))
    assert set(seen.values()) == {torch.float32}


def _clamped_layers(net):
    return [m for m in net.modules() if isinstance(m, (SynthesisLayer, ToRGB, EqualConv2d)) and m.conv_clamp]


@pytest.mark.parametrize("clamp", [0.5, 0.0])
def test_conv_clamp_bounds_every_clamped_conv_output_in_g_and_d(clamp):
    G, D = models(f"model.stylegan2.conv_clamp={clamp}", "model.stylegan2.d_arch=skip")
    with torch.no_grad():  # large biases push every conv far past the clamp
        for p in [*G.synthesis.parameters(), *D.parameters()]:
            if p.dim() == 1:
                p.fill_(50.0)
    peaks: list[float] = []
    layers = _clamped_layers(G) + _clamped_layers(D)
    handles = [
        m.register_forward_hook(lambda _m, _i, out: peaks.append(out.abs().max().item())) for m in layers
    ]
    with torch.no_grad():
        D(G(torch.randn(4, 8)))
    for h in handles:
        h.remove()
    if clamp:
        # every synthesis conv, toRGB, fromRGB and 3x3 D conv, and D's epilogue conv
        assert len(layers) == 7 + 4 + 3 + 6 + 1 and len(peaks) == len(layers)
        assert max(peaks) <= clamp + 1e-6
        assert min(peaks) > 0.3 * clamp  # the clamp is reached, not merely respected
    else:
        assert layers == []
        with torch.no_grad():
            assert G(torch.randn(4, 8)).abs().max() > 100  # unclamped, the same net blows past it
