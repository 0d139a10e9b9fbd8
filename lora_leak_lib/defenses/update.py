"""Defences that transform a client's update before it leaves: clipping, noise, top-k, quantisation, no head."""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

from ..arrays import randn
from ..checks import check_int

Update = OrderedDict[str, torch.Tensor]


def check_update(update: dict[str, torch.Tensor]) -> None:
    """Raise one clear error unless ``update`` maps tensor names to floating-point tensors."""
    if not isinstance(update, dict) or not update:
        raise ValueError("an update is a non-empty dict of tensor name -> tensor: pass a client's update.")
    bad = [n for n, t in update.items() if not torch.is_tensor(t) or not t.is_floating_point()]
    if bad:
        raise ValueError(f"update entry {bad[0]!r} is not a floating-point tensor: pass gradients or deltas.")


def update_norm(update: dict[str, torch.Tensor]) -> float:
    """The L2 norm of a whole update, all tensors flattened into one vector."""
    check_update(update)
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in update.values()))


def clip_update(update: dict[str, torch.Tensor], max_norm: float) -> Update:
    """Scale the whole update so that its L2 norm is at most ``max_norm`` (its direction is kept)."""
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm!r}: try 1.0.")
    norm = update_norm(update)
    factor = min(1.0, max_norm / norm) if norm > 0 else 1.0
    return OrderedDict((n, t * factor) for n, t in update.items())


def add_noise(update: dict[str, torch.Tensor], std: float, seed: int = 0) -> Update:
    """Add independent Gaussian noise of standard deviation ``std`` to every entry (seeded, reproducible)."""
    check_update(update)
    if not std >= 0:
        raise ValueError(f"noise std must be zero or positive, got {std!r}: try 0.01.")
    generator = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (n, t + std * randn(t.shape, like=t, generator=generator)) for n, t in update.items()
    )


def top_k(update: dict[str, torch.Tensor], fraction: float) -> Update:
    """Keep the ``fraction`` of entries with the largest magnitude in every tensor; zero the rest."""
    check_update(update)
    if not 0 < fraction <= 1:
        raise ValueError(f"top-k fraction must be in (0, 1], got {fraction!r}: try 0.1 to keep 10%.")
    sparse = OrderedDict()
    for name, t in update.items():
        k = max(1, math.ceil(fraction * t.numel()))
        flat = t.flatten()
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[flat.abs().topk(k).indices] = True
        sparse[name] = torch.where(keep, flat, torch.zeros_like(flat)).reshape(t.shape)
    return sparse


def quantisation_step(t: torch.Tensor, bits: int) -> float:
    """The step of symmetric uniform quantisation of ``t`` to ``bits`` bits: ``max|t| / (2^(bits-1) - 1)``."""
    levels = 2 ** (bits - 1) - 1
    return float(t.abs().max()) / levels


def quantise(update: dict[str, torch.Tensor], bits: int) -> Update:
    """Round every tensor to ``bits``-bit signed integers times one scale per tensor, and back.

    What the server receives: each entry within half a step of the original (the step is
    ``quantisation_step``); ``bits=8`` sends a quarter of the bytes of float32.
    """
    check_update(update)
    check_int(bits, "bits", 2, 16, hint="try 8 or 4")
    out = OrderedDict()
    for name, t in update.items():
        step = quantisation_step(t, bits)
        out[name] = torch.round(t / step) * step if step > 0 else t.clone()
    return out
