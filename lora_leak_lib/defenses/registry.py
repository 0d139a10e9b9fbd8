"""The one registry of defences: name, what its knob means, how it acts, and the lab's starting strength.

The defence sweep (``experiments.sweep``) and the attack lab (``widgets``) both read it. A defence acts on
the message (``kind="message"``: a transformation of one update), on the client's training
(``"training"``: DP-SGD), or on the protocol (``"protocol"``: batch, local steps, rank, head, secure
aggregation), which the sweep sets up in the federated run itself.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from .update import add_noise, clip_update, quantise, top_k

Update = OrderedDict[str, torch.Tensor]
Transform = Callable[[Update, float, int], Update]
"""``transform(update, value, seed) -> defended update``: one message through a defence at knob ``value``."""

DP_CLIP = 1.0
"""DP-SGD's per-sample clipping bound ``C`` where the registry applies DP-SGD to a one-sentence message."""


def _dp_one_sentence(update: Update, sigma: float, seed: int) -> Update:
    """DP-SGD on a message of one sentence: per-sample clipping is clipping the update to ``C``, then noise ``σC``."""
    return add_noise(clip_update(update, DP_CLIP), sigma * DP_CLIP, seed)


def _bits(update: Update, bits: float, seed: int) -> Update:
    if float(bits) != int(bits):
        raise ValueError(f"bits must be a whole number, got {bits!r}: try 8 or 4.")
    return quantise(update, int(bits))


@dataclass(frozen=True)
class DefenceSpec:
    """One defence: its knob in words, where it acts, its message transformation (if any), the lab default."""

    name: str
    knob: str
    kind: str
    transform: Transform | None = None
    lab_default: float | None = None
    integer_at_least: int | None = None  # the knob is an integer of at least this (batch, steps, rank, clients)

    @property
    def needs_value(self) -> bool:
        return self.knob != ""

    def check_value(self, value: object) -> None:
        """Raise one clear error for a knob value this defence cannot take."""
        if not self.needs_value:
            return
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"defence {self.name!r} needs a value for its knob ({self.knob}), got {value!r}.")
        if self.integer_at_least is not None and not (isinstance(value, int) and value >= self.integer_at_least):
            if self.integer_at_least == 1:
                raise ValueError(f"{self.name} ({self.knob}) must be a positive integer, got {value!r}.")
            raise ValueError(f"{self.name} ({self.knob}) needs an integer of at least {self.integer_at_least}, "
                             f"got {value!r}.")
        if self.name == "dp-sgd" and not value >= 0:
            raise ValueError(f"the DP-SGD noise multiplier must be zero or positive, got {value!r}: try 1.0.")
        if self.kind == "message":
            self.transform(OrderedDict(x=torch.ones(4, device="cpu")), value, 0)  # the transformation checks its own knob


DEFENCES: dict[str, DefenceSpec] = {spec.name: spec for spec in (
    DefenceSpec("none", "", "message", lambda u, v, s: u, lab_default=0.0),
    DefenceSpec("dp-sgd", "DP-SGD noise multiplier σ (per-sample clip C)", "training", _dp_one_sentence, 1.0),
    DefenceSpec("clip", "update norm bound", "message", lambda u, v, s: clip_update(u, v), 1.0),
    DefenceSpec("noise", "Gaussian noise std", "message", lambda u, v, s: add_noise(u, v, s), 1e-4),
    DefenceSpec("top-k", "fraction of entries kept", "message", lambda u, v, s: top_k(u, v), 0.1),
    DefenceSpec("quantise", "bits per entry", "message", _bits, 8),
    DefenceSpec("batch", "sentences per message", "protocol", integer_at_least=1),
    DefenceSpec("local-steps", "local SGD steps E (FedAvg)", "protocol", integer_at_least=1),
    DefenceSpec("rank", "LoRA rank r", "protocol", integer_at_least=1),
    DefenceSpec("no-head", "", "protocol"),
    DefenceSpec("secure-agg", "clients per secure aggregate", "protocol", integer_at_least=2),
)}
"""Every defence the course measures, by name."""


def check_defence(name: str) -> DefenceSpec:
    """The entry of ``name`` or one ``ValueError`` listing the names."""
    if name not in DEFENCES:
        raise ValueError(f"unknown defence {name!r}: choose one of {', '.join(DEFENCES)}.")
    return DEFENCES[name]


def lab_defences() -> list[str]:
    """Defences the lab can apply to one message after the fact (a starting strength and a transformation)."""
    return [n for n, spec in DEFENCES.items() if spec.lab_default is not None and spec.transform is not None]


def defend_message(update: Update, name: str, value: float | None = None, seed: int = 0) -> Update:
    """One message through defence ``name`` at ``value`` (default: the lab's strength); DP-SGD as on one sentence."""
    spec = check_defence(name)
    if spec.transform is None:
        raise ValueError(f"defence {name!r} changes the protocol, not one message: run it in the sweep "
                         f"(experiments.sweep), or pick one of {', '.join(lab_defences())}.")
    value = spec.lab_default if value is None else value
    spec.check_value(value)
    return OrderedDict(spec.transform(OrderedDict(update), value, seed))
