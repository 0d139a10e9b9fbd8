"""What crosses the wire: the public federated set-up and one client's update as the server holds it.

The bottom layer of the library: ``fl`` (which produces messages), ``defenses`` (which transform them),
``attacks`` (which read them) and Flower all share these two types, and none of them is imported here.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Mapping, Sequence, TypeVar

import torch
from peft import PeftModel
from torch import nn

from . import config, gradients, lora, models
from .checks import check_positive_int, check_rank

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


def round_messages(received: Mapping[tuple[int, int], M], round: int) -> list[M]:
    """The messages of one round, in client order, from a ``(client_id, round) -> message`` record."""
    return [m for (_, r), m in sorted(received.items()) if r == round]


@dataclass(frozen=True, kw_only=True)
class FederatedSetup:
    """The public set-up every party knows: model, LoRA configuration, protocol and its step sizes.

    ``model`` is the resolved public model (``models.resolve(name)``), which everything below the set-up reads.

    ``lr`` is the server's step on the mean gradient in FedSGD and each client's local step in FedAvg.
    ``full_finetune=True`` means no LoRA: every parameter trains and is shared (``rank`` is then ignored).
    ``freeze_a=True`` is FFA-LoRA: every ``lora_A`` stays at its public initialisation, only ``B`` trains and is sent.
    ``frozen_layers=k`` keeps LoRA off the first k transformer layers (they train and send nothing).
    ``targets=()`` means the family's default (the attention query and value projections). A decoder's client
    has no label: ``train_head`` and ``num_labels`` mean nothing there.
    """

    model: models.PublicModel = models.TINY_BERT
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
    freeze_a: bool = False
    frozen_layers: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.model, models.PublicModel):
            raise ValueError(f"the set-up's model must be resolved, got {self.model!r}: pass "
                             f"models.resolve({self.model!r}).")
        check_rank(self.rank, None if self.full_finetune else self.model.hidden_size, self.model.name)
        check_protocol(self.protocol)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
        check_positive_int(self.local_steps, "local_steps")
        check_positive_int(self.batch_size, "batch_size")
        if not self.lr > 0:
            raise ValueError(f"the learning rate must be positive, got {self.lr!r}.")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"LoRA alpha scales B·A by alpha/r and must be positive, got {self.alpha!r}: try 2·r.")
        if self.alpha is None:
            object.__setattr__(self, "alpha", float(2 * self.rank))
        object.__setattr__(self, "targets", tuple(self.targets) or self.model.family.lora_targets)

    @property
    def kind(self) -> str:
        """What a client sends: ``"gradient"`` (FedSGD) or ``"delta"`` (FedAvg)."""
        return KINDS[self.protocol]

    def build_model(self) -> PeftModel | nn.Module:
        """The shared model with fresh LoRA adapters (``B = 0``), or the plain model in full fine-tuning.

        Built once per set-up and device in a process, then copied; the torch random state is left exactly as a
        fresh build leaves it.
        """
        def build() -> PeftModel | nn.Module:
            base = self.model.load(self.num_labels, seed=self.model_seed)
            if self.full_finetune:
                return base.eval()
            return lora.apply_lora(base, self.rank, self.alpha, self.targets, self.train_head,
                                   freeze_a=self.freeze_a, frozen_layers=self.frozen_layers).eval()

        return models.built_once(_BUILT, (self, str(config.device())), build, kept=8)


_BUILT: dict = {}
"""Shared models built in this process, by (set-up, device): ``models.built_once``'s cache."""


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
            raise ValueError(f"the update does not fit the public model ({self.setup.model.name}, r={self.setup.rank}, "
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
class WireCost:
    """Numbers one client uploads per round with LoRA only and with full fine-tuning, from the architecture."""

    model: models.PublicModel
    lora_parameters: int
    full_parameters: int
    bytes_per_number: int = 4

    @property
    def lora_bytes(self) -> int:
        return self.lora_parameters * self.bytes_per_number

    @property
    def full_bytes(self) -> int:
        return self.full_parameters * self.bytes_per_number

    @property
    def share(self) -> float:
        """Fraction of the model that a LoRA client sends."""
        return self.lora_parameters / self.full_parameters


def wire_cost(model: models.PublicModel, rank: int = 8, targets: Sequence[str] = (),
              train_head: bool = True, num_labels: int = 2, bytes_per_number: int = 4) -> WireCost:
    """Parameters and bytes of one client message, LoRA-only vs full, built on the meta device (no weights)."""
    architecture = model.architecture(num_labels)
    full = lora.count_parameters(architecture)
    with torch.device("meta"):
        sent = lora.count_parameters(lora.apply_lora(architecture, rank, targets=tuple(targets) or None,
                                                     train_head=train_head), trainable_only=True)
    return WireCost(model, sent, full, bytes_per_number)


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
