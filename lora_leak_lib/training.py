"""The one local-training loop every party runs (FedSGD and FedAvg clients, DP-SGD, the pre-trained adapter)."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from . import data, families, gradients
from .checks import check_int
from .message import OPTIMIZERS

Gradient = OrderedDict[str, torch.Tensor]
GradientFn = Callable[[int], tuple[Gradient, float]]
"""``gradient_fn(step) -> (gradient of every trainable tensor, loss)``: one local step's gradient."""


def batch_gradient(model: nn.Module, tokenizer, batch: Sequence[data.Example]) -> tuple[Gradient, float]:
    """``dL/dθ`` of the client's loss on a batch of examples (``gradients.client_loss``), for every trainable
    ``θ``, and the loss."""
    encoded = data.encode(tokenizer, [e.text for e in batch], families.max_tokens(model))
    labels = torch.tensor([e.label for e in batch], device=encoded["input_ids"].device)
    names = gradients.trainable_names(model)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = gradients.client_loss(model, encoded["input_ids"], encoded["attention_mask"], labels)
    grads = torch.autograd.grad(loss, params)
    return OrderedDict((n, g.detach()) for n, g in zip(names, grads)), float(loss.detach())


def local_training(model: nn.Module, steps: int, gradient_fn: GradientFn, optimizer: str = "sgd",
                   lr: float = 0.05) -> list[float]:
    """``steps`` steps of SGD or Adam (a fresh optimiser) on the model's trainable tensors; returns the losses.

    ``gradient_fn(step)`` gives each step's gradient: ``batch_gradient`` on that step's batch for a plain
    client, a clipped and noised gradient for DP-SGD. The optimiser only ever sees those gradients.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
    check_int(steps, "steps", 0)
    params = OrderedDict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    step_fn = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)(params.values(), lr=lr)
    losses = []
    for step in range(steps):
        g, loss = gradient_fn(step)
        for name, p in params.items():
            p.grad = g[name].to(p.dtype)
        step_fn.step()
        losses.append(loss)
    step_fn.zero_grad(set_to_none=True)
    return losses


def train_adapter(model: nn.Module, tokenizer: PreTrainedTokenizerBase, examples: Sequence[data.Example], steps: int,
                  lr: float = 1e-3, batch_size: int = 8, seed: int = 0,
                  on_step: Callable[[int], None] | None = None) -> list[float]:
    """Adam on the trainable parameters for ``steps`` batches drawn from ``examples``; returns the losses.

    The stand-in for "some federated rounds have passed": after it the adapter's ``B ≠ 0``. ``on_step(k)`` is
    called when the model has taken ``k`` steps, before step ``k + 1`` (to keep the states in between).
    """
    check_int(steps, "steps", 0)
    if steps and not examples:
        raise ValueError("train_adapter needs at least one example to train on.")
    if steps == 0:
        return []
    generator = torch.Generator().manual_seed(seed)

    def gradient_fn(step: int) -> tuple[Gradient, float]:
        if on_step is not None:
            on_step(step)
        index = torch.randint(len(examples), (min(batch_size, len(examples)),), generator=generator, device="cpu")
        return batch_gradient(model, tokenizer, [examples[i] for i in index.tolist()])

    return local_training(model, steps, gradient_fn, "adam", lr)
