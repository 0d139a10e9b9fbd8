"""The one attack interface: what an attack is told besides the message, what it returns, how it reports progress."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

import torch

from ..message import SharedUpdate


@dataclass(frozen=True)
class KnownDefence:
    """A defence the client runs, as the protocol makes it public: its registry name (``defenses.DEFENCES``), the
    value of its knob (``None`` for a defence without one), and what that means for the message: ``noise``, the
    standard deviation per entry of what the defence added (noise, DP-SGD's noise over the batch), or per tensor
    name where it differs (quantisation's rounding, top-k's dropped entries); an attack that knows it keeps only
    the directions that stand above it."""

    name: str
    value: float | int | None = None
    noise: float | Mapping[str, float] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a known defence is named by its registry name, got {self.name!r}.")
        values = self.noise.values() if isinstance(self.noise, Mapping) else [self.noise]
        if not all(v is None or v >= 0 for v in values):
            raise ValueError(f"the known noise is a standard deviation, zero or more, got {self.noise!r}.")

    def noise_of(self, names: Sequence[str]) -> float:
        """The largest known noise std over the tensors ``names`` (0 when none is known)."""
        if isinstance(self.noise, Mapping):
            return max((float(self.noise.get(n, 0.0)) for n in names), default=0.0)
        return float(self.noise or 0.0)


@dataclass(frozen=True)
class Knowledge:
    """What the attacker is assumed to know besides the message itself (the threat model, made explicit).

    ``length``: tokens per sentence without [CLS]/[SEP] (the longest one of a batch), as LAMP and DAGER
    assume; ``None`` means the attack must find it or refuse. ``labels``: the sentences' classes; ``None``
    means the attack reads them from the head (iDLG). ``batch_size``: sentences in the message; ``None``
    means what the message's metadata says (Flower sends it in the clear). ``other_rounds``: updates the same
    client sent, on the same private data, in other rounds the server watched (each under that round's global
    adapter); span-based attacks stack their first-layer rows with the message's, ``R·2r`` directions of the
    same inputs instead of ``2r``. ``defence``: the defence the client runs, when the server knows it (a
    protocol's defences are public: its noise level, its quantisation, a frozen ``A``); ``None`` is an attacker
    that does not adapt to one.
    """

    length: int | None = None
    labels: tuple[int, ...] | None = None
    batch_size: int | None = None
    other_rounds: tuple[SharedUpdate, ...] = field(default=(), compare=False, repr=False)
    defence: KnownDefence | None = None

    def __post_init__(self) -> None:
        if self.length is not None and (not isinstance(self.length, int) or self.length < 1):
            raise ValueError(f"the known length counts tokens without [CLS]/[SEP], at least 1: got {self.length!r}.")
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(int(y) for y in self.labels))
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"the known batch size must be a positive integer, got {self.batch_size!r}.")
        object.__setattr__(self, "other_rounds", tuple(self.other_rounds))
        if not all(isinstance(u, SharedUpdate) for u in self.other_rounds):
            raise ValueError("other_rounds holds the SharedUpdate messages of the same client in other rounds.")
        if self.defence is not None and not isinstance(self.defence, KnownDefence):
            raise ValueError(f"defence is a KnownDefence(name, value), got {self.defence!r}.")

    def rounds_watched(self, shared: SharedUpdate) -> list[SharedUpdate]:
        """The message under attack first, then the same client's messages from the other watched rounds."""
        return [shared, *self.other_rounds]

    def sentences(self, shared: SharedUpdate) -> int:
        """How many sentences the attacker looks for in ``shared``."""
        return self.batch_size or shared.batch_size


@dataclass
class Reconstruction:
    """What an attack recovered, and how it got there.

    ``token_ids``/``texts``: one entry per sentence; ``labels``: the classes it read or used. ``attack`` is
    the registry name; ``inputs`` holds continuous vectors an attack recovers instead of tokens (the head
    leak's pooled sentence vector). ``loss`` is the attack's objective (lower is better; the registry's ``loss`` says
    what it measures) for the returned result; ``loss_history[i]`` is that objective after the attack's step
    ``i + 1``, and every ``callback(step, loss, texts)`` call has ``loss == loss_history[step - 1]``.
    ``snapshots`` keep ``(step, texts)`` at the steps where the callback was called.
    """

    token_ids: list[list[int]]
    texts: list[str]
    labels: list[int]
    attack: str
    seconds: float = 0.0
    inputs: torch.Tensor | None = None
    loss: float | None = None
    loss_history: list[float] = field(default_factory=list)
    snapshots: list[tuple[int, list[str]]] = field(default_factory=list)


Callback = Callable[[int, float, list[str]], None]
"""``callback(step, loss, texts)``: called every few steps of an attack (step counts from 1) with the objective
after that step and the texts the attack would return now; live views use it."""


class Attack(Protocol):
    """One attack, in the style of the ``breaching`` library: a registry ``name`` and ``reconstruct``."""

    name: str

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        ...


class Progress:
    """Keeps ``loss_history`` and ``snapshots`` of one attack run and forwards them to the user's callback."""

    def __init__(self, callback: Callback | None = None) -> None:
        self.callback = callback
        self.loss_history: list[float] = []
        self.snapshots: list[tuple[int, list[str]]] = []

    def step(self, loss: float, texts: list[str] | None = None) -> int:
        """Record the objective after one more step; with ``texts``, snapshot and call back. Returns the step."""
        self.loss_history.append(float(loss))
        step = len(self.loss_history)
        if texts is not None:
            self.snapshots.append((step, list(texts)))
            if self.callback is not None:
                self.callback(step, float(loss), list(texts))
        return step
