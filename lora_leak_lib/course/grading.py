"""Autograde a filled-in student copy locally with nbgrader: points per checked exercise and in total, and the
learner's feedback.

``grade(path)`` builds a throw-away nbgrader course folder: it releases the matching solution notebook (which
records its check cells, hidden tests included, in a fresh gradebook), puts the learner's copy in ``submitted/``,
runs ``nbgrader autograde`` (the notebook runs top to bottom in a fresh kernel, the original check cells with their
hidden tests put back: each runs the learner's function on fresh cases, ``exercises.hidden``), reads the points
from the gradebook and runs ``nbgrader generate_feedback``, whose HTML it keeps beside the learner's copy
(``NN_name.feedback.html``). ``lora-leak grade NOTEBOOK`` prints the points and where the feedback is. nbgrader and
its kernel find their programs (``alembic``, ``python``) from any shell: ``course.kernel_environment``.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import course_notebooks, student_copies

STUDENT = "learner"  # the one submission of a throw-away course folder


@dataclass(frozen=True)
class Score:
    """The points of one check cell (nbgrader ``grade_id``, e.g. ``exercise-1-check``)."""

    question: str
    points: float
    max_points: float


@dataclass(frozen=True)
class Grade:
    """A graded notebook: one score per check cell, in the notebook's order, and the learner's feedback (nbgrader's
    HTML: the notebook as it ran, each check cell's points and errors)."""

    notebook: str
    scores: tuple[Score, ...]
    feedback: Path | None = None

    @property
    def points(self) -> float:
        return sum(s.points for s in self.scores)

    @property
    def max_points(self) -> float:
        return sum(s.max_points for s in self.scores)

    def table(self) -> str:
        """Points per question and the total, one line each."""
        lines = [f"{self.notebook}"]
        lines += [f"  {s.question:<24} {s.points:g} / {s.max_points:g}" for s in self.scores]
        lines.append(f"  {'total':<24} {self.points:g} / {self.max_points:g}")
        if self.feedback is not None:
            lines.append(f"  feedback: {self.feedback}")
        return "\n".join(lines)


def check_cells(notebook: Path) -> list[str]:
    """The ``grade_id`` of every graded cell of a notebook, in order."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    return [c.metadata["nbgrader"]["grade_id"] for c in cells if c.metadata.get("nbgrader", {}).get("grade")]


def feedback_path(submission: Path) -> Path:
    """Where the feedback on ``submission`` goes: beside it, ``NN_name.feedback.html``."""
    return submission.with_name(f"{submission.stem}.feedback.html")


def grade(submission: Path | str, source: Path | str = student_copies.NOTEBOOKS, timeout: int = 900) -> Grade:
    """Autograde ``submission``, a filled-in student copy named like its solution notebook in ``source`` (each cell
    may run ``timeout`` seconds), and write nbgrader's feedback beside it (``feedback_path``)."""
    submission, source = Path(submission).resolve(), Path(source)
    if not submission.is_file():
        raise ValueError(f"no notebook at {submission}.")
    solution = source / submission.name
    if not solution.is_file():
        names = ", ".join(p.name for p in course_notebooks(source))
        raise ValueError(f"{submission.name} is not a course notebook: keep the student copy's file name "
                         f"(one of {names}).")
    order = check_cells(solution)
    if not order:
        raise ValueError(f"{submission.name} has no graded exercise.")
    from nbgrader.api import Gradebook

    with tempfile.TemporaryDirectory(prefix="lora-leak-grade-") as tmp:
        root = Path(tmp)
        student_copies.release([solution], root, db=True)
        folder = root / "submitted" / STUDENT / student_copies.ASSIGNMENT
        folder.mkdir(parents=True)
        shutil.copy(submission, folder / submission.name)
        student_copies.nbgrader(root, "autograde", student_copies.ASSIGNMENT, "--create", "--force",
                                f"--Execute.timeout={timeout}")
        with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
            graded = gradebook.find_submission_notebook(submission.stem, student_copies.ASSIGNMENT, STUDENT)
            found = {g.name: Score(g.name, float(g.score), float(g.max_score)) for g in graded.grades}
        student_copies.nbgrader(root, "generate_feedback", student_copies.ASSIGNMENT, "--force")
        html = root / "feedback" / STUDENT / student_copies.ASSIGNMENT / f"{submission.stem}.html"
        feedback = feedback_path(submission)
        shutil.copy(html, feedback)
    return Grade(submission.name, tuple(found[name] for name in order), feedback)
