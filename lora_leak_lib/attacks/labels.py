"""Label inference from the classifier-bias gradient (iDLG): the true class is the one with a negative entry."""
from __future__ import annotations

import torch


def head_bias_gradient(update: dict[str, torch.Tensor]) -> torch.Tensor:
    """The gradient (or delta) of the classification head's bias in a shared update."""
    names = [n for n in update if n.endswith("classifier.bias") or n.endswith("classifier.modules_to_save.default.bias")]
    if not names:
        raise ValueError("the update holds no classifier bias: label inference needs the head to be shared.")
    return update[names[0]]


def infer_labels(update: dict[str, torch.Tensor], batch_size: int = 1, kind: str = "gradient") -> list[int]:
    """Labels of a batch read from the head bias.

    For cross-entropy, ``dL/db_c = mean_i (p_ic − y_ic)``: at batch size 1 only the true class is negative.
    For larger batches the most negative entries give the classes present, one per sentence as far as
    they can be read (a class that appears twice is counted by the depth of its entry). A weight delta
    (``kind="delta"``) has the opposite sign.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}.")
    g = head_bias_gradient(update).detach().double()
    if kind == "delta":
        g = -g
    if batch_size == 1:
        return [int(torch.argmin(g))]
    # Each sentence of class c adds (p_c - 1)/n <= 0 to entry c: estimate counts from how negative it is.
    counts = torch.clamp(torch.round(-g * batch_size / (1.0 - 1.0 / g.numel())), min=0).long()
    labels = [c for c in torch.argsort(g).tolist() for _ in range(int(counts[c]))]
    while len(labels) < batch_size:
        labels.append(int(torch.argmin(g)))
    return sorted(labels[:batch_size])
