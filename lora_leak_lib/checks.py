"""The checks of a person's input that need nothing heavy: counts and sizes, ranks, trained steps, texts, the
file a record is written to.

The command line runs them before torch or transformers load, so a bad input is answered at once; the library
runs the same functions, so each rule is written once.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path


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


DEFAULT_SEED = 0
"""The seed every notebook, script and command uses unless told another."""


def check_rank(rank: object, hidden_size: int | None = None, name: str = "the model") -> int:
    """Return ``rank`` or raise one clear error unless it is a positive integer, no larger than ``hidden_size``
    when one is given (``B·A`` then has no more directions than ``W`` itself); ``name`` names the model."""
    check_int(rank, "LoRA rank", hint="try 8")
    if hidden_size is not None and rank > hidden_size:
        raise ValueError(f"LoRA rank {rank} is larger than {name}'s hidden size {hidden_size}: B·A then has no "
                         "more directions than W itself; try 8.")
    return rank


SERVERS = ("honest", "malicious")
"""What the server does with the global adapter it sends: trains it honestly, or crafts it (a random ``B``)."""
DEFAULT_TRAINED_STEPS = 20
"""Training steps of the global adapter before the attacked round in the CLI and benchmark: ``B ≠ 0``."""
MAX_TRAINED_STEPS = 1000
"""The most pre-training steps a simulation takes: past a few dozen the adapter's span no longer changes."""


def check_trained_steps(trained_steps: object, name: str = "trained_steps") -> int:
    """``trained_steps`` (training steps of the global adapter before the attacked round), or one clear error that
    calls it ``name`` (the command line says ``--trained-steps``)."""
    return check_int(trained_steps, name, 0, MAX_TRAINED_STEPS, hint="it counts the adapter's training steps before "
                     f"the attacked round (0: the first round, B = 0); try {DEFAULT_TRAINED_STEPS}")


def visible_text(text: object) -> str:
    """Return ``text`` stripped of invisible format characters (zero-width spaces, ...) and surrounding space, or
    raise one clear error if nothing is left."""
    if not isinstance(text, str):
        raise ValueError(f"the text must be a string, got {type(text).__name__}.")
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf").strip()
    if not visible:
        raise ValueError("the text is empty (or only invisible characters): give a sentence of at least one word.")
    return visible


def check_record_path(path: str | Path) -> Path:
    """``path`` as the record's file, or one clear error when it (or the ``.md`` and ``.png`` beside it) cannot be
    written."""
    path = Path(path)
    for target in (path, path.with_suffix(".md"), path.with_suffix(".png")):
        if target.is_dir():
            raise ValueError(f"--out {path}: {target} is a folder; give a file name such as results.json.")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"--out {path} cannot be written: {folder} is not a writable folder.")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"--out {path} cannot be written: the file is read-only.")
    return path
