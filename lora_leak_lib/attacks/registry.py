"""The one registry of attacks: every attack is reached by name from here (CLI, lab, benchmarks, defence sweep).

An attack registers itself where it is defined, with ``@register(name, description, loss, **knobs)`` on its
class or factory; ``knobs`` are the defaults the registry passes and a caller may change. Every module of
``lora_leak_lib.attacks`` is imported when the package is, so adding an attack touches its own file only.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from .base import Attack


@dataclass(frozen=True)
class AttackSpec:
    """One registry entry: what the attack does, what its loss measures, its knobs and how to build it."""

    name: str
    description: str
    loss: str
    build: Callable[..., Attack]
    knobs: Mapping[str, object]
    rebuilds_text: bool = True
    lora: bool = True  # works on LoRA-only updates (False: it needs full fine-tuning's embedding gradients)

    def knob_names(self) -> list[str]:
        """Every keyword the attack's constructor takes."""
        return [n for n, p in inspect.signature(self.build).parameters.items()
                if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


ATTACKS: dict[str, AttackSpec] = {}
"""Registered attacks by name, in registration order (strongest first is not implied: see ``attack_names``)."""


DEFAULT_ATTACK = "lora-best"
"""The attack every menu offers first: the strongest on a LoRA-only update."""


def register(name: str, description: str, loss: str, rebuilds_text: bool = True, lora: bool = True,
             **knobs: object):
    """Class or factory decorator: add an attack to the registry under ``name`` with default ``knobs``."""
    def decorate(build):
        if name in ATTACKS:
            raise ValueError(f"an attack named {name!r} is registered already: pick another name.")
        ATTACKS[name] = AttackSpec(name, description, loss, build, MappingProxyType(dict(knobs)), rebuilds_text, lora)
        return build
    return decorate


def attack_names(lora_text: bool = False) -> tuple[str, ...]:
    """Registered names, the default first and the others in alphabetical order (not the order their modules
    happen to be imported in); ``lora_text`` keeps the attacks that rebuild sentences from a LoRA-only update (the
    menus of the CLI, the lab and the benchmarks)."""
    names = [n for n, spec in ATTACKS.items() if not lora_text or (spec.rebuilds_text and spec.lora)]
    return tuple(sorted(names, key=lambda n: (n != DEFAULT_ATTACK, n)))


def check_attack_name(name: str) -> AttackSpec:
    """The entry of ``name`` or one ``ValueError`` listing the names."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(attack_names())}.")
    return ATTACKS[name]


def get_attack(name: str, **knobs: object) -> Attack:
    """A ready attack by name, its registered defaults overridden by ``knobs`` (unknown knobs are refused)."""
    spec = check_attack_name(name)
    allowed = spec.knob_names()
    unknown = [k for k in knobs if k not in allowed]
    if unknown:
        raise ValueError(f"attack {name!r} has no knob {unknown[0]!r}: its knobs are {', '.join(allowed) or 'none'}.")
    return spec.build(**{**spec.knobs, **knobs})


def discover() -> None:
    """Import every module of the attacks package, so that each registers its attacks."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")
