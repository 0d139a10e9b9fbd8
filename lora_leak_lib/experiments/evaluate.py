"""Every attack against every defence on one table: ``lora-leak evaluate``.

A suite is a list of cells, each an evaluation setting (model, sentence length, batch, round, watched rounds,
protocol, rank) and a defence setting (a registry entry at one knob value, or a message transformation brought by
the user). In each cell the victims send their defended messages, simulated as the defence registry says (a message
defence transforms every message, DP-SGD trains through its client, a protocol defence changes the set-up, the batch
or the clients of a secure aggregate), and every attack runs twice on them: once unaware of the defence and once told
it (``Knowledge.defence``). A defence setting's verdict is its worst case, the highest mean ROUGE-1 of any attack and
awareness; its utility is the held-out accuracy of a federated run under it (``experiments.sweep``). The record is
one JSON file, written after every row so that a killed run resumes, a Markdown table and a privacy–utility figure.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import inspect
import json
import os
import platform
import sys
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .. import config, data, fl, models
from ..attacks import (Attack, Knowledge, KnownDefence, Reconstruction, SharedUpdate, attack_names, check_attack_name,
                       get_attack)
from ..checks import check_int, check_rank, check_record_path
from ..defenses.federated import DefendedClient, DefendedServer, UpdateDefence
from ..defenses.registry import BASELINE, DEFENCES, DefenceSpec, check_defence
from ..message import OPTIMIZERS, FederatedSetup, check_protocol
from . import sweep
from .core import DEFAULT_TRAINED_STEPS, check_trained_steps, known_defence, longest, result_rows
from .fingerprint import fingerprint, stale_files

THRESHOLD = 0.2
"""A defence setting protects when its worst-case mean ROUGE-1 is below this."""
KEEP = 0.95
"""... and keeps at least this share of the undefended held-out accuracy."""


# --- what one cell runs: an evaluation setting and a defence setting ----------------------------------------------

@dataclass(frozen=True, kw_only=True)
class EvaluationSetting:
    """Where the victims' messages come from: ``model``, sentences of ``tokens`` tokens, ``batch_size`` sentences per
    message, the global adapter trained ``trained_steps`` steps first (0: the first round, ``B = 0``), the server
    watching ``observed_rounds`` rounds of ``protocol`` (FedAvg: ``local_steps`` of ``optimizer`` at ``lr``), LoRA
    rank ``rank``."""

    model: models.PublicModel
    tokens: int = 16
    batch_size: int = 1
    trained_steps: int = DEFAULT_TRAINED_STEPS
    observed_rounds: int = 1
    protocol: str = "fedsgd"
    local_steps: int = 1
    optimizer: str = "sgd"
    lr: float = 0.05
    rank: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.model, models.PublicModel):
            raise ValueError(f"an evaluation setting's model must be resolved, got {self.model!r}: pass "
                             f"models.resolve({self.model!r}).")
        check_int(self.tokens, "tokens", hint="tokens per sentence, without [CLS]/[SEP]")
        check_int(self.batch_size, "batch_size", hint="sentences per message")
        check_int(self.observed_rounds, "observed_rounds", hint="rounds the server watches the client")
        check_trained_steps(self.trained_steps)
        check_trained_steps(self.trained_steps + self.observed_rounds - 1, "trained_steps + observed_rounds - 1")
        check_protocol(self.protocol)
        check_int(self.local_steps, "local_steps")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
        check_rank(self.rank, self.model.hidden_size, self.model.name)
        if self.tokens > self.model.text_limit:
            raise ValueError(f"{self.model.name} takes at most {self.model.text_limit} tokens besides [CLS] and "
                             f"[SEP], not {self.tokens}: shorten the setting's sentences.")

    def label(self) -> str:
        """The setting in words, e.g. ``tiny-bert, 16 tokens, batch 1, 20 steps trained, R=1, FedSGD, r=8``."""
        trained = "round 0" if self.trained_steps == 0 else f"{self.trained_steps} steps trained"
        protocol = "FedSGD" if self.protocol == "fedsgd" else f"FedAvg E={self.local_steps} {self.optimizer}"
        return (f"{self.model.name}, {self.tokens} tokens, batch {self.batch_size}, {trained}, "
                f"R={self.observed_rounds}, {protocol}, r={self.rank}")

    def as_json(self) -> dict:
        """The setting as the plain dict the record holds (the model by name)."""
        return {f.name: getattr(self, f.name) if f.name != "model" else self.model.name
                for f in dataclasses.fields(self)}


SETUP_FIELDS = frozenset(f.name for f in dataclasses.fields(FederatedSetup)) - {"model", "model_seed", "batch_size"}
"""The ``fl.run_federated`` arguments a defence's ``overrides`` may change that the victims' set-up takes too (rank,
protocol, head, ...); the others (clients per round, training batch, rounds) shape only the utility run."""
TRAINING_ONLY = frozenset(inspect.signature(fl.run_federated).parameters) - SETUP_FIELDS


@dataclass(frozen=True)
class DefenceSetting:
    """One defence at one setting of its knob: a registry entry (``DefenceSetting("noise", 1e-4)``), or a message
    transformation ``function(update, seed) -> update`` brought by the user and named by its import path
    (``transform``; no knob)."""

    name: str
    value: float | int | None = None
    transform: UpdateDefence | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.transform is None:
            check_defence(self.name).check_value(self.value)
        elif self.value is not None:
            raise ValueError(f"a brought-in defence ({self.name}) has no knob: give no value.")

    @property
    def spec(self) -> DefenceSpec | None:
        """The registry entry, ``None`` for a brought-in transformation."""
        return None if self.transform is not None else check_defence(self.name)

    @property
    def label(self) -> str:
        return self.name if self.value is None else f"{self.name} {self.value:g}"

    @property
    def kind(self) -> str:
        return "message" if self.spec is None else self.spec.kind

    @property
    def secure(self) -> bool:
        return self.spec is not None and self.spec.secure

    @property
    def accountant(self) -> bool:
        return self.spec is not None and self.spec.accountant

    def known(self, shared: SharedUpdate) -> KnownDefence:
        """What an aware attacker is told of the message ``shared``: the defence's name and knob, and the noise the
        registry says it left (``core.known_defence``); a brought-in defence only by its name."""
        return KnownDefence(self.name) if self.spec is None else known_defence(self.name, self.value, shared)

    def server(self, setup: FederatedSetup, state: dict, seed: int = 0) -> DefendedServer:
        """The curious server the victims send to, built as the defence's entry builds it (secure, central noise)."""
        if self.spec is None:
            return DefendedServer(setup, state)
        return self.spec.server(None, self.value, seed)(setup, state)

    def sentences_per_client(self, setting: EvaluationSetting) -> int:
        """Sentences in each victim's message: the setting's batch, or more when the defence batches."""
        return max(setting.batch_size, 1 if self.spec is None else self.spec.victim_sentences(self.value))

    def clients_per_message(self) -> int:
        """Victim clients behind one attacked message: k under a secure aggregate of k, else 1."""
        return 1 if self.spec is None else self.spec.victim_clients(self.value)

    def overrides(self, recipe: sweep.Recipe) -> dict:
        """The ``fl.run_federated`` arguments the defence changes (none for a brought-in one)."""
        return {} if self.spec is None else dict(self.spec.overrides(self.value, recipe))

    def setup_changes(self, recipe: sweep.Recipe) -> dict:
        """The overrides the victims' set-up takes (rank, protocol, head, ...), or one clear error for one the
        evaluation cannot apply to a victim."""
        changes = self.overrides(recipe)
        unknown = sorted(set(changes) - SETUP_FIELDS - TRAINING_ONLY)
        if unknown:
            raise ValueError(f"defence {self.name!r} overrides {unknown[0]!r}, which is neither a FederatedSetup field "
                             "nor an fl.run_federated argument: the evaluation cannot apply it to a victim.")
        return {k: v for k, v in changes.items() if k in SETUP_FIELDS}

    def client(self, recipe: sweep.Recipe, client_ids: Sequence[int]) -> Callable[..., fl.Client]:
        """The factory of the clients that run this defence (``fl.run_federated``'s ``make_client``)."""
        if self.spec is None:
            return partial(DefendedClient, defend=self.transform)
        return self.spec.client(self.value, recipe, list(client_ids))

    def attacked(self, server: DefendedServer, client_ids: Sequence[int], round: int) -> SharedUpdate:
        """What the curious server attacks of one victim group (the aggregate under secure aggregation)."""
        if self.spec is None:
            return server.captured(client_ids[0], round)
        return self.spec.attacked(server, client_ids, round)

    def run_kwargs(self, recipe: sweep.Recipe) -> dict:
        """Arguments of ``fl.run_federated`` for the utility run (``sweep.Defence.run_kwargs``)."""
        if self.spec is not None:
            return sweep.Defence(self.name, self.value).run_kwargs(recipe)
        kwargs = sweep.Defence(BASELINE).run_kwargs(recipe)
        kwargs["make_client"] = self.client(recipe, list(range(kwargs["n_clients"])))
        return kwargs

    def as_json(self) -> dict:
        return {"defence": self.name, "value": self.value, "defence_label": self.label, "defence_kind": self.kind,
                "brought_in": self.spec is None}


def registered_defences(quick: bool = True) -> tuple[DefenceSetting, ...]:
    """Every registered defence at its ``quick`` (or ``full``) knob values, in registry order (the baseline first)."""
    return tuple(DefenceSetting(name, value) for name, spec in DEFENCES.items() for value in spec.sweep_values(quick))


def representative_defences() -> tuple[DefenceSetting, ...]:
    """One setting per registered defence, for the settings off the main one: its lab strength when that is one of
    its ``full`` values, else the middle one of them (none without a knob)."""
    chosen = []
    for name, spec in DEFENCES.items():
        values = spec.sweep_values(quick=False)
        value = spec.lab_default if spec.lab_default in values else values[len(values) // 2]
        chosen.append(DefenceSetting(name, value))
    return tuple(chosen)


# --- bring your own: attacks and defences by import path -----------------------------------------------------------

def is_import_path(name: str) -> bool:
    """True for ``package.module:Name``, the way a brought-in attack or defence is named."""
    return ":" in name


def load_object(path: str, flag: str) -> object:
    """The object ``Name`` of ``package.module:Name`` (imported from the Python path or the current folder), or one
    clear error naming what is missing."""
    module_name, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:  # a console script's path starts at its own folder: find the user's modules
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 (whatever the user's module raises, in one line)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{flag} {path}: cannot import {module_name!r} ({reason}): check the module is on the "
                         "Python path or in the current folder.") from None
    if not hasattr(module, attribute):
        raise ValueError(f"{flag} {path}: module {module_name!r} has no {attribute!r}.")
    return getattr(module, attribute)


def load_attack(path: str) -> Attack:
    """A brought-in attack: ``module:ClassName`` instantiated with no arguments, which must have a
    ``reconstruct(shared, knowledge)`` method."""
    cls = load_object(path, "--attack")
    try:
        attack = cls() if callable(cls) else cls
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"--attack {path}: {path.partition(':')[2]}() could not be built with no arguments "
                         f"({type(error).__name__}: {error}).") from None
    method = getattr(attack, "reconstruct", None)
    if not callable(method):
        raise ValueError(f"--attack {path} does not follow the attack protocol: it has no reconstruct(shared, "
                         "knowledge) method.")
    try:
        inspect.signature(method).bind(None, None)
    except TypeError:
        raise ValueError(f"--attack {path} does not follow the attack protocol: its reconstruct cannot be called as "
                         "reconstruct(shared, knowledge).") from None
    except ValueError:  # a builtin without a signature: let it run
        pass
    return attack


def load_defence(path: str) -> DefenceSetting:
    """A brought-in defence: ``module:function``, ``function(update, seed) -> update``, checked on a test update."""
    function = load_object(path, "--defence")
    if not callable(function):
        raise ValueError(f"--defence {path} is not a function(update, seed) -> update.")
    probe = OrderedDict(x=torch.ones(4, device="cpu"))
    try:
        out = function(OrderedDict(probe), 0)
    except Exception as error:  # noqa: BLE001
        raise ValueError(f"--defence {path} failed on a test update ({type(error).__name__}: {error}): it must be "
                         "function(update: OrderedDict[str, Tensor], seed: int) -> OrderedDict.") from None
    if not isinstance(out, dict) or list(out) != list(probe) or not all(isinstance(t, torch.Tensor)
                                                                        for t in out.values()):
        raise ValueError(f"--defence {path} must return the update's tensors under the same names, got "
                         f"{type(out).__name__}.")
    return DefenceSetting(path, None, transform=lambda update, seed: OrderedDict(function(OrderedDict(update), seed)))


def check_attack(name: str) -> str:
    """``name`` if it is a registered attack that rebuilds text from a LoRA update (or an import path), else one
    clear error listing those."""
    if is_import_path(name):
        load_attack(name)
        return name
    if name not in attack_names(lora_text=True):
        check_attack_name(name)
        raise ValueError(f"attack {name!r} does not rebuild text from a LoRA update: choose one of "
                         f"{', '.join(attack_names(lora_text=True))}.")
    return name


def make_attack(name: str) -> Attack:
    """The attack a row runs: by registry name (its defaults), or a brought-in class by import path."""
    return load_attack(name) if is_import_path(name) else get_attack(name)


def choose_defences(names: Sequence[str]) -> list[DefenceSetting | str]:
    """Check ``--defence`` names: registered names stay names (every knob value of the suite), import paths become
    brought-in defences; one clear error for an unknown name."""
    chosen: list[DefenceSetting | str] = []
    for name in names:
        chosen.append(load_defence(name) if is_import_path(name) else check_defence(name).name)
    return chosen


# --- suites ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Suite:
    """What one evaluation runs: every ``defences`` setting on the ``main`` evaluation setting, the ``spread`` of
    defence settings on each of the other ``settings``; every ``attacks`` on each, unaware and aware; ``messages``
    attacked messages per row, of sentences from ``source`` (``None``: the course sentences; else a Rotten Tomatoes
    folder); utility measured by federated runs of ``recipe``."""

    name: str
    main: EvaluationSetting
    settings: tuple[EvaluationSetting, ...] = ()
    defences: tuple[DefenceSetting, ...] = ()
    spread: tuple[DefenceSetting, ...] = (DefenceSetting(BASELINE),)
    attacks: tuple[str, ...] = ("lora-best",)
    messages: int = 1
    recipe: sweep.Recipe = sweep.Recipe()
    source: str | None = None

    def __post_init__(self) -> None:
        check_int(self.messages, "messages", hint="attacked messages per row")
        if not self.attacks:
            raise ValueError("a suite needs at least one attack: give --attack NAME.")
        for group in (self.defences, self.spread):
            if BASELINE not in [d.name for d in group]:
                raise ValueError(f"a suite's defences must include the baseline {BASELINE!r}: utility and verdicts "
                                 "are read against it.")

    def cells(self) -> list[tuple[EvaluationSetting, DefenceSetting]]:
        """Every (evaluation setting, defence setting) the suite runs, the main setting's first."""
        found = [(self.main, d) for d in self.defences]
        found += [(s, d) for s in self.settings if s != self.main for d in self.spread]
        return list(dict.fromkeys(found))

    def defence_settings(self) -> list[DefenceSetting]:
        """Every defence setting of the suite, once, in the order of the cells."""
        return list(dict.fromkeys(d for _, d in self.cells()))

    def victims_needed(self) -> dict[tuple[models.PublicModel, int], int]:
        """Per (model, sentence length), the most victim sentences one cell needs: messages × clients × sentences."""
        need: dict[tuple[models.PublicModel, int], int] = {}
        for s, d in self.cells():
            count = self.messages * d.clients_per_message() * d.sentences_per_client(s)
            need[(s.model, s.tokens)] = max(need.get((s.model, s.tokens), 0), count)
        return need

    def rows(self) -> list[tuple[EvaluationSetting, DefenceSetting, str, bool]]:
        """Every row: each cell × each attack × unaware then aware."""
        return [(s, d, a, aware) for s, d in self.cells() for a in self.attacks for aware in (False, True)]

    def choose(self, attacks: Sequence[str] | None = None,
               defences: Sequence[DefenceSetting | str] | None = None) -> "Suite":
        """The suite with only ``attacks`` (names or import paths) and only ``defences`` (registry names, at the
        suite's values, and brought-in defences, which join both the main setting and the spread); the baseline
        always stays."""
        changes: dict = {}
        if attacks:
            changes["attacks"] = tuple(dict.fromkeys(attacks))
        if defences:
            names = {d for d in defences if isinstance(d, str)} | {BASELINE}
            brought = tuple(d for d in defences if isinstance(d, DefenceSetting))
            changes["defences"] = tuple(d for d in self.defences if d.name in names) + brought
            changes["spread"] = tuple(d for d in self.spread if d.name in names) + brought
            missing = sorted(names - {d.name for d in changes["defences"]})
            if missing:
                raise ValueError(f"the {self.name} suite has no setting of defence {missing[0]!r}.")
        return replace(self, **changes)

    def plan(self, seed: int) -> dict:
        """What the rows of a record depend on besides the code: a record resumes only with the same plan."""
        return {"suite": self.name, "seed": seed, "attacks": list(self.attacks), "messages": self.messages,
                "source": self.source, "cells": [f"{s.label()} | {d.label}" for s, d in self.cells()],
                "recipe": {k: v for k, v in recipe_json(self.recipe).items()}}


def recipe_json(recipe: sweep.Recipe) -> dict:
    """The utility runs' recipe as plain values (the model by name, the source as a string)."""
    out = {}
    for f in dataclasses.fields(recipe):
        value = getattr(recipe, f.name)
        out[f.name] = value.name if isinstance(value, models.PublicModel) else (
            str(value) if isinstance(value, Path) else value)
    return out


_MINILM, _MPNET = models.resolve("minilm"), models.resolve("mpnet-base")  # resolved once, as leakage.BENCHMARK's


def quick_suite(data_folder: str | Path | None = None) -> Suite:
    """The CPU suite (minutes on two cores): every registered defence at its ``quick`` values on ``tiny-bert``,
    16 tokens, batch 1, r=8, after 20 steps of training; undefended also on ``minilm`` and in the first round
    (``B = 0``) at r=64, where the message's 18 inputs are fewer than the rank and ``dL/dB`` pins every token. The
    first round at r=8, where ``lora-best`` falls back to DLG (a minute or more per message on a CPU), is the regime
    of FFA-LoRA's row (``A`` frozen, no ``dL/dA``) and of the full suite. ``lora-best`` and ``span``, one attacked
    message per row, from the course sentences; utility from ``tiny-bert`` (random weights: not a measure of
    utility, the record says so)."""
    tiny, minilm = models.TINY_BERT, _MINILM
    main = EvaluationSetting(model=tiny)
    return Suite(name="quick", main=main,
                 settings=(replace(main, trained_steps=0, rank=64), replace(main, model=minilm)),
                 defences=registered_defences(quick=True), spread=(DefenceSetting(BASELINE),),
                 attacks=("lora-best", "span"), messages=1, recipe=sweep.Recipe(model=tiny), source=None)


def full_suite(data_folder: str | Path | None = None) -> Suite:
    """The recorded table (GPU-sized): every registered defence at its ``full`` values on ``minilm``, 16 tokens,
    batch 1, r=8, 20 steps trained, FedSGD; one axis at a time off it (``tiny-bert`` and ``mpnet-base``; 32, 64
    and 128 tokens; batch 2, 4, 8; the first round; 4 watched rounds; FedAvg with SGD and Adam; r=16, 64) and a
    few crossings (``mpnet-base`` at 64 tokens and at batch 4; the first round with 4 watched rounds; 64 tokens at
    batch 4), each with one
    setting of every defence. Every attack that rebuilds text; 2 messages per row, from the Rotten Tomatoes folder
    ``data_folder`` (the course sentences are too few for its longer settings); utility from ``minilm`` (on 400
    Rotten Tomatoes sentences with ``data_folder``)."""
    tiny, minilm, mpnet = models.TINY_BERT, _MINILM, _MPNET
    main = EvaluationSetting(model=minilm)
    axes = [replace(main, model=tiny), replace(main, model=mpnet),
            *(replace(main, tokens=n) for n in (32, 64, 128)),
            *(replace(main, batch_size=b) for b in (2, 4, 8)),
            replace(main, trained_steps=0), replace(main, observed_rounds=4),
            replace(main, protocol="fedavg", local_steps=5, optimizer="sgd"),
            replace(main, protocol="fedavg", local_steps=5, optimizer="adam", lr=1e-3),
            *(replace(main, rank=r) for r in (16, 64)),
            replace(main, model=mpnet, tokens=64), replace(main, model=mpnet, batch_size=4),
            replace(main, trained_steps=0, observed_rounds=4), replace(main, tokens=64, batch_size=4)]
    source = None if data_folder is None else str(data_folder)
    recipe = sweep.Recipe(model=minilm, source=source, limit=None if source is None else 400)
    return Suite(name="full", main=main, settings=tuple(axes), defences=registered_defences(quick=False),
                 spread=representative_defences(), attacks=attack_names(lora_text=True), messages=2, recipe=recipe,
                 source=source)


MINILM_VALUES: dict[str, tuple] = {
    "dp-sgd": (1e-5, 1e-4, 1e-3, 1.0), "clip": (1.0, 0.01), "noise": (1e-5, 1e-4, 1e-3), "top-k": (0.5, 0.1, 0.01),
    "quantise": (16, 8, 4), "batch": (2, 4), "local-steps": (2, 5), "rank": (4, 1), "secure-agg": (2, 4),
    "frozen-layers": (1,), "central-dp": (1e-3,)}
"""The ``minilm`` suite's knob values: each defence from mild to its ``full`` grid's strongest, fewer of them than
there so that the suite fits a CPU; batches and secure aggregates stop at 4 (a secure aggregate of 16 one-sentence
clients is a 16-sentence batch, past the one-round batch attack's memory on a 24 GiB machine), and LoRA off the
first layer only (``lora-best`` runs DLG there, minutes a message on a CPU)."""


def minilm_suite(data_folder: str | Path | None = None) -> Suite:
    """The recorded defence table where no GPU is lent (about an hour on two CPU threads): every registered
    defence at its ``MINILM_VALUES`` on the full suite's main setting (``minilm``, 16 tokens, batch 1, r=8, 20 steps
    trained, FedSGD), and the undefended message and FFA-LoRA's at r=64, where a message's 18 inputs are fewer than
    the rank. ``lora-best`` (the span attack, the later layers, round 0's row spaces, and DLG where those cannot
    reach) and ``span``; utility from ``minilm``, as in the full suite; 1 message per row (where a known noise drowns
    every span, ``lora-best`` runs DLG, several CPU minutes a message on MiniLM)."""
    full = full_suite(data_folder)
    defences = tuple(DefenceSetting(name, value) for name, spec in DEFENCES.items()
                     for value in (MINILM_VALUES[name] if spec.needs_value else [None]))
    return replace(full, name="minilm", settings=(replace(full.main, rank=64),), defences=defences,
                   spread=(DefenceSetting(BASELINE), DefenceSetting("ffa-lora")), attacks=("lora-best", "span"),
                   messages=1)


SUITES: dict[str, Callable[[str | Path | None], Suite]] = {"quick": quick_suite, "minilm": minilm_suite,
                                                           "full": full_suite}
"""The suites by name (``lora-leak evaluate --suite NAME``); each is built from the data folder (or ``None``)."""


def get_suite(name: str, data_folder: str | Path | None = None) -> Suite:
    """The suite called ``name``, or one clear error listing the names."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}.")
    return SUITES[name](data_folder)


# --- the victims' sentences and messages ----------------------------------------------------------------------------

Victim = tuple[data.Example, tuple[str, ...]]
"""A victim's private sentence and the texts it was cut (or joined) from, which the public data then leave out."""


def victim_texts(examples: Sequence[data.Example], tokenizer, tokens: int, count: int) -> list[Victim]:
    """``count`` distinct sentences of exactly ``tokens`` tokens, each with the texts it was cut from: first the
    sentences long enough, cut as ``data.truncate_to_tokens`` cuts them, then shorter consecutive ones joined and
    cut. A longer list starts with a shorter one's sentences, so every cell of a setting attacks the same first
    victims."""
    chosen: list[Victim] = []

    def add(pieces: list[str], label: int, used: Sequence[str]) -> None:
        text = tokenizer.convert_tokens_to_string(pieces[:tokens])
        if text not in {e.text for e, _ in chosen}:
            chosen.append((data.Example(text, label), tuple(used)))

    split = [(e, tokenizer.tokenize(e.text)) for e in examples]
    for example, pieces in split:
        if len(chosen) == count:
            break
        if len(pieces) >= tokens:
            add(pieces, example.label, [example.text])
    joined: list[data.Example] = []
    for example, pieces in split:
        if len(chosen) == count:
            break
        if len(pieces) >= tokens:
            continue
        joined.append(example)
        together = tokenizer.tokenize(" ".join(e.text for e in joined))
        if len(together) >= tokens:
            add(together, joined[0].label, [e.text for e in joined])  # the first sentence's label
            joined = []
    if len(chosen) < count:
        raise ValueError(f"the suite needs {count} sentences of {tokens} tokens but its data give {len(chosen)}: "
                         "pass a Rotten Tomatoes folder with --data.")
    return chosen


def draw_victims(suite: Suite, pool: Sequence[data.Example]) -> dict[tuple[models.PublicModel, int], list[Victim]]:
    """Per (model, sentence length) of the suite, the victims its hungriest cell needs (``victim_texts``): drawn
    once, before any row runs, so that data too short for a setting is one clear error at the start."""
    return {(model, tokens): victim_texts(pool, model.tokenizer, tokens, count)
            for (model, tokens), count in suite.victims_needed().items()}


def split_victims(chosen: Sequence[data.Example], messages: int, clients: int,
                  per_client: int) -> list[list[list[data.Example]]]:
    """``messages`` groups of ``clients`` victims, each holding ``per_client`` consecutive sentences of ``chosen``."""
    sentences = iter(chosen)
    return [[[next(sentences) for _ in range(per_client)] for _ in range(clients)] for _ in range(messages)]


@dataclass
class Watched:
    """One attacked message and what goes with it: the other watched rounds' messages, the private sentences the
    server's view holds, and the ε its DP-SGD client spent over the watched rounds (``None`` without one)."""

    messages: list[SharedUpdate]
    references: list[str]
    epsilon: float | None


def defended_messages(group: Sequence[Sequence[data.Example]], setting: EvaluationSetting, defence: DefenceSetting,
                      *, recipe: sweep.Recipe, public: Sequence[data.Example], seed: int = 0) -> Watched:
    """The messages the server sees of one victim group over the watched rounds, defended as the registry says.

    The global adapter trains ``setting.trained_steps`` steps on ``public`` (the other clients' data) first; each
    victim is built by the defence's client factory (a transforming, DP-SGD or masking client) on the set-up the
    defence's overrides change; the server attacks what ``defence.attacked`` gives it (the aggregate under secure
    aggregation, else the first victim's message).
    """
    knobs = dict(model=setting.model, rank=setting.rank, model_seed=seed, protocol=setting.protocol, lr=setting.lr,
                 local_steps=setting.local_steps, optimizer=setting.optimizer,
                 batch_size=max(len(sentences) for sentences in group))
    setup = FederatedSetup(**{**knobs, **defence.setup_changes(recipe)})  # built once: alpha follows the rank
    config.set_seed(seed)
    model = setup.build_model()
    states = fl.trained_adapters(setup, public, setting.trained_steps, setting.observed_rounds, seed)
    ids = [1000 + i for i in range(len(group))]
    make = defence.client(recipe, ids)
    clients = [make(cid, list(sentences), model, setup, seed) for cid, sentences in zip(ids, group)]
    server = defence.server(setup, states[0], seed)
    messages = []
    for r, state in enumerate(states):
        round = setting.trained_steps + r
        server.global_state = OrderedDict((n, t.clone()) for n, t in state.items())
        sent = server.broadcast(round)
        for client in clients:
            server.receive(client.client_update(sent, round))
        messages.append(defence.attacked(server, ids, round))
    seen = clients if defence.secure else clients[:1]
    references = [e.text for client in seen for e in sweep.message_references(client)]
    epsilon = None
    if defence.accountant:
        epsilon = float(clients[0].epsilon(setting.observed_rounds, recipe.dp_delta))
    return Watched(messages, references, epsilon)


# --- one row -------------------------------------------------------------------------------------------------------

def row_key(setting: EvaluationSetting, defence: DefenceSetting, attack: str, aware: bool) -> str:
    """The row's unique key in the record."""
    return f"{setting.label()} | {defence.label} | {attack} | {'aware' if aware else 'unaware'}"


def told_nothing(watched: Sequence[Watched], defence: DefenceSetting, attack: str) -> bool:
    """True when telling a registered attack the defence tells it nothing it reads: the registered attacks read only
    the noise a known defence left (``KnownDefence.noise``), and this defence leaves none in these messages. The aware
    row is then the unaware one (``same_as_unaware``), not a second run that differs only in its random draws."""
    return not is_import_path(attack) and all(not defence.known(view.messages[0]).noise for view in watched)


def attack_row(watched: Sequence[Watched], setting: EvaluationSetting, defence: DefenceSetting, attack: str,
               method: Attack, *, aware: bool, seed: int = 0) -> dict:
    """Attack every message of a cell, told the defence or not, and score it: one row of the record (the means over
    its sentences, and each sentence's ``SentenceResult``)."""
    key = row_key(setting, defence, attack, aware)
    tokenizer = setting.model.tokenizer
    results, seconds, error = [], 0.0, None
    failures = Exception if is_import_path(attack) else ValueError  # a brought-in attack's bug is kept in the row
    config.set_seed(config.derive_seed(seed, zlib.crc32(key.encode())))  # the same draws whatever rows ran before
    for view in watched:
        knowledge = Knowledge(length=longest(view.references, tokenizer), batch_size=len(view.references),
                              other_rounds=tuple(view.messages[1:]),
                              defence=defence.known(view.messages[0]) if aware else None)
        start = time.perf_counter()
        try:
            rebuilt = method.reconstruct(view.messages[0], knowledge)
            if not isinstance(rebuilt, Reconstruction):
                raise ValueError(f"reconstruct returned {type(rebuilt).__name__}, not a Reconstruction")
            rows = result_rows(view.references, rebuilt, view.messages[0], knowledge, attack)
        except failures as failed:  # a registered attack refuses with one ValueError (the round 0 span, ...)
            words = str(failed).splitlines()[0] if str(failed) else ""
            error = f"{type(failed).__name__}: {words}" if words else type(failed).__name__
            seconds += time.perf_counter() - start
            break
        seconds += time.perf_counter() - start
        results += rows

    def mean(name: str) -> float | None:
        return float(np.mean([getattr(r, name) for r in results])) if results and error is None else None

    epsilons = [w.epsilon for w in watched if w.epsilon is not None]
    return {"key": key, "setting": setting.as_json(), "setting_label": setting.label(), **defence.as_json(),
            "attack": attack, "aware": aware, "rouge1": mean("rouge1"), "rouge2": mean("rouge2"),
            "rougeL": mean("rougeL"), "token_accuracy": mean("token_accuracy"), "exact_rate": mean("exact_match"),
            "sentences": len(results) if error is None else 0, "epsilon": max(epsilons) if epsilons else None,
            "seconds": seconds, "device": device_name(), "load_average": load_average(), "error": error,
            "same_as_unaware": False,
            "results": [r.as_json() for r in results] if error is None else []}


# --- utility ---------------------------------------------------------------------------------------------------------

def pretrained(model: models.PublicModel) -> bool:
    """True when the model starts from trained weights, so its held-out accuracy measures utility; a randomly
    initialised entry (``tiny-bert``) barely learns in a few rounds."""
    return not (model.spec.offline and model.spec.weights is None)


def utility(defence: DefenceSetting, recipe: sweep.Recipe) -> dict:
    """The held-out accuracy after a federated run of ``recipe`` under the defence (``fl.run_federated``), and the ε
    its clients spent when it has an accountant."""
    start = time.perf_counter()
    history = fl.run_federated(**defence.run_kwargs(recipe))
    epsilon = history.clients[0].epsilon(recipe.rounds, recipe.dp_delta) if defence.accountant else None
    return {"accuracy": float(history.accuracy[-1]), "accuracy_before": float(history.accuracy[0]),
            "model": recipe.model.name, "learns": pretrained(recipe.model), "rounds": recipe.rounds,
            "epsilon": None if epsilon is None else float(epsilon), "seconds": time.perf_counter() - start}


# --- the machine and the record ------------------------------------------------------------------------------------

def device_name() -> str:
    """The device the work ran on, in words (the GPU's name, or ``cpu``)."""
    device = config.device()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return str(device)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def machine() -> dict:
    """The hardware and load the seconds come from."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_average": load_average(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "device": device_name()}


def command_line(suite: str, out: str | Path, seed: int, attacks: Sequence[str] = (), defences: Sequence[str] = (),
                 data_folder: str | Path | None = None) -> str:
    """The ``lora-leak evaluate`` command that writes (and resumes) this record."""
    words = ["lora-leak", "evaluate", "--suite", suite]
    words += [w for a in attacks for w in ("--attack", a)] + [w for d in defences for w in ("--defence", d)]
    words += ["--data", str(data_folder)] if data_folder is not None else []
    words += ["--out", str(out), "--seed", str(seed)]
    return " ".join(words)


def write_json(record: dict, path: Path) -> None:
    """Write the record to a temporary file beside ``path``, then rename it: a killed run never leaves half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(record, indent=1, allow_nan=False), encoding="utf-8")
    os.replace(temporary, path)


def previous_record(path: Path, plan: dict, code: dict, say: Callable[[str], None]) -> dict | None:
    """The record at ``path`` to resume, or ``None`` (saying why) when there is none or it was made by other code
    or another plan."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        say(f"{path} is not a readable record: starting over.")
        return None
    if not isinstance(record, dict) or not isinstance(record.get("rows"), list):
        say(f"{path} is not an evaluation record: starting over.")
        return None
    stale = stale_files(record.get("fingerprint") or {}, code)
    if stale:
        say(f"{path} was recorded by other code ({stale[0]} changed): starting over.")
        return None
    if record.get("plan") != plan:
        say(f"{path} was recorded for another suite, seed, attacks or defences: starting over.")
        return None
    return record


def run_suite(suite: Suite, out: str | Path, *, seed: int = 0, command: str | None = None, progress: bool = True,
              limit: int | None = None, say: Callable[[str], None] = print) -> dict:
    """Run every row of ``suite`` not yet in the record at ``out`` and return the record.

    The JSON is rewritten after every row and every utility run (``write_json``); a rerun with the same ``out``, the
    same plan and the same code fingerprint skips the rows already there, and starts over (saying so) otherwise.
    ``limit`` stops after that many new rows (the record stays resumable). The ``.md`` table and ``.png`` figure
    beside ``out`` are written when every row is done.
    """
    from tqdm.auto import tqdm

    path = check_record_path(out)
    victims = draw_victims(suite, fl.load_examples(suite.source, seed=seed))
    methods = {name: make_attack(name) for name in suite.attacks}
    path.parent.mkdir(parents=True, exist_ok=True)
    plan, code = suite.plan(seed), fingerprint()
    command = command or command_line(suite.name, path, seed)
    record = previous_record(path, plan, code, say) or {
        "suite": suite.name, "date": datetime.date.today().isoformat(), "machine": machine(), "fingerprint": code,
        "command": command, "plan": plan, "threshold": THRESHOLD, "keep": KEEP, "utility": {}, "rows": [],
        "runs": [], "complete": False}
    started = datetime.datetime.now().isoformat(timespec="seconds")
    record.setdefault("runs", []).append({"started": started, "machine": machine()})
    done = {row["key"] for row in record["rows"]}
    todo = [r for r in suite.rows() if row_key(*r) not in done]
    if done:
        say(f"resuming {path}: {len(done)} rows done, {len(todo)} to go.")
    recipe = replace(suite.recipe, seed=seed)
    by_key = {row["key"]: row for row in record["rows"]}
    cell, watched, new = None, [], 0
    bar = tqdm(total=len(suite.rows()), initial=len(suite.rows()) - len(todo), desc=f"{suite.name} suite rows",
               disable=not progress)
    for setting, defence, attack, aware in todo:
        if limit is not None and new >= limit:
            break
        for d in (DefenceSetting(BASELINE), defence):
            if d.label not in record["utility"]:
                bar.set_postfix_str(f"utility of {d.label}")
                record["utility"][d.label] = utility(d, recipe)
                write_json(record, path)
        if cell != (setting, defence):
            bar.set_postfix_str(f"{defence.label} on {setting.label()}")
            watched = cell_messages(setting, defence, messages=suite.messages, recipe=recipe,
                                    victims=victims[(setting.model, setting.tokens)], seed=seed)
            cell = (setting, defence)
        unaware = by_key.get(row_key(setting, defence, attack, False))
        if aware and unaware is not None and told_nothing(watched, defence, attack):
            row = {**unaware, "key": row_key(setting, defence, attack, True), "aware": True, "seconds": 0.0,
                   "same_as_unaware": True}
        else:
            row = attack_row(watched, setting, defence, attack, methods[attack], aware=aware, seed=seed)
        row.update(utility_fields(record["utility"], defence))
        by_key[row["key"]] = row
        record["rows"].append(row)
        write_json(record, path)
        new += 1
        bar.update(1)
    bar.close()
    record["complete"] = len(record["rows"]) == len(suite.rows())
    write_json(record, path)
    if record["complete"]:
        path.with_suffix(".md").write_text(markdown(record) + "\n", encoding="utf-8")
        plot(record, path.with_suffix(".png"))
    return record


def cell_messages(setting: EvaluationSetting, defence: DefenceSetting, *, messages: int, recipe: sweep.Recipe,
                  victims: Sequence[Victim], seed: int = 0) -> list[Watched]:
    """The ``messages`` defended views the server attacks in one cell, from the first of the setting's victims (the
    same first victims for every defence); the other clients' public data leave out every text they came from."""
    per_client, clients = defence.sentences_per_client(setting), defence.clients_per_message()
    chosen = victims[:messages * clients * per_client]
    sources = {text for _, used in chosen for text in used}
    public = [e for e in data.course_sentences() if e.text not in sources]
    return [defended_messages(group, setting, defence, recipe=recipe, public=public, seed=seed)
            for group in split_victims([e for e, _ in chosen], messages, clients, per_client)]


def utility_fields(utilities: dict, defence: DefenceSetting) -> dict:
    """What a row records of the utility runs: its defence's accuracy, the undefended one, whether they measure."""
    mine, baseline = utilities[defence.label], utilities[DefenceSetting(BASELINE).label]
    return {"utility": mine["accuracy"], "undefended_utility": baseline["accuracy"], "utility_model": mine["model"],
            "utility_learns": mine["learns"], "training_epsilon": mine["epsilon"]}


# --- verdicts, recommendations, the table and the figure ------------------------------------------------------------

def verdicts(record: dict) -> list[dict]:
    """Per defence setting (in the order of the rows), its worst case: the highest mean ROUGE-1 of any row (every
    attack, unaware and aware, every evaluation setting it ran on), and the attack, awareness and setting that set
    it (``set_by``: every attack and awareness that reached it there); with its utility, the share of undefended
    accuracy it keeps and the largest ε of its rows."""
    found = []
    baseline = record["utility"].get(BASELINE, {}).get("accuracy")
    for label in dict.fromkeys(row["defence_label"] for row in record["rows"]):
        rows = [row for row in record["rows"] if row["defence_label"] == label]
        scored = [row for row in rows if row["rouge1"] is not None]
        worst = max(scored, key=lambda row: row["rouge1"]) if scored else None
        tied = [row for row in scored if worst and row["setting_label"] == worst["setting_label"]
                and row["rouge1"] >= worst["rouge1"] - 1e-12]
        accuracy = record["utility"].get(label, {}).get("accuracy")
        epsilons = [row["epsilon"] for row in rows if row["epsilon"] is not None]
        found.append({"defence": rows[0]["defence"], "value": rows[0]["value"], "label": label,
                      "rouge1": worst["rouge1"] if worst else None, "attack": worst["attack"] if worst else None,
                      "aware": worst["aware"] if worst else None, "set_by": set_by(tied),
                      "setting": worst["setting_label"] if worst else None,
                      "utility": accuracy, "kept": accuracy / baseline if accuracy is not None and baseline else None,
                      "learns": record["utility"].get(label, {}).get("learns"),
                      "epsilon": max(epsilons) if epsilons else None, "rows": len(rows),
                      "errors": sum(row["error"] is not None for row in rows)})
    return found


def set_by(rows: Sequence[dict]) -> str:
    """The attacks and awarenesses of ``rows`` in words, e.g. ``lora-best (unaware, aware); span (aware)``."""
    by_attack: dict[str, list[str]] = {}
    for row in rows:
        by_attack.setdefault(row["attack"], []).append("aware" if row["aware"] else "unaware")
    return "; ".join(f"{attack} ({', '.join(dict.fromkeys(kinds))})" for attack, kinds in by_attack.items())


def recommend(record: dict, threshold: float | None = None, keep: float | None = None) -> list[dict]:
    """Per defence, the cheapest setting (most accuracy kept; then lower ROUGE-1, smaller ε) whose worst case is
    below ``threshold`` ROUGE-1 while it keeps at least ``keep`` of the undefended accuracy, or "none found"."""
    threshold = record.get("threshold", THRESHOLD) if threshold is None else threshold
    keep = record.get("keep", KEEP) if keep is None else keep
    rows = []
    found = verdicts(record)
    for name in dict.fromkeys(v["defence"] for v in found if v["defence"] != BASELINE):
        family = [v for v in found if v["defence"] == name]
        good = [v for v in family if v["rouge1"] is not None and v["rouge1"] < threshold
                and v["kept"] is not None and v["kept"] >= keep]
        best = max(good, key=lambda v: (v["utility"], -v["rouge1"], -(v["epsilon"] or 0.0))) if good else None
        if best is None:
            words = (f"none found: no setting brought the worst case below {100 * threshold:.0f}% ROUGE-1 while "
                     f"keeping {100 * keep:.0f}% of undefended accuracy")
        else:
            words = (f"{best['label']}: worst case {100 * best['rouge1']:.0f}% ROUGE-1 (set by {best['set_by']}), "
                     f"keeps {100 * best['kept']:.0f}% of undefended accuracy")
            if best["errors"]:
                words += f"; {best['errors']} of its {best['rows']} rows did not run (an attack refused): a lower bound"
        rows.append({"defence": name, "setting": best["label"] if best else None, "recommendation": words})
    return rows


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows])


def utility_note(record: dict) -> str:
    """What the utility column measures, and a warning when its model does not learn."""
    runs = list(record["utility"].values())
    if not runs:
        return "No utility run."
    model = runs[0]["model"]
    note = (f"Utility: held-out accuracy after {runs[0]['rounds']} federated rounds of `{model}` under each defence "
            "(`experiments.sweep`).")
    if not all(run["learns"] for run in runs):
        note += (f" **`{model}` has random weights: its accuracy is not a utility measure** (the full suite uses "
                 "`minilm`), so neither are the kept shares nor the recommendations' accuracy condition.")
    return note


def machine_text(machine_: dict) -> str:
    """A machine record in words."""
    parts = [f"{machine_['cpu']} CPU", f"{machine_['cores']} cores", f"{machine_['threads']} threads",
             f"GPU {machine_['gpu']}" if machine_.get("gpu") else "no GPU"]
    if machine_.get("load_average") is not None:
        parts.append(f"load average {machine_['load_average']:.1f} at the start")
    return ", ".join(parts)


def markdown(record: dict) -> str:
    """The record as Markdown: the verdict per defence setting with the attack that set it, its utility and ε; the
    recommendation per defence; and the worst case in every cell."""
    where = machine_text(record["machine"])
    lines = [f"# lora-leak evaluate: the {record['suite']} suite", "",
             f"Run on {record['date']} ({where}) with `{record['command']}`; code fingerprint "
             f"`{record['fingerprint']['sha256'][:12]}`." + ("" if record.get("complete") else
                                                            " **Incomplete: rerun the command to finish it.**"), "",
             utility_note(record), "",
             f"A defence setting's verdict is its worst case: the highest mean ROUGE-1 of any attack, unaware or told "
             f"the defence, on any setting it ran on. Recommended: the setting that keeps most accuracy with a worst "
             f"case below {100 * record['threshold']:.0f}% while keeping {100 * record['keep']:.0f}% of undefended "
             "accuracy.", "", "## Verdict per defence setting", ""]
    rows = [[v["label"], _pct(v["rouge1"]), v["set_by"] or "–", v["setting"] or "–",
             _pct(v["utility"]) + ("" if v["learns"] in (None, True) else " (not a measure)"), _pct(v["kept"]),
             "–" if v["epsilon"] is None else f"{v['epsilon']:.3g}",
             f"{v['rows']}" + (f" ({v['errors']} did not run)" if v["errors"] else "")] for v in verdicts(record)]
    lines += [_table(["defence", "worst ROUGE-1", "set by", "on", "utility", "kept", "ε", "rows"], rows), "",
              "## Recommendation per defence", ""]
    lines += [_table(["defence", "recommendation"], [[r["defence"], r["recommendation"]] for r in recommend(record)]),
              "", "## Worst case in every cell", ""]
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in record["rows"]:
        cells.setdefault((row["setting_label"], row["defence_label"]), []).append(row)
    detail = []
    for (setting, label), rows_ in cells.items():
        scored = [r for r in rows_ if r["rouge1"] is not None]
        worst = max(scored, key=lambda r: r["rouge1"]) if scored else None
        tied = [r for r in scored if worst and r["rouge1"] >= worst["rouge1"] - 1e-12]
        detail.append([setting, label, _pct(worst["rouge1"]) if worst else "–",
                       set_by(tied) if worst else (rows_[0]["error"] or "–")[:60],
                       _pct(worst["token_accuracy"]) if worst else "–",
                       _pct(worst["exact_rate"]) if worst else "–", f"{sum(r['seconds'] for r in rows_):.1f}"])
    lines.append(_table(["setting", "defence", "worst ROUGE-1", "set by", "token acc", "exact", "attack s"], detail))
    return "\n".join(lines)


def plot(record: dict, path: str | Path) -> Path:
    """The privacy–utility figure: each defence setting's worst-case ROUGE-1 against its utility (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    points: dict[tuple[float, float], list[dict]] = {}  # settings at the same point share one label
    for v in verdicts(record):
        if v["rouge1"] is not None and v["utility"] is not None:
            points.setdefault((round(v["utility"], 4), round(v["rouge1"], 4)), []).append(v)
    figure, axes = plt.subplots(figsize=(8, 5.5))
    for (x, y), group in points.items():
        baseline = any(v["defence"] == BASELINE for v in group)
        axes.scatter(x, y, color="black" if baseline else "tab:blue", marker="*" if baseline else "o",
                     s=120 if baseline else 30, zorder=3)
        axes.annotate(", ".join(v["label"] for v in group), (x, y), fontsize=6, xytext=(3, 3),
                      textcoords="offset points")
    axes.axhline(record["threshold"], color="tab:red", linestyle="--", linewidth=1,
                 label=f"{100 * record['threshold']:.0f}% ROUGE-1")
    undefended = record["utility"].get(BASELINE, {}).get("accuracy")
    if undefended:
        axes.axvline(record["keep"] * undefended, color="tab:green", linestyle=":", linewidth=1,
                     label=f"{100 * record['keep']:.0f}% of undefended accuracy")
    learns = all(run["learns"] for run in record["utility"].values())
    model = next(iter(record["utility"].values()))["model"] if record["utility"] else "?"
    axes.set_xlabel(f"held-out accuracy ({model}" + ("" if learns else ": random weights, not a utility measure") + ")")
    axes.set_ylabel("worst-case mean ROUGE-1 (any attack, unaware or aware)")
    axes.set_ylim(-0.05, 1.05)
    axes.margins(x=0.2)
    axes.set_title(f"lora-leak evaluate, {record['suite']} suite: privacy against utility")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
