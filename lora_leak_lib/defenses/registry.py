"""The one registry of defences: each entry says what its knob means, how it acts, and how a caller runs it.

The defence sweep (``experiments.sweep``) and the attack lab (``widgets``) both read it; the sweep names no
defence, so adding one is one ``DefenceSpec`` here. A defence acts on the message (``kind="message"``: a
transformation of one update), on the client's training (``"training"``: DP-SGD), on the protocol
(``"protocol"``: batch, local steps, rank, head, secure aggregation, FFA-LoRA's frozen ``A``, LoRA kept off
the first layers), or on the server
(``"server"``: central DP, noise added after the clients' messages arrived, so not against the server itself). Its entry carries what the sweep needs:
the ``fl.run_federated`` arguments it overrides, the client it builds (by kind unless it brings its own), how
the victims are grouped, whether the server sees only a secure aggregate, and whether an accountant spends ε.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Protocol, Sequence

import torch

from .. import fl
from ..checks import check_int
from ..message import SharedUpdate
from .federated import DefendedClient, DefendedServer, DPClient, SecureAggregationClient, UpdateDefence
from .update import add_noise, clip_update, quantisation_step, quantise, top_k

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


Noise = Callable[[Any, Update, int], "float | dict[str, float]"]
"""``noise(value, update, batch) -> std``: the std per entry of what a defence at knob ``value`` left in a message of
``batch`` sentences (one number, or one per tensor name), as a server that knows the defence computes it from the
message it holds."""


def _quantisation_noise(bits: Any, update: Update, batch: int) -> dict[str, float]:
    """Rounding to a tensor's step ``q`` leaves an error uniform in ``±q/2``: std ``q/√12``, per tensor."""
    return {n: quantisation_step(t, int(bits)) / 12 ** 0.5 for n, t in update.items()}


def _top_k_noise(fraction: Any, update: Update, batch: int) -> dict[str, float]:
    """A tensor's dropped entries lie within its smallest kept magnitude ``τ``: at most std ``τ/√3`` (uniform in
    ``±τ``), per tensor."""
    return {n: float(t[t != 0].abs().min()) / 3 ** 0.5 if bool((t != 0).any()) else 0.0 for n, t in update.items()}


def _check_noise_std(std: float) -> None:
    if not std >= 0:
        raise ValueError(f"the noise std must be zero or positive, got {std!r}: try 1e-3.")


def _check_noise_multiplier(sigma: float) -> None:
    if not sigma >= 0:
        raise ValueError(f"the DP-SGD noise multiplier must be zero or positive, got {sigma!r}: try 1.0.")


class SweepRecipe(Protocol):
    """What a defence reads of the sweep's recipe (``experiments.sweep.Recipe``) to set up its run."""

    n_clients: int
    local_lr: float
    dp_max_norm: float


ClientFactory = Callable[..., fl.Client]
"""``factory(client_id, examples, model, setup, seed) -> client``: what ``fl.run_federated``'s ``make_client`` is."""
MakeClient = Callable[["DefenceSpec", Any, SweepRecipe, Sequence[int]], ClientFactory]
"""``make(spec, value, recipe, client_ids) -> factory``: the clients a defence builds, ``client_ids`` the round's."""


def plain_client(spec: DefenceSpec, value: Any, recipe: SweepRecipe, client_ids: Sequence[int]) -> ClientFactory:
    """An undefended client: it sends its update as it is."""
    return fl.Client


def defended_client(spec: DefenceSpec, value: Any, recipe: SweepRecipe, client_ids: Sequence[int]) -> ClientFactory:
    """A client whose message passes through the defence's transformation at ``value`` before it leaves."""
    return partial(DefendedClient, defend=spec.defend(value))


def dp_client(spec: DefenceSpec, value: Any, recipe: SweepRecipe, client_ids: Sequence[int]) -> ClientFactory:
    """A DP-SGD client: clip each sentence's gradient to the recipe's ``C``, noise multiplier ``value``."""
    return partial(DPClient, max_norm=recipe.dp_max_norm, noise_multiplier=value)


def secure_client(spec: DefenceSpec, value: Any, recipe: SweepRecipe, client_ids: Sequence[int]) -> ClientFactory:
    """A client that masks its weighted update with pairwise masks shared with ``client_ids``."""
    return partial(SecureAggregationClient, client_ids=list(client_ids))


CLIENT_OF_KIND: dict[str, MakeClient] = {"message": defended_client, "training": plain_client,
                                         "protocol": plain_client, "server": plain_client}
"""The client a defence builds when its entry names none: a message defence transforms, the others train plainly."""


def _one(value: Any) -> int:
    return 1


def _the_knob(value: Any) -> Any:
    return value


def _no_overrides(value: Any, recipe: SweepRecipe) -> dict:
    return {}


@dataclass(frozen=True)
class DefenceSpec:
    """One defence: its knob in words and the check of its value, where it acts, its message transformation (if
    any), the lab's starting strength, and how the sweep runs it.

    The sweep's part: ``quick``/``full`` are the knob values it visits (one setting without a value when there
    is no knob); ``overrides(value, recipe)`` the ``fl.run_federated`` arguments it changes (e.g. ``rank``,
    ``n_clients``, ``protocol``); ``make_client`` the clients it builds (``None``: by ``kind``, ``CLIENT_OF_KIND``);
    ``victim_sentences(value)`` / ``victim_clients(value)`` how many sentences each victim client holds and how
    many clients share one attacked aggregate; ``secure``: the server learns only the round's masked sum, so
    the attack sees the aggregate; ``accountant``: its clients report the ε they spent (``client.epsilon``).
    ``noise(value, update, batch)``: what a server that knows the defence can say of the noise it left in a
    message (the std per entry), which an adaptive attack reads (``KnownDefence.noise``); DP-SGD's at the
    registry's clip ``DP_CLIP``.
    """

    name: str
    knob: str
    kind: str
    transform: Transform | None = None
    lab_default: float | None = None
    integer_at_least: int | None = None  # the knob is an integer of at least this (batch, steps, rank, clients)
    check: Callable[[Any], None] | None = None  # one more check of the knob's value, raising one ValueError
    quick: tuple = ()
    full: tuple = ()
    overrides: Callable[[Any, SweepRecipe], dict] = _no_overrides
    make_client: MakeClient | None = None
    victim_sentences: Callable[[Any], int] = _one
    victim_clients: Callable[[Any], int] = _one
    secure: bool = False
    accountant: bool = False
    noise: Noise | None = None  # what a server that knows this defence can say of the noise left in a message

    @property
    def needs_value(self) -> bool:
        return self.knob != ""

    def check_value(self, value: object) -> None:
        """Raise one clear error for a knob value this defence cannot take."""
        if not self.needs_value:
            return
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"defence {self.name!r} needs a value for its knob ({self.knob}), got {value!r}.")
        if self.integer_at_least is not None:
            check_int(value, f"{self.name} ({self.knob})", self.integer_at_least)
        if self.check is not None:
            self.check(value)
        if self.kind == "message":
            self.transform(OrderedDict(x=torch.ones(4, device="cpu")), value, 0)  # the transformation checks its own knob

    def sweep_values(self, quick: bool = True) -> list:
        """The knob values the sweep visits: a short list in quick mode, a longer one in full mode."""
        if not self.needs_value:
            return [None]
        return list(self.quick if quick else self.full)

    def defend(self, value: Any) -> UpdateDefence | None:
        """This defence's message transformation at ``value``, ``(update, seed) -> update``, or ``None`` when it
        acts elsewhere (in training or in the protocol)."""
        if self.kind != "message":
            return None
        return partial(lambda u, s, value: self.transform(u, value, s), value=value)

    def client(self, value: Any, recipe: SweepRecipe, client_ids: Sequence[int]) -> ClientFactory:
        """The factory of the clients this defence runs, for a round of ``client_ids``."""
        return (self.make_client or CLIENT_OF_KIND[self.kind])(self, value, recipe, client_ids)

    def server(self, adam_lr: float | None, value: Any = None, seed: int = 0) -> Callable[..., DefendedServer]:
        """The factory of the server (``fl.run_federated``'s ``make_server``): FedAdam, secure when ``secure``, and
        for a server-side defence (``kind="server"``, central DP) adding noise of std ``value`` to each mean."""
        noise = float(value) if self.kind == "server" else 0.0
        return partial(DefendedServer, secure=self.secure, adam_lr=adam_lr, central_noise=noise, seed=seed)

    def attacked(self, server: DefendedServer, client_ids: Sequence[int], round: int) -> SharedUpdate:
        """What the curious server attacks of one victim group: the aggregate under secure aggregation, else
        the first victim's message."""
        if self.secure:
            return server.captured_aggregate(round)
        return server.captured(client_ids[0], round)


DEFENCES: dict[str, DefenceSpec] = {spec.name: spec for spec in (
    DefenceSpec("none", "", "message", lambda u, v, s: u, lab_default=0.0, make_client=plain_client),
    DefenceSpec("dp-sgd", "DP-SGD noise multiplier σ (per-sample clip C)", "training", _dp_one_sentence, 1.0,
                check=_check_noise_multiplier, quick=(1e-5, 1e-4, 1.0), full=(1e-6, 1e-5, 3e-5, 1e-4, 1e-3, 0.1, 1.0),
                make_client=dp_client, accountant=True, noise=lambda v, u, b: v * DP_CLIP / max(1, b)),
    DefenceSpec("clip", "update norm bound", "message", lambda u, v, s: clip_update(u, v), 1.0,
                quick=(1.0, 0.1), full=(1.0, 0.1, 0.01)),
    DefenceSpec("noise", "Gaussian noise std", "message", lambda u, v, s: add_noise(u, v, s), 1e-4,
                quick=(1e-5, 1e-4, 1e-3), full=(1e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3), noise=lambda v, u, b: v),
    DefenceSpec("top-k", "fraction of entries kept", "message", lambda u, v, s: top_k(u, v), 0.1,
                quick=(0.5, 0.1), full=(0.9, 0.5, 0.25, 0.1, 0.01), noise=_top_k_noise),
    DefenceSpec("quantise", "bits per entry", "message", _bits, 8, quick=(16, 8, 4), full=(16, 12, 10, 8, 6, 4),
                noise=_quantisation_noise),
    DefenceSpec("batch", "sentences per message", "protocol", integer_at_least=1, quick=(2, 4), full=(2, 4, 8),
                victim_sentences=_the_knob),
    DefenceSpec("local-steps", "local SGD steps E (FedAvg)", "protocol", integer_at_least=1, quick=(2, 5),
                full=(2, 5, 10), overrides=lambda v, recipe: dict(protocol="fedavg", local_steps=v, optimizer="sgd",
                                                                   lr=recipe.local_lr)),
    DefenceSpec("rank", "LoRA rank r", "protocol", integer_at_least=1, quick=(4, 2), full=(16, 4, 2, 1),
                overrides=lambda v, recipe: dict(rank=v)),
    DefenceSpec("secure-agg", "clients per secure aggregate", "protocol", integer_at_least=2, quick=(2, 4),
                full=(2, 4, 8, 16), overrides=lambda v, recipe: dict(n_clients=v), make_client=secure_client,
                victim_clients=_the_knob, secure=True),
    DefenceSpec("no-head", "", "protocol", overrides=lambda v, recipe: dict(train_head=False)),
    DefenceSpec("ffa-lora", "", "protocol", overrides=lambda v, recipe: dict(freeze_a=True)),
    DefenceSpec("frozen-layers", "first transformer layers without LoRA", "protocol", lab_default=1,
                integer_at_least=1, quick=(1,), full=(1, 2, 3), overrides=lambda v, recipe: dict(frozen_layers=v)),
    DefenceSpec("central-dp", "noise std the server adds to each round's mean update", "server",
                check=_check_noise_std, quick=(1e-3,), full=(1e-4, 1e-3, 1e-2)),
)}
"""Every defence the course measures, by name, in the order the sweep visits them."""

BASELINE = "none"
"""The undefended run every defence is compared with (the sweep's reference point)."""


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
