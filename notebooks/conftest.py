"""Every notebook cell nbval runs is a slow test: `python -m pytest -m "not slow"` checks the library alone."""
import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
