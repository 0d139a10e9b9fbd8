"""The privacy–utility sweep: one defence setting → a federated run's accuracy and the attack's score on its messages."""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import data, fl, models
from ..attacks import Knowledge, Reconstruction, SharedUpdate, get_attack
from ..defenses.federated import DefendedServer
from ..defenses.registry import BASELINE, DEFENCES, DefenceSpec, check_defence
from ..defenses.secure_aggregation import subtract_own
from .core import known_defence, longest, score

AttackFn = Callable[[SharedUpdate, Knowledge], Reconstruction]
"""``attack(shared, knowledge) -> Reconstruction``: how the sweep attacks a message (an ``Attack.reconstruct``)."""


@dataclass(frozen=True)
class Recipe:
    """The federated training every defence is applied to, and the victims the curious server attacks.

    Training: ``n_clients`` clients run FedSGD on batches of ``batch_size`` (all their data when they hold
    fewer) for ``rounds`` rounds; the server steps Adam on the mean gradient (FedAdam) with ``lr``, which
    trains a LoRA adapter in few rounds. Attack: after the last round, ``n_victims`` more clients, each
    holding one held-out private sentence, send one defended message on the trained adapter (``B ≠ 0``)
    and the server attacks it, told the sentence length (the longest one for a batch or an aggregate: the
    strong-attacker assumption). ``dp_max_norm`` is DP-SGD's per-sample clipping bound ``C``; ``local_lr``
    the clients' SGD step when a defence switches to FedAvg. "no-head" freezes the head (``train_head=False``).
    """

    model: models.PublicModel = models.TINY_BERT
    n_clients: int = 4
    rounds: int = 10
    batch_size: int = 16
    lr: float = 1e-2
    local_lr: float = 0.05
    rank: int = 8
    held_out: float = 0.5
    n_victims: int = 2
    source: str | Path | Sequence[data.Example] | None = None
    limit: int | None = None
    dp_max_norm: float = 1.0
    dp_delta: float = 1e-5
    seed: int = 0


@dataclass(frozen=True)
class Defence:
    """One defence at one setting of its knob, e.g. ``Defence("top-k", 0.1)``; ``Defence("none")`` is the baseline."""

    name: str
    value: float | int | None = None

    def __post_init__(self) -> None:
        check_defence(self.name).check_value(self.value)

    @property
    def spec(self) -> DefenceSpec:
        """This defence's registry entry: everything the sweep does with it comes from there."""
        return check_defence(self.name)

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name} {self.value:g}"

    def transform(self) -> Callable[[OrderedDict, int], OrderedDict] | None:
        """The message transformation of this defence, ``(update, seed) -> update``, or ``None`` when it acts
        elsewhere (in training or in the protocol)."""
        return self.spec.defend(self.value)

    def run_kwargs(self, recipe: Recipe) -> dict:
        """Arguments of ``fl.run_federated`` for this defence on top of ``recipe``: FedSGD clients and a FedAdam
        server, with what the defence's registry entry changes (its overrides, its clients, a secure server)."""
        spec = self.spec
        kwargs = dict(model=recipe.model, n_clients=recipe.n_clients, rounds=recipe.rounds,
                      protocol="fedsgd", source=recipe.source, limit=recipe.limit, held_out=recipe.held_out,
                      rank=recipe.rank, lr=recipe.lr, batch_size=recipe.batch_size, seed=recipe.seed, progress=False)
        kwargs.update(spec.overrides(self.value, recipe))
        kwargs["make_client"] = spec.client(self.value, recipe, list(range(kwargs["n_clients"])))
        kwargs["make_server"] = spec.server(recipe.lr, self.value, recipe.seed)
        return kwargs


def strongest_attack(shared: SharedUpdate, knowledge: Knowledge) -> Reconstruction:
    """The course's strongest attack on a LoRA-only update (``lora-best`` from the attack registry)."""
    return get_attack("lora-best").reconstruct(shared, knowledge)


def victim_client(defence: Defence, recipe: Recipe, client_id: int, examples: Sequence[data.Example],
                  model, setup: fl.FederatedSetup, group: Sequence[int]) -> fl.Client:
    """A victim client that defends its message exactly as the trained clients did (batch = all its sentences)."""
    setup = replace(setup, batch_size=max(1, len(examples)))
    make = defence.spec.client(defence.value, recipe, list(group))
    return make(client_id, examples, model, setup, recipe.seed)


def victim_groups(defence: Defence, recipe: Recipe, pool: Sequence[data.Example]) -> list[list[list[data.Example]]]:
    """The victims' private data: ``n_victims`` groups of clients (k per secure aggregate, else 1), each client
    holding ``b`` sentences (``b`` = the batch knob, else 1), drawn from the held-out sentences."""
    per_client = defence.spec.victim_sentences(defence.value)
    per_group = defence.spec.victim_clients(defence.value)
    need = recipe.n_victims * per_group * per_client
    if need > len(pool):
        raise ValueError(f"the sweep needs {need} held-out sentences for its victims but has {len(pool)}: "
                         "lower n_victims or the knob, or raise held_out.")
    sentences = iter(pool[:need])
    return [[[next(sentences) for _ in range(per_client)] for _ in range(per_group)] for _ in range(recipe.n_victims)]


def attack_victims(history: fl.FederatedHistory, defence: Defence, recipe: Recipe, attack: AttackFn,
                   insider: bool = False) -> tuple[list[dict[str, float]], list[tuple[str, str]], str | None, float,
                                                   bool | None]:
    """After the last round, each victim group sends its defended messages and the server attacks what it sees,
    once unaware of the defence and, where the defence leaves a known noise, once told it (``known_defence``).

    Returns the rows of the attacker that did better (its mean ROUGE-1 over every victim: the defence's worst
    case), their examples, the error when every attacker failed, the seconds of every attack, and whether the
    better attacker knew the defence (``None`` when knowing it changes nothing).
    ``insider`` (secure aggregation of 2): the attacker is the group's first client, which subtracts its own
    update from the aggregate and attacks the second client's sentences.
    """
    server = history.server
    round = len(history.accuracy) - 1
    runs: dict[bool, list] = {False: [], True: []}
    errors: dict[bool, str] = {}
    seconds, adaptive = 0.0, False
    for g, group in enumerate(victim_groups(defence, recipe, history.held_out)):
        ids = [1000 + 100 * g + i for i in range(len(group))]
        state = server.broadcast(round + g)
        victims = [victim_client(defence, recipe, cid, sentences, history.model, history.setup, ids)
                   for cid, sentences in zip(ids, group)]
        for victim in victims:
            server.receive(victim.client_update(state, round + g))
        if insider:
            shared = _insider_view(server, victims, state, round + g)
            victims = victims[1:]
        else:
            shared = defence.spec.attacked(server, ids, round + g)
        references = [e.text for v in victims for e in message_references(v)]
        tokenizer = history.setup.model.tokenizer
        # the attacker knows the longest sentence's length (the batch size is in the message's metadata)
        unaware = Knowledge(length=longest(references, tokenizer))
        known = known_defence(defence.name, defence.value, shared)
        adaptive = adaptive or known.noise is not None
        for aware, knowledge in ((False, unaware), (True, replace(unaware, defence=known))):
            if aware and known.noise is None:
                continue
            try:
                reconstruction = attack(shared, knowledge)
            except ValueError as error:
                errors[aware] = f"{type(error).__name__}: {error}"
                continue
            seconds += reconstruction.seconds
            runs[aware].extend(score(references, reconstruction, tokenizer))
    tried = [aware for aware in (False, True) if aware not in errors and runs[aware]]
    if not tried:
        return [], [], errors.get(False) or errors.get(True), seconds, None
    best = max(tried, key=lambda aware: float(np.mean([r["rouge1"] for r in runs[aware]])))
    rows = runs[best]
    return rows, [(r["original"], r["reconstruction"]) for r in rows], None, seconds, best if adaptive else None


def _insider_view(server: DefendedServer, victims: Sequence[fl.Client], state: dict, round: int) -> SharedUpdate:
    """What client 0 of a secure pair learns about client 1: ``(sum − n_0·u_0) / n_1``, exact to ``2^-40``."""
    mine, theirs = victims
    own = fl.Client.client_update(mine, state, round)  # its own update, before masking
    weighted_own = OrderedDict((n, t * own.n_examples) for n, t in own.update.items())
    their_weight = server.received[(theirs.client_id, round)].n_examples
    shared = server.captured(theirs.client_id, round)
    update = OrderedDict((n, t / their_weight)
                         for n, t in subtract_own(server.encoded_sum(round), weighted_own).items())
    return replace(shared, update=update, batch_size=len(message_references(theirs)))


def message_references(client: fl.Client) -> list[data.Example]:
    """The distinct private sentences a client's last message was computed on (all its local batches)."""
    seen: dict[str, data.Example] = {}
    for batch in client.last_batches:
        for example in batch:
            seen.setdefault(example.text, example)
    return list(seen.values())


@dataclass
class SettingResult:
    """One point of the sweep: the utility a defence setting keeps and what the attack still recovers."""

    defence: str
    value: float | int | None
    label: str
    accuracy: float
    accuracy_before: float
    accuracy_curve: list[float]
    rouge1: float
    token_accuracy: float
    n_sentences: int
    epsilon: float | None = None
    attack_error: str | None = None
    attack_seconds: float = 0.0
    examples: list[tuple[str, str]] = field(default_factory=list)
    attack_aware: bool | None = None
    """Whether the attack that set ``rouge1`` knew the defence (``None``: knowing it changes nothing here)."""


def run_setting(defence: Defence, recipe: Recipe = Recipe(), attack: AttackFn = strongest_attack) -> SettingResult:
    """Federated training under ``defence`` for ``recipe.rounds`` rounds, then the attack on its victims."""
    history = fl.run_federated(**defence.run_kwargs(recipe))
    rows, examples, error, seconds, aware = attack_victims(history, defence, recipe, attack)
    eps = history.clients[0].epsilon(recipe.rounds, recipe.dp_delta) if defence.spec.accountant else None
    return _result(defence, history, rows, examples, error, seconds, eps, aware=aware)


def two_client_attack(recipe: Recipe = Recipe(), attack: AttackFn = strongest_attack) -> SettingResult:
    """Secure aggregation of 2 clients: the first subtracts its own update from the sum and attacks the second."""
    defence = Defence("secure-agg", 2)
    history = fl.run_federated(**defence.run_kwargs(recipe))
    rows, examples, error, seconds, aware = attack_victims(history, defence, recipe, attack, insider=True)
    return _result(defence, history, rows, examples, error, seconds, None,
                   label="secure-agg 2: one client subtracts its own update", aware=aware)


def _result(defence: Defence, history: fl.FederatedHistory, rows: list[dict[str, float]],
            examples: list[tuple[str, str]], error: str | None, seconds: float, eps: float | None,
            label: str | None = None, aware: bool | None = None) -> SettingResult:
    mean = lambda key: float(np.mean([r[key] for r in rows])) if rows else math.nan
    return SettingResult(defence.name, defence.value, label or defence.label, history.accuracy[-1],
                         history.accuracy[0], list(history.accuracy), mean("rouge1"), mean("token_accuracy"),
                         len(rows), eps, error, seconds, examples, aware)


def settings(quick: bool = True) -> list[Defence]:
    """The knob values the sweep visits, defence by defence in registry order (each entry's ``quick`` or
    ``full`` values; one setting for a defence without a knob)."""
    return [Defence(name, v) for name, spec in DEFENCES.items() for v in spec.sweep_values(quick)]


def run_sweep(defences: Sequence[Defence], recipe: Recipe = Recipe(), attack: AttackFn = strongest_attack,
              progress: bool = True) -> list[SettingResult]:
    """``run_setting`` for every defence, in order, with a progress bar."""
    from tqdm.auto import tqdm

    return [run_setting(d, recipe, attack) for d in tqdm(defences, desc="defences", disable=not progress)]


def pareto_front(results: Sequence[SettingResult]) -> list[SettingResult]:
    """The settings no other setting beats on both axes (lower ROUGE-1 and higher accuracy), by ROUGE-1."""
    scored = [r for r in results if not math.isnan(r.rouge1)]
    front = [r for r in scored if not any(
        o.rouge1 <= r.rouge1 and o.accuracy >= r.accuracy and (o.rouge1 < r.rouge1 or o.accuracy > r.accuracy)
        for o in scored)]
    return sorted(front, key=lambda r: r.rouge1)


def recommendations(results: Sequence[SettingResult], threshold: float = 0.2) -> list[dict]:
    """Per defence, the setting that keeps most accuracy while the attack's mean ROUGE-1 stays below ``threshold``
    (ties go to the lower ROUGE-1, then to the smaller ε).

    Each row reads "this setting cuts reconstruction to X% at a cost of Y accuracy points"; a defence with no
    such setting in the sweep says so.
    """
    baseline = next((r for r in results if r.defence == BASELINE), None)
    if baseline is None:
        raise ValueError(f"the results hold no baseline: include Defence({BASELINE!r}) in the sweep.")
    rows = []
    for name in dict.fromkeys(r.defence for r in results if r.defence != BASELINE):
        family = [r for r in results if r.defence == name]
        good = [r for r in family if not math.isnan(r.rouge1) and r.rouge1 < threshold]
        best = max(good, key=lambda r: (r.accuracy, -r.rouge1, -(r.epsilon or 0.0))) if good else None
        errors = sorted({r.attack_error for r in family if r.attack_error})
        rows.append(dict(
            defence=name, setting=best.label if best else None,
            rouge1=best.rouge1 if best else None, accuracy=best.accuracy if best else None,
            cost_points=100 * (baseline.accuracy - best.accuracy) if best else None, epsilon=best.epsilon if best else None,
            verdict=(f"{best.label} cuts reconstruction to {100 * best.rouge1:.0f}% ROUGE-1 "
                     + _cost_words(100 * (baseline.accuracy - best.accuracy)) if best else
                     f"no setting in the sweep brought ROUGE-1 below {100 * threshold:.0f}%"
                     + (f" (attack did not run: {errors[0]})" if errors else "")),
        ))
    return rows


def _cost_words(points: float) -> str:
    if round(points) > 0:
        return f"at a cost of {points:.0f} accuracy points"
    if round(points) < 0:
        return f"and even gains {-points:.0f} accuracy points (within the noise of a small held-out set)"
    return "at no measurable accuracy cost"


def results_table(results: Sequence[SettingResult]) -> str:
    """A plain-text table of a sweep: defence, setting, accuracy, ROUGE-1, token accuracy, ε."""
    lines = [f"{'setting':<34} {'acc':>5} {'ROUGE-1':>8} {'tok acc':>8} {'eps':>8}  note"]
    for r in results:
        eps = "" if r.epsilon is None else f"{r.epsilon:8.3g}"
        note = r.attack_error[:60] if r.attack_error else ""
        lines.append(f"{r.label:<34} {r.accuracy:5.2f} {r.rouge1:8.2f} {r.token_accuracy:8.2f} {eps:>8}  {note}")
    return "\n".join(lines)
