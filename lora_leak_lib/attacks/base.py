"""What an attack receives (the curious server's view of one client update) and what it returns."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from peft import PeftModel

from .. import gradients, lora, models


@dataclass
class SharedUpdate:
    """One client's message as the honest-but-curious server holds it, plus the public set-up.

    ``update`` maps trainable tensor names to the gradient (``kind="gradient"``, FedSGD) or weight delta
    (``kind="delta"``, FedAvg) the client sent; ``global_state`` is the adapter state the server sent that
    round. The remaining fields are what the server knows anyway: the model, LoRA set-up and protocol.
    ``full_finetune=True`` means no LoRA: every parameter trains and is shared (``rank`` is then ignored).
    """

    update: OrderedDict[str, torch.Tensor]
    global_state: OrderedDict[str, torch.Tensor]
    model_name: str
    rank: int
    alpha: float
    targets: tuple[str, ...] = lora.DEFAULT_TARGETS
    train_head: bool = True
    num_labels: int = 2
    model_seed: int = 0
    kind: str = "gradient"
    batch_size: int = 1
    max_tokens: int | None = None
    lr: float | None = None
    local_steps: int = 1
    client_id: int = 0
    round: int = 0
    optimizer: str = "sgd"
    full_finetune: bool = False

    def public_model(self) -> PeftModel:
        """The model the server shares with clients, with this round's global adapter state loaded."""
        base = models.load_model(self.model_name, self.num_labels, seed=self.model_seed)
        if self.full_finetune:
            gradients.load_trainable_state(base, self.global_state)
            return base.eval()
        model = lora.apply_lora(base, self.rank, self.alpha, self.targets, self.train_head)
        gradients.load_trainable_state(model, self.global_state)
        return model.eval()


@dataclass
class Reconstruction:
    """What an attack recovered: token ids and text per sentence, labels, and how it got there."""

    token_ids: list[list[int]]
    texts: list[str]
    labels: list[int]
    attack: str
    seconds: float = 0.0
    loss_history: list[float] = field(default_factory=list)
    snapshots: list[tuple[int, list[str]]] = field(default_factory=list)


Callback = Callable[[int, float, list[str]], None]
"""Called every few steps of a long attack with (step, matching loss, current texts): live views use it."""


class Attack(Protocol):
    """One attack: a name and ``reconstruct``, in the style of the ``breaching`` library."""

    name: str

    def reconstruct(self, shared: SharedUpdate, callback: Callback | None = None) -> Reconstruction:
        ...
