"""Label inference from the classifier-bias gradient (iDLG and its batch version): which classes, how many."""
from __future__ import annotations

import time

import torch

from .. import families
from ..checks import check_int
from .base import Callback, Knowledge, Reconstruction, SharedUpdate
from .registry import register


def head_tensor(update: dict[str, torch.Tensor], attr: str = "bias") -> torch.Tensor | None:
    """The gradient (or delta) of the head's last linear layer's ``attr`` (``weight`` or ``bias``) in a shared
    update (BERT's ``classifier``, MPNet's ``classifier.out_proj``), or ``None`` when the head is not shared."""
    for family in families.FAMILIES.values():
        if family.head_linear is None:
            continue
        inside = family.head_linear[len(family.head):]
        ends = (f"{family.head_linear}.{attr}", f"{family.head}.modules_to_save.default{inside}.{attr}")
        names = [n for n in update if n.endswith(ends)]
        if names:
            return update[names[0]]
    return None


def head_bias_gradient(update: dict[str, torch.Tensor]) -> torch.Tensor:
    """The gradient (or delta) of the classification head's bias in a shared update."""
    bias = head_tensor(update, "bias")
    if bias is None:
        raise ValueError("the update holds no classifier bias: label inference needs the head to be shared "
                         "(and a classifier: a decoder has no label).")
    return bias


def _bias_gradient(update: dict[str, torch.Tensor], kind: str, lr: float | None) -> torch.Tensor:
    """``dL/db`` in float64; a delta ``−lr·dL/db`` (one local SGD step) is turned back into a gradient."""
    if kind not in ("gradient", "delta"):
        raise ValueError(f"kind must be 'gradient' or 'delta', got {kind!r}.")
    g = head_bias_gradient(update).detach().double()
    return g if kind == "gradient" else -g / (1.0 if lr is None else lr)


def classes_present(update: dict[str, torch.Tensor], kind: str = "gradient") -> set[int]:
    """Classes that are certainly in the batch: those whose bias-gradient entry is negative.

    ``dL/db_c = mean_i p_ic − k_c/n`` is negative only if some sentence has class ``c`` (``k_c > 0``).
    The converse can fail: a class the model already predicts confidently may be present with a
    positive entry, so this set can miss classes but never contains a wrong one.
    """
    return {int(c) for c in torch.nonzero(_bias_gradient(update, kind, None) < 0).flatten()}


def _counts(estimate: torch.Tensor, batch_size: int) -> list[int]:
    """Round non-negative class counts so that they sum to ``batch_size`` (largest remainder first)."""
    estimate = estimate.clamp(min=0)
    counts = torch.floor(estimate)
    while counts.sum() < batch_size:
        counts[torch.argmax(estimate - counts)] += 1
    while counts.sum() > batch_size:
        room = torch.where(counts > 0, estimate - counts, torch.full_like(counts, float("inf")))
        counts[torch.argmin(room)] -= 1
    return [int(c) for c in counts]


def infer_labels(update: dict[str, torch.Tensor], batch_size: int = 1, kind: str = "gradient",
                 mean_probs: torch.Tensor | None = None, lr: float | None = None) -> list[int]:
    """The sorted labels of a batch, read from the head-bias gradient.

    Cross-entropy gives ``dL/db_c = p̄_c − k_c/n`` with ``p̄_c`` the batch's mean predicted probability
    of class ``c`` and ``k_c`` its count. At batch size 1 only the true class's entry is negative, so the
    label is exact. For ``n > 1`` the server does not know ``p̄``; it uses ``mean_probs`` (default uniform,
    right for a freshly initialised head) and estimates ``k_c = n·(p̄_c − dL/db_c)``, which is exact while
    the model's mean prediction stays within ``1/(2n)`` of ``mean_probs``. A FedAvg weight delta
    (``kind="delta"``) is ``−lr·dL/db`` after one local SGD step: its sign gives the label at batch
    size 1, and counting a larger batch needs ``lr`` (pass ``lr · local_steps`` after several steps);
    without it the classes present are returned, the rest filled with the most negative class (a guess).
    """
    check_int(batch_size, "batch size")
    g = _bias_gradient(update, kind, lr)
    if batch_size == 1:
        return [int(torch.argmin(g))]
    if kind == "delta" and lr is None:  # no scale: only the sign is known, so guess
        present = sorted(classes_present(update, kind)) or [int(torch.argmin(g))]
        return sorted(present + [int(torch.argmin(g))] * (batch_size - len(present)))[:batch_size]
    if mean_probs is None:
        mean_probs = torch.full_like(g, 1.0 / g.numel())
    mean_probs = torch.as_tensor(mean_probs, dtype=torch.float64, device=g.device)
    if mean_probs.shape != g.shape:
        raise ValueError(f"mean_probs needs one probability per class ({g.numel()}), got shape "
                         f"{tuple(mean_probs.shape)}.")
    counts = _counts(batch_size * (mean_probs - g), batch_size)
    return [c for c, k in enumerate(counts) for _ in range(k)]


@register("labels", "the labels of the batch from the head-bias gradient (iDLG and its batch count)",
          "none: read off in one step", rebuilds_text=False)
class LabelInference:
    """``infer_labels`` as an ``Attack``: no text, only ``Reconstruction.labels`` (sorted)."""

    name = "labels"

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        start = time.perf_counter()
        labels = infer_labels(shared.update, knowledge.sentences(shared), shared.kind,
                              lr=shared.setup.lr * shared.setup.local_steps if shared.kind == "delta" else None)
        return Reconstruction([], [], labels, self.name, time.perf_counter() - start)
