"""Student copies of the notebooks: generated from the solution notebooks, never edited by hand."""
from __future__ import annotations

import copy
import re
from pathlib import Path

from . import colab

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STUDENT_NOTEBOOKS = NOTEBOOKS / "student"


def strip_solutions(source: str) -> str:
    """Replace every ``### BEGIN SOLUTION`` … ``### END SOLUTION`` block by a placeholder at its indent."""
    pattern = re.compile(rf"^([ \t]*){re.escape(SOLUTION_BEGIN)}.*?^[ \t]*{re.escape(SOLUTION_END)}[^\n]*",
                         re.S | re.M)

    def placeholder(match: re.Match[str]) -> str:
        return "\n".join(match.group(1) + line for line in PLACEHOLDER)

    stripped = pattern.sub(placeholder, source)
    if SOLUTION_BEGIN in stripped or SOLUTION_END in stripped:
        raise ValueError("unbalanced solution markers: every ### BEGIN SOLUTION needs one ### END SOLUTION.")
    return stripped


def student_version(notebook: "nbformat.NotebookNode") -> "nbformat.NotebookNode":
    """A copy of a solution notebook with every solution block replaced, all outputs cleared and its Colab
    badge opening the copy."""
    student = copy.deepcopy(notebook)
    colab.student_badge(student)  # a student copy's badge opens the student copy
    for cell in student.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    return student


def _student_text(path: Path) -> str:
    import nbformat  # a dev dependency: only the generator of student copies needs it

    return nbformat.writes(student_version(nbformat.read(path, as_version=4))) + "\n"


def write_student_notebooks(source: Path = NOTEBOOKS, target: Path = STUDENT_NOTEBOOKS) -> list[Path]:
    """Write the student copy of every notebook in ``source`` into ``target``; returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("[0-9][0-9]_*.ipynb")):
        out = target / path.name
        out.write_text(_student_text(path))
        written.append(out)
    return written


def stale_student_notebooks(source: Path = NOTEBOOKS, target: Path = STUDENT_NOTEBOOKS) -> list[str]:
    """Names of student copies that are missing or differ from what the solution notebooks generate."""
    return [path.name for path in sorted(source.glob("[0-9][0-9]_*.ipynb"))
            if not (target / path.name).exists() or (target / path.name).read_text() != _student_text(path)]
