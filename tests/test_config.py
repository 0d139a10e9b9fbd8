"""Quick/full mode parsing, sizes by mode, seeding and the environment report."""
import random

import numpy as np
import pytest
import torch

from lora_leak_lib import config


@pytest.mark.parametrize("value, expected", [("quick", "quick"), ("full", "full"), (" QUICK ", "quick"), ("Full", "full")])
def test_mode_reads_the_environment_variable(monkeypatch, value, expected):
    monkeypatch.setenv(config.MODE_VARIABLE, value)
    assert config.mode() == expected
    assert config.is_quick() == (expected == "quick")
    assert config.steps(quick=3, full=300) == (3 if expected == "quick" else 300)


def test_invalid_mode_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(config.MODE_VARIABLE, "fast")
    with pytest.raises(ValueError, match="'quick' or 'full'") as error:
        config.mode()
    assert "\n" not in str(error.value)


def test_default_is_quick_on_ci_even_with_a_gpu(monkeypatch):
    monkeypatch.delenv(config.MODE_VARIABLE, raising=False)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.mode() == "quick"


def test_default_follows_the_device_off_ci(monkeypatch):
    monkeypatch.delenv(config.MODE_VARIABLE, raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(config.DEVICE_VARIABLE, raising=False)  # the default device: whatever the session chose
    monkeypatch.setattr(config, "_chosen", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert config.mode() == "quick"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert config.mode() == "full"


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_set_seed_repeats_python_numpy_and_torch():
    config.set_seed(123)
    first = _draw()
    config.set_seed(123)
    assert _draw() == first
    config.set_seed(124)
    assert _draw() != first


def test_setup_seeds_and_reports(monkeypatch):
    monkeypatch.setenv(config.MODE_VARIABLE, "quick")
    report = config.setup(7)
    first = torch.rand(2).tolist()
    assert (report.mode, report.seed, report.device) == ("quick", 7, config.device().type)
    assert str(report).startswith("mode=quick  seed=7")
    config.setup(7)
    assert torch.rand(2).tolist() == first


def test_environment_report_names_versions_device_and_mode(monkeypatch):
    monkeypatch.setenv(config.MODE_VARIABLE, "full")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    report = config.environment()
    assert report["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"python", "transformers", "peft", "numpy", "matplotlib", "device"} <= set(report)
    assert report["mode"] == "full"
    assert report["hugging face hub"].startswith("off")
