"""lora_leak_lib: the helper library of the course on private-data leakage from LoRA gradients.

Layers, bottom to top: ``config``, ``families``, ``models``, ``lora``, ``gradients``, ``data`` → ``message`` (what crosses
the wire) → ``training``, ``fl``, ``defenses``, ``attacks`` → ``experiments`` → ``cli``, ``widgets``, ``flower``.
"""
from . import (attacks, config, data, defenses, exercises, experiments, families, fl, flower, gradients, lora, malicious,
               message, metrics, models, training, widgets)
from .attacks import Knowledge, Reconstruction, get_attack
from .config import set_seed, setup
from .message import FederatedSetup, SharedUpdate
from .models import PublicModel, resolve

__version__ = "0.1.0"
__all__ = ["FederatedSetup", "Knowledge", "PublicModel", "Reconstruction", "SharedUpdate", "attacks", "config", "data",
           "defenses", "exercises", "experiments", "families", "fl", "flower", "get_attack", "gradients", "lora",
           "malicious", "message", "metrics", "models", "resolve", "set_seed", "setup", "training", "widgets"]
