"""What a client shares: gradients or weight deltas of the trainable parameters only, with a size report."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

Update = "OrderedDict[str, torch.Tensor]"

def trainable_names(model: nn.Module) -> list[str]:
    """Names of the parameters that train (LoRA A/B, and the head when it is trained), in model order."""
    return [name for name, p in model.named_parameters() if p.requires_grad]

def trainable_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """A detached copy of every trainable parameter: the adapter state a server sends or receives."""
    return OrderedDict((n, p.detach().clone()) for n, p in model.named_parameters() if p.requires_grad)

def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's trainable parameters (names must match exactly)."""
    params = dict(model.named_parameters())
    unknown = [n for n in state if n not in params or not params[n].requires_grad]
    if unknown:
        raise ValueError(f"{len(unknown)} tensor names do not match trainable parameters, e.g. {unknown[0]!r}.")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)

def classification_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of a sequence classifier on one batch."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return nn.functional.cross_entropy(logits, labels)

def shared_gradients(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     labels: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
    """One FedSGD message: ``dL/dθ`` of one batch for every trainable ``θ``; frozen weights never appear."""
    names = trainable_names(model)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = classification_loss(model, input_ids, attention_mask, labels)
    grads = torch.autograd.grad(loss, params)
    return OrderedDict((n, g.detach().clone()) for n, g in zip(names, grads))

def weight_delta(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """One FedAvg message: ``θ_after − θ_before`` for every shared tensor."""
    if before.keys() != after.keys():
        raise ValueError("the two states hold different tensor names: pass states of the same adapter.")
    return OrderedDict((n, after[n] - before[n]) for n in before)

@dataclass(frozen=True)
class TensorInfo:
    """One row of what crosses the wire."""

    name: str
    shape: tuple[int, ...]
    numel: int
    bytes: int

def describe_update(update: dict[str, torch.Tensor]) -> list[TensorInfo]:
    """Name, shape, element count and bytes of every tensor in an update."""
    return [TensorInfo(n, tuple(t.shape), t.numel(), t.numel() * t.element_size()) for n, t in update.items()]

def update_bytes(update: dict[str, torch.Tensor]) -> int:
    """Total bytes of an update's tensors."""
    return sum(info.bytes for info in describe_update(update))

def short_name(name: str) -> str:
    """A readable tensor name: ``layer.0.attention.self.query.lora_A`` instead of peft's long path."""
    for prefix in ("base_model.model.", "bert.encoder.", "bert."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace(".modules_to_save.default", "").replace(".default.weight", "")
