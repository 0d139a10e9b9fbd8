"""Where tensors meet numpy and seeded random draws: the one module that crosses between the CPU and the device.

Every other module follows its inputs' device. Numbers go to numpy through ``to_numpy`` (which brings them to the
CPU first) and come back through ``from_numpy(..., like=)`` (which puts them where ``like`` lives). Random draws
are made on the CPU from a seeded generator and then moved to ``like``, so a seed gives the same draw on any device.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def to_numpy(value) -> np.ndarray:
    """``value`` as a numpy array: a tensor wherever it lives (detached, copied to the CPU first when it is
    elsewhere), an object with its own ``numpy()`` (Flower's ``Array``), or anything ``np.asarray`` takes."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def from_numpy(array: np.ndarray | Sequence, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``array`` as a tensor on ``like``'s device, in ``dtype`` (default: ``like``'s dtype)."""
    tensor = torch.from_numpy(np.array(array))  # a copy: the tensor never shares a caller's buffer
    return tensor.to(device=like.device, dtype=like.dtype if dtype is None else dtype)


def randn(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None = None,
          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Standard normal draws of ``shape`` made on the CPU (from ``generator``, else torch's global seed), then
    moved to ``like``'s device in ``dtype`` (default ``like``'s, when it is a float type, else float32)."""
    if dtype is None:
        dtype = like.dtype if like.dtype.is_floating_point else torch.float32
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device="cpu").to(like.device)


def integers(rng: np.random.Generator, low: int, high: int, like: torch.Tensor) -> torch.Tensor:
    """Uniform integers in ``[low, high)`` drawn by numpy's ``rng`` (it reaches 2^62, as torch's ``randint``
    does not), int64, shaped like ``like`` and on its device."""
    return from_numpy(rng.integers(low, high, size=tuple(like.shape), dtype=np.int64), like, dtype=torch.int64)
