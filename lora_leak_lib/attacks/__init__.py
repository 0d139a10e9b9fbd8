"""Attacks that rebuild private text from a shared update; each returns a ``Reconstruction``."""
from .base import Attack, Callback, Reconstruction, SharedUpdate
from .labels import infer_labels

__all__ = ["Attack", "Callback", "Reconstruction", "SharedUpdate", "infer_labels"]
