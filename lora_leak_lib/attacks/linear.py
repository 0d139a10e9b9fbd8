"""The exact leak of a linear layer with a bias: its input is a weight-gradient row over a bias-gradient entry."""
from __future__ import annotations

import torch


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
