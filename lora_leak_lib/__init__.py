"""lora_leak_lib: the helper library of the course on private-data leakage from LoRA gradients."""
from . import attacks, config, data, defenses, exercises, fl, flower, gradients, lora, metrics, models, widgets
from .config import set_seed, setup

__version__ = "0.1.0"
__all__ = ["attacks", "config", "data", "defenses", "exercises", "fl", "flower", "gradients", "lora", "metrics",
           "models", "set_seed", "setup", "widgets"]
