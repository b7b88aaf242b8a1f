"""Generator/discriminator architectures behind one registry.

Importing this package registers every family; use ``build_models(cfg.model)``.
Networks are pure ``nn.Module``s: optimizers, DDP and Ray are applied elsewhere.
"""

from ganray.models import dcgan, progan, stylegan, stylegan2  # noqa: F401  (register the families)
from ganray.models.registry import build_models, list_archs, register_arch, uses_batch_stats

__all__ = ["build_models", "list_archs", "register_arch", "uses_batch_stats"]
