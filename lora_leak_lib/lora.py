"""LoRA by hand (the teaching version) and through peft (what clients really run), plus parameter counts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from . import families, models
from .checks import check_int, check_rank


class LoRALinear(nn.Module):
    """``y = W x + b + (alpha/r) · B A x`` with ``W`` frozen, ``A`` random and ``B`` zero at the start.

    Shapes: ``W`` (d_out, d_in), ``A`` (r, d_in), ``B`` (d_out, r). Initialised like peft: ``A`` with
    Kaiming-uniform (a=√5), ``B`` with zeros, so the adapted layer starts equal to the frozen one.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        check_rank(rank)
        self.base = base
        for parameter in self.base.parameters():
            parameter.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        like = dict(device=base.weight.device, dtype=base.weight.dtype)  # the adapter follows its base layer
        self.A = nn.Parameter(torch.empty(rank, base.in_features, **like))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank, **like))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * (x @ self.A.T @ self.B.T)

    def merged_weight(self) -> torch.Tensor:
        """``W' = W + (alpha/r) · B A``: the weight a merged adapter would have."""
        return self.base.weight + self.scaling * self.B @ self.A


def lora_config(rank: int = 8, alpha: float | None = None, targets: Sequence[str] | None = None,
                train_head: bool = True, dropout: float = 0.0, family: str = "bert",
                layers: Sequence[int] | None = None) -> LoraConfig:
    """The peft configuration the course uses for a model family; ``alpha`` defaults to ``2 · rank``.

    ``targets`` default to the family's attention query and value projections (BERT ``query``/``value``, MPNet
    ``q``/``v``, GPT-2's fused ``c_attn``), as in the LoRA paper and the published attacks. ``layers`` (default:
    all) are the transformer layers that carry adapters.
    """
    check_rank(rank)
    kind = families.FAMILIES[family]
    return LoraConfig(
        r=rank, lora_alpha=2 * rank if alpha is None else alpha,
        target_modules=list(kind.lora_targets if targets is None else targets), lora_dropout=dropout,
        modules_to_save=[kind.head] if train_head and kind.head else None, fan_in_fan_out=kind.fan_in_fan_out,
        layers_to_transform=None if layers is None else list(layers),
    )


def apply_lora(model: nn.Module, rank: int = 8, alpha: float | None = None,
               targets: Sequence[str] | None = None, train_head: bool = True,
               dropout: float = 0.0, freeze_a: bool = False, frozen_layers: int = 0) -> PeftModel:
    """Wrap ``model`` with peft LoRA adapters; only the adapters (and the head when ``train_head``) train.

    ``freeze_a`` keeps every ``lora_A`` at its initialisation and trains ``B`` only (FFA-LoRA, Sun et al., ICLR
    2024): ``A`` is then public and never sent. ``frozen_layers`` = k keeps adapters off the first k transformer
    layers, which then train and send nothing."""
    layers = model.config.num_hidden_layers
    check_int(frozen_layers, "frozen_layers", 0, layers - 1, hint=f"the first layers without LoRA, of {layers}")
    config = lora_config(rank, alpha, targets, train_head, dropout, families.family_of(model).name,
                         layers=range(frozen_layers, layers) if frozen_layers else None)
    peft_model = get_peft_model(model, config)
    if freeze_a:
        for name, parameter in peft_model.named_parameters():
            if ".lora_A." in name:
                parameter.requires_grad_(False)
    return peft_model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require a gradient)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def lora_parameter_count(hidden_size: int, num_layers: int, rank: int, n_targets: int = 2) -> int:
    """Adapter parameters for square ``hidden × hidden`` targets: ``layers · targets · 2 · r · hidden``."""
    check_rank(rank)
    return num_layers * n_targets * 2 * rank * hidden_size


def lora_gradients(G: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dL/dA, dL/dB) = ((alpha/r)·Bᵀ·G, (alpha/r)·G·Aᵀ)`` from ``G = dL/dW`` (d_out, d_in) of the same layer."""
    if G.shape != (B.shape[0], A.shape[1]) or A.shape[0] != B.shape[1]:
        raise ValueError(f"shapes do not fit W' = W + s·B·A: G {tuple(G.shape)}, A {tuple(A.shape)}, "
                         f"B {tuple(B.shape)}; pass G (d_out, d_in), A (r, d_in), B (d_out, r).")
    return scaling * B.T @ G, scaling * G @ A.T


@dataclass(frozen=True)
class ParameterBudget:
    """How many numbers a model holds and how many of them LoRA trains (and a client shares)."""

    model: models.PublicModel
    rank: int
    total: int
    trainable: int

    @property
    def percent(self) -> float:
        """Trainable parameters as a percentage of the frozen model."""
        return 100.0 * self.trainable / self.total


def parameter_budget(model: models.PublicModel, rank: int, targets: Sequence[str] | None = None,
                     train_head: bool = True) -> ParameterBudget:
    """Count a model's parameters and its LoRA adapter's, from the architecture alone (no download)."""
    check_rank(rank)
    base = model.architecture()
    total = count_parameters(base)
    trainable = count_parameters(apply_lora(base, rank, targets=targets, train_head=train_head), trainable_only=True)
    return ParameterBudget(model, rank, total, trainable)
