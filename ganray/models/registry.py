"""The one model registry: architecture name -> builder of a (G, D) pair.

Each family module (dcgan.py, progan.py, stylegan.py, stylegan2.py) decorates
its builders with ``@register_arch(name)``. Builders take the whole
``ModelConfig`` and return ``(generator, discriminator)`` sharing one
interface, so the trainer calls ``build_models(cfg)`` and never branches on
the family name:

- every generator has ``latent_dim`` and ``forward(z [N, latent_dim]) -> images
  [N, C, R, R]`` in [-1, 1] (``stylegan2`` does not squash, as NVlabs: its
  images are near [-1, 1] and clamped where they become pixels);
- generators with a mapping network also have ``w_dim``, ``num_ws``,
  ``mapping(z) -> w`` and ``synthesis(w) -> images``;
- generators with ``noise_shapes`` (stylegan2, stylegan) also take keyword arguments
  ``mix_z``/``crossover`` (style mixing), ``noise`` (one ``[N, 1, s, s]``
  tensor per side ``s`` in ``noise_shapes``), ``psi``/``cutoff``
  (truncation), ``noise_mode`` and ``return_ws``; the training step passes
  them to the DDP-wrapped module so mapping and synthesis run under gradient;
  a growing one (stylegan) has ``active_ws``, the styles its current stage uses;
- every discriminator has ``forward(images) -> logits [N]``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ganray.config import ConfigError, ModelConfig

Builder = Callable[[ModelConfig], tuple[nn.Module, nn.Module]]

# Filled once at import time by the decorators in the family modules.
_BUILDERS: dict[str, Builder] = {}

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def register_arch(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(cfg) -> (G, D)`` under ``name``."""

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"architecture {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return decorate


def list_archs() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_BUILDERS)


def build_models(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """Build the ``(G, D)`` pair for ``cfg.arch``; weights come from torch's global RNG."""
    builder = _BUILDERS.get(cfg.arch)
    if builder is None:
        raise ConfigError(
            f"model.arch: {cfg.arch!r} is not a registered architecture; "
            f"registered: {', '.join(list_archs())}"
        )
    return builder(cfg)


def uses_batch_stats(module: nn.Module) -> bool:
    """True if any submodule is a BatchNorm, i.e. outputs depend on the whole batch.

    Distributed training needs this: such modules want SyncBatchNorm (or care
    about per-rank batch statistics) and must see real and fake batches in
    separate forward passes.
    """
    return any(isinstance(m, _BATCH_NORMS) for m in module.modules())
