"""Load a trained generator from a checkpoint and sample images from it.

A checkpoint carries its own config (see ganray.checkpoint), so nothing else is
needed: config -> ``ganray.models.build_models`` -> the EMA generator's weights
if the run kept one (``train.ema_decay > 0``), else the trained generator's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ganray import checkpoint as ckpt
from ganray.config import Config, build_config
from ganray.storage import Storage


def generator_from_state(state: dict[str, Any], use_ema: bool = True) -> tuple[nn.Module, Config, str]:
    """(G in eval mode on CPU, the run's config, which weights: 'G_ema' or 'G') from a checkpoint dict."""
    from ganray.models import build_models

    if "config" not in state or "G" not in state:
        raise ckpt.CheckpointError("not a ganray training checkpoint: it has no 'config' or 'G'")
    cfg = build_config(state["config"])
    G, _ = build_models(cfg.model)
    which = "G_ema" if use_ema and "G_ema" in state else "G"
    G.load_state_dict(state[which])
    extra = state.get("extra", {})
    if hasattr(G, "set_stage") and "resolution" in extra:  # a progressive run: its current stage
        G.set_stage(int(extra["resolution"]), float(extra["alpha"]))
    return G.eval().requires_grad_(False), cfg, which


def sidecar_sha(storage: Storage, uri: str) -> str | None:
    """The sha256 in ``uri``'s sidecar (None without one); CheckpointError if the sidecar is corrupt."""
    sidecar = uri[: -len(".pt")] + ".json" if uri.endswith(".pt") else None
    if sidecar and storage.exists(sidecar):
        try:
            meta = json.loads(storage.read_bytes(sidecar))
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
            raise ckpt.CheckpointError(
                f"sidecar {sidecar} is corrupt (not a JSON object with a sha256), so {uri} cannot be "
                f"verified; restore the sidecar, or pull the checkpoint again"
            )
        return meta["sha256"]
    return None


def load_generator(
    uri: str, storage: Storage | None = None, use_ema: bool = True
) -> tuple[nn.Module, Config, str]:
    """Load G from a checkpoint file (local path or URI), verified against its sidecar when present."""
    storage = storage or Storage()
    state = ckpt.load_checkpoint(storage, uri, sidecar_sha(storage, uri))
    return generator_from_state(state, use_ema)


def seed_noise(seeds: list[int], latent_dim: int) -> torch.Tensor:
    """z [len(seeds), latent_dim]: row i from its own seed, so an image depends on its seed alone."""
    return torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.no_grad()
def sample_seeds(G: nn.Module, seeds: list[int], batch: int = 256) -> Iterator[torch.Tensor]:
    """Images in [-1, 1] ([b, C, R, R]) for ``seeds``, ``batch`` at a time (bounded memory)."""
    for i in range(0, len(seeds), batch):
        yield G(seed_noise(seeds[i : i + batch], G.latent_dim)).clamp(-1, 1)


@torch.no_grad()
def sample(G: nn.Module, n: int, seed: int = 0, batch: int = 256) -> torch.Tensor:
    """``n`` images in [-1, 1] ([n, C, R, R]) from fixed-seed noise z ~ N(0, I)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.latent_dim, generator=gen)
    return torch.cat([G(z[i : i + batch]) for i in range(0, n, batch)]).clamp(-1, 1)
