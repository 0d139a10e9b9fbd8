"""The course tooling, which works on a clone of the course: Colab cells and the Colab bundle (``colab``), the
notebooks run and cleaned in place (``executed``), the book built from them (``book``), and the student copies and
their grading with nbgrader (``student_copies``, ``grading``). The science below never imports it."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The clone of the course: ``notebooks/``, ``README.md`` and ``pyproject.toml`` beside the library."""
NOTEBOOKS = ROOT / "notebooks"


def course_notebooks(folder: Path = NOTEBOOKS) -> list[Path]:
    """The course's notebooks in ``folder`` (``NN_name.ipynb``), in order."""
    return sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))


def kernel_environment(**extra: str) -> dict[str, str]:
    """The environment of a kernel, or of nbgrader, that runs a course notebook: this very library first on
    ``PYTHONPATH``, installed or not, this Python's scripts folder first on ``PATH`` (nbgrader runs ``alembic``,
    a kernel spec may name ``python``; a shell that never activated the environment still finds them), and
    ``extra`` variables."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    scripts = os.pathsep.join(p for p in (str(Path(sys.executable).parent), os.environ.get("PATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PATH": scripts, **extra}
