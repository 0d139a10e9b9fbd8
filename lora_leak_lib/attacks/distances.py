"""How far a dummy gradient is from the shared one: L2 (DLG), L2 + α·L1 (TAG), cosine per tensor."""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

DISTANCES = ("l2", "tag", "cosine")
"""The gradient distances the attacks accept, by name."""


def check_distance(distance: str) -> str:
    """Return ``distance`` or raise one clear error listing the known names."""
    if distance not in DISTANCES:
        raise ValueError(f"unknown distance {distance!r}: choose one of {', '.join(DISTANCES)}.")
    return distance


def directionless(target: Sequence[torch.Tensor]) -> list[bool]:
    """Which shared tensors have no direction for the cosine distance: zero, or zero up to rounding (a norm below
    the tensor's machine epsilon times the largest shared tensor's norm)."""
    norms = torch.stack([t.detach().norm().double() for t in target]).tolist()  # one transfer, not one a tensor
    largest = max(norms, default=0.0)
    return [n <= torch.finfo(t.dtype).eps * largest for n, t in zip(norms, target)]


def gradient_distance(dummy: Sequence[torch.Tensor], target: Sequence[torch.Tensor], distance: str = "l2",
                      alpha: float = 0.01) -> torch.Tensor:
    """Distance between two lists of gradient tensors, summed over tensors.

    ``l2``: ``Σ‖g' − g‖²`` (DLG). ``tag``: ``Σ‖g' − g‖² + α‖g' − g‖₁`` (TAG). ``cosine``: ``Σ (1 − cos(g', g))``
    per tensor, blind to each tensor's scale; a tensor that is zero in the shared update adds its squared
    norm instead, since it has no direction. Zero up to rounding counts as zero: a tensor whose norm is below
    its dtype's machine epsilon times the largest shared tensor's norm (an attention key bias, whose gradient is
    exactly zero since softmax ignores a shift, comes out of float32 at about 1e-11 of the others) is rounding,
    and its direction differs between library versions and thread counts.
    """
    check_distance(distance)
    if len(dummy) != len(target):
        raise ValueError(f"{len(dummy)} dummy gradients but {len(target)} shared ones: match the same tensors.")
    total = dummy[0].new_zeros(())
    flat = directionless(target) if distance == "cosine" else [False] * len(target)
    for d, t, no_direction in zip(dummy, target, flat):
        if d.shape != t.shape:
            raise ValueError(f"a dummy gradient has shape {tuple(d.shape)} but the shared one {tuple(t.shape)}.")
        diff = d - t
        if distance == "l2":
            total = total + diff.pow(2).sum()
        elif distance == "tag":
            total = total + diff.pow(2).sum() + alpha * diff.abs().sum()
        elif no_direction:
            total = total + d.pow(2).sum()
        else:
            total = total + 1 - torch.nn.functional.cosine_similarity(d.flatten(), t.flatten(), dim=0, eps=1e-12)
    return total


def check_update_shapes(update: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size | tuple[int, ...]]) -> None:
    """Raise one clear error unless ``update`` holds exactly the ``expected`` tensor names with their shapes."""
    missing = [n for n in expected if n not in update]
    unknown = [n for n in update if n not in expected]
    if missing or unknown:
        example = f"missing {missing[0]!r}" if missing else f"unexpected {unknown[0]!r}"
        raise ValueError(
            f"the shared update does not match the model's trainable tensors ({len(missing)} missing, "
            f"{len(unknown)} unexpected, e.g. {example}): check the model name and the LoRA set-up."
        )
    for name, shape in expected.items():
        if tuple(update[name].shape) != tuple(shape):
            raise ValueError(
                f"tensor {name!r} has shape {tuple(update[name].shape)} in the update but {tuple(shape)} in the "
                f"model: check the model name, rank and targets."
            )
