"""What a user brings to ``lora-leak evaluate``: the README's own attack class, a defence, and things that are neither.

``PlainDLG`` is the class the README's "Bring your own attack" section shows, defined by running that section's code
block itself (up to its last lines, which attack one message at once), so the test scores exactly what the README
teaches: ``--attack bring_your_own:PlainDLG``.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_attack_code() -> str:
    """The README's bring-your-own code block, without its last lines (the call that attacks one message)."""
    section = README.read_text(encoding="utf-8").split("## Bring your own attack", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return code[:code.index("rows = ll.experiments.attack_update")]


exec(compile(readme_attack_code(), str(README), "exec"))  # defines PlainDLG and the names its reconstruct reads


def halve(update, seed):
    """A message defence brought by the user: every entry of the update halved (``--defence bring_your_own:halve``)."""
    return OrderedDict((name, 0.5 * tensor) for name, tensor in update.items())


class NotAnAttack:
    """A class without ``reconstruct``: ``--attack bring_your_own:NotAnAttack`` is refused before any work."""

    name = "not-an-attack"


def not_a_defence(update, seed):
    """A function that does not return an update: ``--defence bring_your_own:not_a_defence`` is refused."""
    return [len(update), seed]
