"""A package's names on first use (PEP 562): the module-level ``__getattr__`` and ``__dir__`` that ``lora_leak_lib``
and ``lora_leak_lib.exercises`` share. Nothing here imports torch."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Mapping


def on_first_use(package: str, names: Mapping[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for ``package``: a name of ``names`` comes from the submodule it maps to, imported
    when first asked for; any other public submodule is imported the same way. ``namespace`` is the package's
    ``globals()`` (its ``__all__`` included)."""

    def __getattr__(name: str):
        if name in names:
            return getattr(importlib.import_module(f"{package}.{names[name]}"), name)
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return __getattr__, __dir__
