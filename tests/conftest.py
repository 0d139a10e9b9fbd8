"""Every unit test runs where the library puts its models: on the GPU when one is chosen, else on a fake accelerator.

When the chosen device is the CPU (no GPU, or ``LORA_LEAK_DEVICE=cpu``), the whole session runs inside
``FakeAccelerator`` with ``FAKE`` as the library's device, so a tensor made on the CPU and fed to a model, or a
device tensor sent to numpy, fails here as it would on CUDA. With ``LORA_LEAK_DEVICE=cuda`` on a GPU machine the
tests run on the real card, unchanged.
"""
from __future__ import annotations

import pytest

from fake_accelerator import FAKE, FakeAccelerator
from lora_leak_lib import config


@pytest.fixture(scope="session", autouse=True)
def library_device():
    """The device of the whole session: the chosen GPU, or the fake accelerator on a CPU machine."""
    if config.device().type != "cpu":
        yield config.device()
        return
    config.use_device(FAKE)
    with FakeAccelerator():
        yield FAKE
    config.use_device(None)


@pytest.fixture(autouse=True)
def device(library_device):
    """Each test starts on the session's device, whatever the previous test chose."""
    config.use_device(library_device)
    yield library_device
    config.use_device(library_device)
