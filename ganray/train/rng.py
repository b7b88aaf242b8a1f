"""Every random stream a resumed run must continue, as checkpoint-safe plain values.

CPU torch RNG, the RNG of each CUDA device, the noise generator (which lives
on the run's device), numpy and python. Saved in the checkpoint under 'rng'
as tensors and plain lists/dicts (loadable with weights_only=True).
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch

from ganray import checkpoint as ckpt

log = logging.getLogger("ganray.train")


def capture_rng(noise: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The state of every RNG the run draws from."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "noise": noise.get_state(),  # a CPU byte tensor, also for a CUDA generator
        "numpy": ckpt.numpy_rng_to_plain(np.random.get_state()),
        "python": ckpt.python_rng_to_plain(random.getstate()),
    }


def restore_rng(rng: dict[str, Any], noise: torch.Generator, device: torch.device) -> None:
    """Set every RNG from ``capture_rng``'s output (CUDA states only where CUDA is used)."""
    torch.set_rng_state(rng["torch"])
    cuda = rng.get("cuda") or []
    if cuda and device.type == "cuda":
        n = torch.cuda.device_count()
        if n != len(cuda):
            log.warning(
                "the checkpoint holds CUDA RNG states of %d device(s); this process sees %d", len(cuda), n
            )
        for i, state in enumerate(cuda[:n]):
            torch.cuda.set_rng_state(state, i)
    noise.set_state(rng["noise"])
    np.random.set_state(ckpt.numpy_rng_from_plain(rng["numpy"]))
    random.setstate(ckpt.python_rng_from_plain(rng["python"]))


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors in a nested dict/list moved to ``device`` (checkpoints load on the CPU)."""
    if torch.is_tensor(obj):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_device(v, device) for v in obj]
    return obj
