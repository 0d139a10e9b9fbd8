"""lora_leak_lib: the helper library of the course on private-data leakage from LoRA gradients.

Three products in folders that say so. The science, bottom to top: ``checks``, ``config``, ``families``,
``models``, ``lora``, ``gradients``, ``data`` → ``message`` (what crosses the wire) → ``training``, ``fl``,
``defenses``, ``attacks`` → ``experiments`` → the front ends ``cli`` and ``widgets`` (the lab), and ``exercises``
(the learners' checkers). The integration ``flower`` (import it: ``from lora_leak_lib import flower``) and the course
tooling ``course`` (Colab, executed notebooks, book, student copies, grading) sit on top; ``ll.<name>`` reaches
neither.
"""
from .lazy import on_first_use

__version__ = "0.1.0"
SUBMODULES = ("attacks", "catalog", "checks", "config", "data", "defenses", "exercises", "experiments", "families", "fl",
              "gradients", "lora", "malicious", "message", "metrics", "models", "training", "widgets")
"""The parts ``ll.<name>`` reaches; each is imported on first use, so ``import lora_leak_lib`` (and the command
line, which checks its arguments first) loads no torch until something needs it."""
NAMES = {"Knowledge": "attacks", "Reconstruction": "attacks", "get_attack": "attacks", "set_seed": "config",
         "setup": "config", "FederatedSetup": "message", "SharedUpdate": "message", "PublicModel": "models",
         "resolve": "models"}
"""The names ``ll.<name>`` gives directly, and the part each comes from."""
__all__ = sorted(SUBMODULES + tuple(NAMES))


__getattr__, __dir__ = on_first_use(__name__, NAMES, globals())
"""``ll.fl``, ``ll.resolve``, ...: the part (or the name from its part), imported on first use. Any module of the
package is reached so (``ll.weights``, ``ll.flower``), as it was once imported."""
