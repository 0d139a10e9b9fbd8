"""Browser tests run only on request (``-m browser`` or ``LORA_LEAK_BROWSER=1``) where Chromium and Playwright are."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("LORA_LEAK_CHROMIUM", "/usr/bin/chromium"))
HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless Chromium (slow; run with -m browser)")


def _why_not(config: pytest.Config) -> str | None:
    expression = config.getoption("markexpr", "") or ""
    asked = ("browser" in expression and "not browser" not in expression) or os.environ.get("LORA_LEAK_BROWSER") == "1"
    if not asked:
        return "browser test: run it with `python -m pytest -m browser tests/browser`"
    if importlib.util.find_spec("playwright") is None:
        return "browser test: the Python package playwright is not installed"
    if not CHROMIUM.exists():
        return f"browser test: no Chromium at {CHROMIUM} (set LORA_LEAK_CHROMIUM to its path)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_not(config)
    if reason is None:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))
