"""lora_leak_lib: the helper library of the course on private-data leakage from LoRA gradients.

Three products in folders that say so. The science, bottom to top: ``checks``, ``config``, ``families``,
``models``, ``lora``, ``gradients``, ``data`` → ``message`` (what crosses the wire) → ``training``, ``fl``,
``defenses``, ``attacks`` → ``experiments`` → the front ends ``cli`` and ``widgets`` (the lab), and ``exercises``
(the learners' checkers). The integration ``flower`` (import it: ``from lora_leak_lib import flower``) and the course
tooling ``course`` (Colab, executed notebooks, book, student copies, grading) sit on top; this package imports
neither.
"""
from . import (attacks, checks, config, data, defenses, exercises, experiments, families, fl, gradients, lora,
               malicious, message, metrics, models, training, widgets)
from .attacks import Knowledge, Reconstruction, get_attack
from .config import set_seed, setup
from .message import FederatedSetup, SharedUpdate
from .models import PublicModel, resolve

__version__ = "0.1.0"
__all__ = ["FederatedSetup", "Knowledge", "PublicModel", "Reconstruction", "SharedUpdate", "attacks", "checks",
           "config", "data", "defenses", "exercises", "experiments", "families", "fl", "get_attack", "gradients",
           "lora", "malicious", "message", "metrics", "models", "resolve", "set_seed", "setup", "training", "widgets"]
