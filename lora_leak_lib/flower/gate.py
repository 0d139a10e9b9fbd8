"""Flower is optional: whether it is installed, the one error that says how to install it, its telemetry off."""
from __future__ import annotations

import os

INSTALL_HINT = 'Flower is not installed: run `pip install -e ".[flower]"` (flwr[simulation] 1.42).'


def flower_available() -> bool:
    """True when ``flwr`` can be imported."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def require_flower() -> None:
    """Raise one clear error, saying how to install the extra, when Flower is missing; switch its telemetry off.

    Flower reports each run (event type, number of nodes, a random id kept in ``~/.flwr/source``) to its
    makers unless ``FLWR_TELEMETRY_ENABLED=0``; a privacy course sends nothing, so its runs set that.
    """
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    if not flower_available():
        raise ValueError(INSTALL_HINT)
    import flwr.supercore.telemetry as telemetry

    telemetry.FLWR_TELEMETRY_ENABLED = "0"  # read once at import: also when flwr came in before this call
