"""What crosses the wire: the public federated set-up and one client's update as the server holds it.

The bottom layer of the library: ``fl`` (which produces messages), ``defenses`` (which transform them),
``attacks`` (which read them) and Flower all share these two types, and none of them is imported here.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Mapping, TypeVar

import torch
from peft import PeftModel
from torch import nn

from . import gradients, lora, models

PROTOCOLS = ("fedsgd", "fedavg")
"""FedSGD: each client sends one gradient of one batch. FedAvg: each client sends the delta of E local steps."""
OPTIMIZERS = ("sgd", "adam")
KINDS = {"fedsgd": "gradient", "fedavg": "delta"}
State = OrderedDict  # name -> tensor: an adapter state, or an update of one
M = TypeVar("M")


def check_protocol(protocol: str) -> str:
    """Return ``protocol`` or raise one clear error naming the known protocols."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}.")
    return protocol


def check_int(value: object, name: str, least: int = 1, most: int | None = None, hint: str = "") -> int:
    """Return ``value`` or raise one clear error unless it is a whole number from ``least`` to ``most`` (no
    upper bound when ``None``); ``bool`` is not one. The one check of every count and size in the library."""
    if not isinstance(value, int) or isinstance(value, bool) or value < least or (most is not None and value > most):
        words = {0: "a non-negative integer (≥ 0)", 1: "a positive integer"}
        wanted = (f"an integer from {least} to {most}" if most is not None else
                  words.get(least, f"an integer of at least {least}"))
        raise ValueError(f"{name} must be {wanted}, got {value!r}{': ' + hint if hint else ''}.")
    return value


def check_positive_int(value: object, name: str, hint: str = "") -> int:
    """Return ``value`` or raise one clear error unless it is a positive integer (``bool`` is not one)."""
    return check_int(value, name, 1, hint=hint)


def round_messages(received: Mapping[tuple[int, int], M], round: int) -> list[M]:
    """The messages of one round, in client order, from a ``(client_id, round) -> message`` record."""
    return [m for (_, r), m in sorted(received.items()) if r == round]


@dataclass(frozen=True)
class FederatedSetup:
    """The public set-up every party knows: model, LoRA configuration, protocol and its step sizes.

    ``lr`` is the server's step on the mean gradient in FedSGD and each client's local step in FedAvg.
    ``full_finetune=True`` means no LoRA: every parameter trains and is shared (``rank`` is then ignored).
    ``targets=()`` means the family's default (the attention query and value projections). A decoder's client
    has no label: ``train_head`` and ``num_labels`` mean nothing there.
    """

    model_name: str = "tiny-bert"
    rank: int = 8
    alpha: float | None = None
    targets: tuple[str, ...] = ()
    train_head: bool = True
    num_labels: int = 2
    model_seed: int = 0
    protocol: str = "fedavg"
    lr: float = 0.05
    local_steps: int = 1
    optimizer: str = "sgd"
    batch_size: int = 8
    full_finetune: bool = False

    def __post_init__(self) -> None:
        family = models.family(self.model_name)
        lora.check_rank(self.rank)
        check_protocol(self.protocol)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
        check_positive_int(self.local_steps, "local_steps")
        check_positive_int(self.batch_size, "batch_size")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr!r}.")
        hidden = models.hidden_size(self.model_name)
        if not self.full_finetune and self.rank > hidden:
            raise ValueError(f"LoRA rank {self.rank} is larger than {self.model_name}'s hidden size {hidden}: B·A "
                             f"then has no more directions than W itself; try 8.")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha scales B·A by alpha/r and must be positive, got {self.alpha!r}: try 2·r.")
        if self.alpha is None:
            object.__setattr__(self, "alpha", float(2 * self.rank))
        object.__setattr__(self, "targets", tuple(self.targets) or family.lora_targets)

    @property
    def kind(self) -> str:
        """What a client sends: ``"gradient"`` (FedSGD) or ``"delta"`` (FedAvg)."""
        return KINDS[self.protocol]

    def build_model(self) -> PeftModel | nn.Module:
        """The shared model with fresh LoRA adapters (``B = 0``), or the plain model in full fine-tuning."""
        base = models.load_model(self.model_name, self.num_labels, seed=self.model_seed)
        if self.full_finetune:
            return base.eval()
        return lora.apply_lora(base, self.rank, self.alpha, self.targets, self.train_head).eval()


def _clone(state: dict[str, torch.Tensor]) -> State:
    return OrderedDict((n, t.detach().clone()) for n, t in state.items())


@dataclass(frozen=True)
class SharedUpdate:
    """One client's message in one round, and what the server knew when it got it.

    Sent by the client: ``update`` (trainable tensor name -> the gradient in FedSGD or the weight delta in
    FedAvg), ``client_id``, ``round``, ``n_examples`` (its aggregation weight: the batch in FedSGD, the local
    dataset in FedAvg, as Flower sends it) and ``batch_size`` (sentences per local step). Known to the server:
    ``global_state``, the adapter it sent that round, and ``setup``, the public set-up. Frozen: a defence or
    an attack that changes the update makes a new message (``dataclasses.replace``).
    """

    update: State
    global_state: State
    setup: FederatedSetup
    client_id: int = 0
    round: int = 0
    n_examples: int = 1
    batch_size: int = 1

    @property
    def kind(self) -> str:
        """``"gradient"`` (FedSGD) or ``"delta"`` (FedAvg)."""
        return self.setup.kind

    def copy(self) -> "SharedUpdate":
        """The same message with its own copies of every tensor (what the server hands an attack)."""
        return replace(self, update=_clone(self.update), global_state=_clone(self.global_state))

    def public_model(self) -> PeftModel | nn.Module:
        """The model the server shares with clients, with this round's global adapter state loaded.

        Raises one clear error when the update does not fit that model (another model, rank or targets).
        """
        model = self.setup.build_model()
        expected = OrderedDict((n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad)
        sent = OrderedDict((n, tuple(t.shape)) for n, t in self.update.items())
        if sent != expected:
            wrong = next((n for n in [*expected, *sent] if sent.get(n) != expected.get(n)), None)
            detail = (f"tensor {wrong!r} is {sent.get(wrong, 'missing')} in the update but "
                      f"{expected.get(wrong, 'absent')} in the model" if wrong else
                      "its tensors come in another order than the model's")
            raise ValueError(f"the update does not fit the public model ({self.setup.model_name}, r={self.setup.rank}, "
                             f"targets {', '.join(self.setup.targets)}): {detail}; attack it with the set-up the "
                             "client trained with.")
        gradients.load_trainable_state(model, self.global_state)
        return model.eval()

    def attack_model(self) -> nn.Module:
        """The public model as generic attack code wants it: its ``parameters()`` are exactly the shared tensors.

        Frozen weights become buffers, so ``model.named_parameters()`` yields the names of ``update`` in its
        order, and ``torch.autograd.grad(loss, list(model.parameters()))`` is the client's message for a batch.
        """
        model = self.public_model()
        for module in model.modules():
            for name, p in list(module.named_parameters(recurse=False)):
                if not p.requires_grad:
                    delattr(module, name)
                    module.register_buffer(name, p.detach())
        return model


@dataclass(frozen=True)
class LogEntry:
    """One line of the server's message log: who sent what, in which round, and how big it was."""

    client_id: int
    round: int
    kind: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    bytes: int
    n_examples: int

    @classmethod
    def of(cls, message: SharedUpdate) -> "LogEntry":
        """The log entry of a message: metadata only, no tensor values."""
        u = message.update
        return cls(message.client_id, message.round, message.kind, tuple(u), tuple(tuple(t.shape) for t in u.values()),
                   tuple(str(t.dtype).replace("torch.", "") for t in u.values()), gradients.update_bytes(u),
                   message.n_examples)
