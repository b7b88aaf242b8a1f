"""Look inside a network: first-layer filters, a block's activations, the printed architecture.

Works on any nn.Module (every family, G and D, with or without a mapping
network; ganray.style's versions need a mapping network), by walking its
modules: the "first layer" is the first module owning a 4-D weight (a conv,
transposed conv or modulated conv), a "block" is any such module picked by
position.
"""

from __future__ import annotations

import torch
from torch import nn

from ganray.style import to_unit

MAX_TILES = 64  # filters / channels shown per grid


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module that owns a 4-D weight, in registration order."""
    out = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor):
            w = getattr(m, "weight_orig", None)  # old-style spectral norm
        # 4-D convs; 5-D [1, out, in, k, k] modulated convs
        if isinstance(w, torch.Tensor) and (w.dim() == 4 or (w.dim() == 5 and w.shape[0] == 1)):
            out.append((name, m))
    return out


@torch.no_grad()
def first_layer_filters(model: nn.Module) -> tuple[str, torch.Tensor] | None:
    """(layer name, up to MAX_TILES filters as images [N, C, k, k] in [-1, 1]); RGB when the layer
    sees 3 channels, else one grey tile per (output, input) kernel pair."""
    layers = conv_layers(model)
    if not layers:
        return None
    name, m = layers[0]
    w = m.weight.detach().float().cpu()
    w = w[0] if w.dim() == 5 else w  # modulated conv: [1, out, in, k, k]
    if isinstance(m, nn.ConvTranspose2d):
        w = w.transpose(0, 1)  # stored [in, out, k, k]; show one filter per output channel
    if w.shape[1] != 3:
        w = w.reshape(-1, 1, *w.shape[-2:])
    return name, to_unit(w[:MAX_TILES])


@torch.no_grad()
def block_activations(G: nn.Module, z: torch.Tensor, which: int) -> tuple[str, torch.Tensor] | None:
    """(block name, the output channels of G's ``which``-th conv layer for the first latent of ``z``,
    as grey images [C, 1, H, W] in [-1, 1]); ``which`` may be negative (from the end)."""
    layers = conv_layers(G)
    if not layers:
        return None
    name, m = layers[which]
    seen: list[torch.Tensor] = []
    handle = m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    try:
        G(z[:1])
    finally:
        handle.remove()
    if not seen or seen[0].dim() != 4:
        return None
    act = seen[0][0].float().cpu()[:MAX_TILES]  # [C, H, W] of the first image
    return name, to_unit(act.unsqueeze(1))


def architecture(model: nn.Module, title: str) -> str:
    """The module tree, one line per module: indented name, class, parameters (own + below)."""
    lines = [f"{title}: {type(model).__name__}, {count(model):,} parameters"]
    for name, m in model.named_modules():
        if not name:
            continue
        depth = name.count(".") + 1
        extra = m.extra_repr()
        lines.append(
            f"{'  ' * depth}{name.rsplit('.', 1)[-1]}: {type(m).__name__}"
            + (f"({extra})" if extra and len(extra) < 80 else "")
            + f"  [{count(m):,}]"
        )
    return "\n".join(lines)


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
