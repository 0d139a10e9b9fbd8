"""nbgrader autogrades a student copy locally: full marks when the learner writes the solutions, zero when not, and
the learner's feedback beside the copy."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lora_leak_lib import course
from lora_leak_lib.course import grading, student_copies

pytestmark = pytest.mark.slow  # nbgrader runs whole notebooks

NOTEBOOK = "03_deep_leakage_from_gradients.ipynb"  # a quick one: two graded exercises, 2 + 1 points


def _answer_cells(notebook):
    return {c.metadata["nbgrader"]["grade_id"]: c for c in notebook.cells
            if c.metadata.get("nbgrader", {}).get("solution")}


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """The repository's student copy (unsolved) and the same copy with the learner's answers written in."""
    folder = tmp_path_factory.mktemp("submissions")
    unsolved = folder / "unsolved" / NOTEBOOK
    solved = folder / "solved" / NOTEBOOK
    for path in (unsolved, solved):
        path.parent.mkdir()
    student = nbformat.read(student_copies.STUDENT_NOTEBOOKS / NOTEBOOK, as_version=4)
    nbformat.write(student, unsolved)
    answers = _answer_cells(nbformat.read(student_copies.NOTEBOOKS / NOTEBOOK, as_version=4))
    for grade_id, cell in _answer_cells(student).items():  # the learner edits only the answer cells
        assert "raise NotImplementedError()" in cell.source
        cell.source = answers[grade_id].source
    nbformat.write(student, solved)
    return solved, unsolved


def test_a_solved_copy_gets_full_marks_and_an_unsolved_one_zero(copies):
    solved, unsolved = copies
    full = grading.grade(solved)
    assert [s.question for s in full.scores] == ["exercise-1-check", "exercise-2-check"]
    assert full.max_points == 3 and full.points == 3
    assert full.feedback == solved.parent / "03_deep_leakage_from_gradients.feedback.html" and full.feedback.is_file()
    # `lora-leak grade` from a shell that never activated the environment: its bin folder is not on PATH, yet
    # nbgrader, its alembic and the kernel are found, and the feedback lands beside the graded copy
    scripts = str(Path(sys.executable).parent)
    environment = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    environment["PATH"] = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != scripts)
    done = subprocess.run([sys.executable, "-c", "import sys; from lora_leak_lib import cli; sys.exit(cli.main())",
                           "grade", str(unsolved)], env=environment, cwd=unsolved.parent, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exercise-1-check         0 / 2" in done.stdout and "total                    0 / 3" in done.stdout
    feedback = unsolved.parent / "03_deep_leakage_from_gradients.feedback.html"
    assert f"feedback: {feedback}" in done.stdout and "exercise-1-check" in feedback.read_text()


def test_student_copies_hide_answers_and_hidden_tests_but_keep_the_checks():
    for path in course.course_notebooks():
        solution = nbformat.read(path, as_version=4)
        student = nbformat.read(student_copies.STUDENT_NOTEBOOKS / path.name, as_version=4)
        assert [c.id for c in student.cells] == [c.id for c in solution.cells]
        for mine, theirs in zip(student.cells, solution.cells):
            assert mine.get("outputs", []) == [] and mine.get("execution_count") is None
            if student_copies.SOLUTION_BEGIN in theirs.source:
                assert theirs.metadata["nbgrader"]["solution"], f"{path.name}: an answer outside an answer cell"
                assert student_copies.SOLUTION_BEGIN not in mine.source and "NotImplementedError" in mine.source
            if student_copies.HIDDEN_BEGIN in theirs.source:
                assert theirs.metadata["nbgrader"]["grade"] and theirs.metadata["nbgrader"]["points"] > 0
                assert student_copies.HIDDEN_BEGIN not in mine.source and "assert " in mine.source


def test_every_answer_cell_is_followed_by_a_graded_check_with_hidden_tests():
    """nbval proves a solution only if the check cell after it asserts something, hidden tests included."""
    problems = []
    for path in course.course_notebooks():
        cells = nbformat.read(path, as_version=4).cells
        for index, cell in enumerate(cells):
            if cell.metadata.get("nbgrader", {}).get("solution"):
                after = cells[index + 1] if index + 1 < len(cells) else None
                grade = after.metadata.get("nbgrader", {}) if after is not None else {}
                if not (grade.get("grade") and grade.get("points", 0) > 0 and "assert " in after.source
                        and student_copies.HIDDEN_BEGIN in after.source):
                    problems.append(f"{path.name} cell {index}")
    assert problems == [], f"answer cells without a graded check after them: {problems}"


def test_grade_refuses_a_notebook_that_is_not_in_the_course(tmp_path):
    stray = tmp_path / "99_mine.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), stray)
    with pytest.raises(ValueError, match="not a course notebook"):
        grading.grade(stray)
