"""Per-block mixed precision (NVlabs' ``num_fp16_res``): the highest resolutions in a reduced dtype.

A block built with ``use_fp16=True`` computes in ``block.low_dtype`` once a
caller sets it (``set_block_dtype``); until then, and whenever it is None,
every block computes in fp32. Parameters stay fp32 (weights are cast per
forward), and the network's boundaries stay fp32: the mapping network, G's
image (the toRGB outputs are summed in fp32) and D's 4x4 epilogue and logit.

Who sets the dtype: the Trainer, from ``ComputePlan.block_dtype`` (fp16 on
CUDA, None on CPU), so a CPU run, a fresh ``load_generator`` and every test
that does not ask for it are fp32. Models with such blocks replace autocast
for the run (see ganray/train/distributed.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def fp16_resolution(resolution: int, num_fp16_res: int) -> int:
    """Smallest block resolution that runs reduced: the ``num_fp16_res`` highest, never below 8 px
    (NVlabs: ``max(2 ** (log2(R) + 1 - num_fp16_res), 8)``; 0 gives 2R, i.e. no block)."""
    return max(2 ** (int(math.log2(resolution)) + 1 - num_fp16_res), 8)


def block_dtype(block: nn.Module) -> torch.dtype:
    """The dtype ``block`` computes in now: its ``low_dtype`` if it is a reduced block and one is set."""
    low = getattr(block, "low_dtype", None)
    return low if getattr(block, "use_fp16", False) and low is not None else torch.float32


def set_block_dtype(model: nn.Module, dtype: torch.dtype | None) -> int:
    """Give every reduced block (``use_fp16``) of ``model`` the dtype ``dtype`` (None = fp32).

    Returns how many blocks are reduced: 0 means the model has no per-block
    precision (autocast is then the run's mixed precision, as for DCGAN).
    """
    blocks = [m for m in model.modules() if getattr(m, "use_fp16", False)]
    for m in blocks:
        m.low_dtype = dtype
    return len(blocks)
