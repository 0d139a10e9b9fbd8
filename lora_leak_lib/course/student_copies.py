"""Student copies of the notebooks, generated from the solution notebooks by nbgrader (never edited by hand).

The solution notebooks in ``notebooks/`` are an nbgrader *source* assignment: every checked exercise has an answer
cell (nbgrader metadata ``solution``, the answer between ``### BEGIN SOLUTION`` and ``### END SOLUTION``) and a
locked check cell after it (``grade``, with ``points``) whose ``### BEGIN HIDDEN TESTS`` … ``### END HIDDEN TESTS``
block the student copy does not show. ``nbgrader generate_assignment`` makes the student copies (the *release*
version): answers replaced by ``# YOUR CODE HERE`` / ``raise NotImplementedError()``, hidden tests removed, outputs
cleared, answer and check cells locked and checksummed so that ``nbgrader autograde`` (``course.grading``)
can grade a filled-in copy.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from . import NOTEBOOKS, colab, course_notebooks, kernel_environment

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
HIDDEN_BEGIN = "### BEGIN HIDDEN TESTS"
HIDDEN_END = "### END HIDDEN TESTS"
ASSIGNMENT = "lora-leak"  # the nbgrader assignment every course notebook belongs to
STUDENT_NOTEBOOKS = NOTEBOOKS / "student"


def nbgrader(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` on the course folder ``root`` (source/, release/, submitted/, autograded/ and
    ``gradebook.db`` inside it); raise with nbgrader's log when it fails."""
    command = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}",
               f"--db=sqlite:///{root / 'gradebook.db'}"]
    done = subprocess.run(command, cwd=root, env=kernel_environment(), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader {args[0]} failed:\n{done.stdout}{done.stderr}")
    return done


def prepare_source(notebooks: list[Path], root: Path) -> Path:
    """Copy solution notebooks into ``root/source/ASSIGNMENT``, their Colab badges pointing at the student copies
    (so the released copy opens itself on Colab)."""
    import nbformat  # a dev dependency, like nbgrader

    folder = root / "source" / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        notebook.metadata.pop("lora_leak", None)  # the executed run's stamp: a student copy has no outputs
        colab.student_badge(notebook)
        nbformat.write(notebook, folder / path.name)
    return folder


def release(notebooks: list[Path], root: Path, db: bool = False) -> Path:
    """``nbgrader generate_assignment`` on ``notebooks`` in the course folder ``root``; returns the release folder.
    With ``db`` it also records the answer and check cells (hidden tests included) in the gradebook, as
    autograding needs."""
    prepare_source(notebooks, root)
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force", *([] if db else ["--no-db"]))
    return root / "release" / ASSIGNMENT


def _normalised(path: Path) -> str:
    import nbformat

    return nbformat.writes(nbformat.read(path, as_version=4)) + "\n"


def _generated(source: Path) -> dict[str, str]:
    """The text of every student copy nbgrader generates from the notebooks in ``source``."""
    notebooks = course_notebooks(source)
    with tempfile.TemporaryDirectory(prefix="lora-leak-release-") as tmp:
        released = release(notebooks, Path(tmp))
        return {path.name: _normalised(released / path.name) for path in notebooks}


def write_student_notebooks(source: Path = NOTEBOOKS, target: Path = STUDENT_NOTEBOOKS) -> list[Path]:
    """Write the student copy of every notebook in ``source`` into ``target``; returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in _generated(source).items():
        out = target / name
        out.write_text(text)
        written.append(out)
    return written


def stale_student_notebooks(source: Path = NOTEBOOKS, target: Path = STUDENT_NOTEBOOKS) -> list[str]:
    """Names of student copies that are missing or differ from what nbgrader generates from the solutions."""
    return [name for name, text in _generated(source).items()
            if not (target / name).exists() or (target / name).read_text() != text]

