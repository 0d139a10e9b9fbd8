"""The one check of every count and size in the library: a whole number within bounds, or one clear error."""
from __future__ import annotations


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
