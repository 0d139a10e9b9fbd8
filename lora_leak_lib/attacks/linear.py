"""The exact leak of a linear layer with a bias: its input is a weight-gradient row over a bias-gradient entry."""
from __future__ import annotations

import time

import torch

from .base import Callback, Knowledge, Reconstruction, SharedUpdate
from .labels import head_bias_gradient, head_tensor
from .registry import register


def linear_leak(weight_gradient: torch.Tensor, bias_gradient: torch.Tensor) -> torch.Tensor:
    """The input ``x`` of ``y = W x + b`` recovered from one sample's gradients.

    Shapes: ``dL/dW`` (d_out, d_in) ``= δ xᵀ`` and ``dL/db`` (d_out,) ``= δ`` with ``δ = dL/dy``, so every
    row ``i`` with ``δ_i ≠ 0`` gives ``x = (dL/dW)_i / (dL/db)_i``. We combine all rows by least squares,
    ``x = δᵀ dL/dW / δᵀδ``, which is exact for one sample and robust to rows where ``δ_i`` is tiny.
    """
    if weight_gradient.dim() != 2 or bias_gradient.dim() != 1:
        raise ValueError("pass dL/dW as a (d_out, d_in) matrix and dL/db as a (d_out,) vector.")
    if weight_gradient.shape[0] != bias_gradient.shape[0]:
        raise ValueError(
            f"dL/dW has {weight_gradient.shape[0]} rows but dL/db has {bias_gradient.shape[0]} entries: "
            "pass the weight and bias gradients of the same layer."
        )
    delta = bias_gradient.detach().double()
    norm = delta.pow(2).sum()
    if norm == 0:
        raise ValueError("the bias gradient is zero: this sample taught the layer nothing, so no input leaks.")
    return (delta @ weight_gradient.detach().double() / norm).to(weight_gradient.dtype)


def head_weight_gradient(update: dict[str, torch.Tensor]) -> torch.Tensor:
    """The gradient of the classification head's weight (``num_labels × hidden``)."""
    weight = head_tensor(update, "weight")
    if weight is None:
        raise ValueError("the update holds no classifier weight: the pooled output needs the head to be shared.")
    return weight


def pooled_output(update: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pooled sentence vector of a batch-1 update, exactly: ``dL/dW_c = (p_c − y_c)·h`` and ``dL/db_c = p_c − y_c``.

    ``linear_leak`` on the head gives ``h``, the input of the head (the pooler output of [CLS] in the last
    layer), whatever the round.
    """
    bias = head_bias_gradient(update).detach().double()
    if float(bias.abs().max()) == 0.0:
        raise ValueError("the head-bias gradient is zero: the model is already certain, nothing can be divided.")
    return linear_leak(head_weight_gradient(update).detach().double(), bias)


@register("head-leak", "the pooled sentence vector from the head's gradients (the linear leak), exact at batch 1",
          "none: one division", rebuilds_text=False)
class HeadLeak:
    """The linear leak on the classification head: ``Reconstruction.inputs`` is the pooled vector ``h``."""

    name = "head-leak"

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        if knowledge.sentences(shared) != 1:
            raise ValueError("the head leak divides one sentence's gradients: it needs a message of batch size 1.")
        start = time.perf_counter()
        h = pooled_output(shared.update)
        labels = [int(torch.argmin(head_bias_gradient(shared.update)))] if knowledge.labels is None \
            else list(knowledge.labels)
        return Reconstruction([], [], labels, self.name, time.perf_counter() - start, inputs=h[None])
