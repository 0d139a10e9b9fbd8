"""Executed notebooks: the solution notebooks carry clean outputs and figures, the student copies none."""
import os
import re
import site
import tempfile

import pytest

from lora_leak_lib import cli
from lora_leak_lib.course import executed

nbformat = pytest.importorskip("nbformat")
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output  # noqa: E402

SOLUTIONS = sorted(executed.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
STUDENTS = sorted((executed.NOTEBOOKS / "student").glob("[0-9][0-9]_*.ipynb"))


def read(path):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.stem)
def test_every_solution_notebook_is_committed_run_from_its_sources(path):
    notebook = read(path)
    current = executed.is_current(notebook)
    assert current, f"{path.name}: outputs missing or stale: run `lora-leak execute {path.stem[:2]}`"
    cells = executed.code_cells(notebook)
    shown = [c for c in cells if c.outputs]  # the install cell too: off Colab it says there is nothing to install
    assert len(shown) >= 0.9 * len(cells), f"{path.name}: outputs in {len(shown)} of {len(cells)} code cells"
    assert not [c.id for c in cells if not executed.shows(c.source)], "a cell that shows nothing: print what it did"
    for cell in cells:
        if executed.plots(cell.source):
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), f"{path.name}: no figure in {cell.id}"
        for output in cell.outputs:
            data = output.get("data", {})
            texts = [output.get("text", "")] + [v for k, v in data.items() if k.startswith("text/")]
            assert all(executed.scrub(t) == t for t in texts), f"{path.name}, {cell.id}: a path, timing or address"
            assert executed.WIDGET not in data, f"{path.name}, {cell.id}: a widget"
    assert notebook.metadata.kernelspec == executed.KERNELSPEC


@pytest.mark.parametrize("path", STUDENTS, ids=lambda p: p.stem)
def test_student_copies_carry_no_outputs(path):
    for cell in read(path).cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}, {cell.id}: `lora-leak student`"


def test_scrub_removes_what_differs_between_machines():
    course = str(executed.NOTEBOOKS.parent)
    packages = site.getsitepackages()[0]
    text = (f"{course}/lora_leak_lib/fl.py:12: UserWarning: x\n{packages}/torch/nn/x.py:3\n"
            f"{tempfile.gettempdir()}/run/a.json {os.path.expanduser('~')}/data\n/srv/elsewhere/b.py:7: Warn\n"
            "/tmp/ipykernel_2134/3383.py:2: UserWarning: careful\n<object at 0x7f3a2b1c4d50>\n"
            "took 3.2s; 12.3 s a sentence; in 41 s; 5 ms\n")
    assert executed.scrub(text) == ("lora_leak_lib/fl.py:12: UserWarning: x\ntorch/nn/x.py:3\n<tmp>/run/a.json ~/data\n"
                                    ".../b.py:7: Warn\n<cell>:2: UserWarning: careful\n<object at 0x...>\n"
                                    "took ... s; ... s a sentence; in ... s; ... ms\n")


def test_scrub_keeps_the_lesson():
    text = ("dL/dA = (alpha/r)·Bᵀ·G; rank 8 gives 16 inputs, 14 tokens, ROUGE-1 50.0%, 2 sentences\n"
            "https://github.com/lora-leak/lora-leak/blob/main/notebooks/01_lora_math.ipynb  eps=1e-05 lr 0.5\n")
    assert executed.scrub(text) == text


def test_progress_bars_go_and_a_redrawn_line_keeps_its_last_state():
    text = "rounds:  10%|#         | 1/10 [00:01<00:09]\rrounds: 100%|##########| 10/10 [00:03<00:00,  3.1it/s]\n"
    assert executed.scrub(text + "step 1\rstep 2\rdone\n7it [00:02, 3.1it/s]\n") == "done\n"
    cell = new_code_cell("f()", outputs=[new_output("stream", name="stderr", text=t) for t in ("a", "\rb\n")])
    assert executed.clean(new_notebook(cells=[cell]), "quick").cells[0].outputs[0].text == "b\n"  # one stream


def executed_notebook():
    """A notebook as nbclient leaves it: timings, a widget bar, a control, a path, a figure and an empty cell."""
    cells = [new_markdown_cell("# demo"),
             new_code_cell("print(1)", execution_count=1, metadata={"execution": {"iopub.status.busy": "2025"}},
                           outputs=[new_output("stream", name="stdout", text=f"{executed.NOTEBOOKS}/x 0.4 s\n")]),
             new_code_cell("for _ in tqdm(range(3)): pass", execution_count=2, outputs=[
                 new_output("display_data", data={executed.WIDGET: {"model_id": "ab12"},
                                                  "text/plain": "rounds:   0%|          | 0/3 [00:00<?, ?it/s]"}),
                 new_output("stream", name="stderr", text="\r  0%|  | 0/3 [00:00<?]\r100%|##| 3/3 [00:01<00:00]\n")]),
             new_code_cell("lab()", execution_count=3, outputs=[
                 new_output("execute_result", data={executed.WIDGET: {"model_id": "cd34"}, "text/plain": "VBox()"},
                            execution_count=3)]),
             new_code_cell("plt.plot([1]); plt.show()  # a figure", execution_count=4, outputs=[
                 new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})]),
             new_code_cell("")]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "py"},
                                               "language_info": {"name": "python", "version": "3.11.7"},
                                               "widgets": {"state": {}}})


def test_clean_keeps_outputs_that_read_the_same_anywhere():
    notebook = executed.clean(executed_notebook(), "quick")
    printed, bar, lab, figure, empty = notebook.cells[1:]
    assert printed.outputs[0].text == "notebooks/x ... s\n" and "execution" not in printed.metadata
    assert bar.outputs == []
    assert lab.outputs[0].data == {"text/plain": executed.WIDGET_NOTE} and lab.outputs[0].execution_count == 3
    assert figure.outputs[0].data["image/png"] == "iVBORw0KGgo="
    assert notebook.metadata == {"kernelspec": executed.KERNELSPEC, "language_info": {"name": "python"},
                                 executed.STAMP: {"mode": "quick", "sources": executed.sources_hash(notebook)}}
    assert executed.is_current(notebook)  # the empty cell never runs, so it needs no execution count


def test_outputs_are_current_until_a_code_cell_changes():
    notebook = executed.clean(executed_notebook(), "full")
    notebook.cells[0].source = "# a new title"  # prose: outputs still current
    assert executed.is_current(notebook)
    notebook.cells[1].source = "print(2)"
    assert not executed.is_current(notebook)
    assert not executed.is_current(executed_notebook())  # never stamped
    notebook = executed.clean(executed_notebook(), "quick")
    notebook.cells[2].execution_count = None
    assert not executed.is_current(notebook)


@pytest.mark.parametrize("source, draws", [("plt.show()", True), ("fig, ax = plt.subplots(1, 2)", True),
                                            ("plt.figure(figsize=(6, 3))\nplt.plot(x)", True),
                                            ("print(x)  # plt.show() later", False), ("ax = None", False)])
def test_a_cell_plots_when_it_draws_a_matplotlib_figure(source, draws):
    assert executed.plots(source) is draws


@pytest.mark.parametrize("source, shows", [("print(x)", True), ("x = 1\nx", True), ("ll.setup()", True),
                                           ("display(HTML(page))\ny = 2", True), ("fig, ax = plt.subplots()", True),
                                           ("%pip install -q x", True), ("for n in ns:\n    assert n > 0", False),
                                           ("x = f(1)\nassert x", False), ("def f():\n    return 1", False)])
def test_a_cell_shows_something_when_it_prints_displays_plots_or_ends_in_an_expression(source, shows):
    assert executed.shows(source) is shows


def test_notebooks_are_named_by_number_or_path(tmp_path):
    for name in ("01_lora_math.ipynb", "02_federated.ipynb", "student/01_lora_math.ipynb"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        nbformat.write(new_notebook(), tmp_path / name)
    assert executed.notebook_paths([], tmp_path) == [tmp_path / "01_lora_math.ipynb", tmp_path / "02_federated.ipynb"]
    assert executed.notebook_paths(["2", str(tmp_path / "01_lora_math.ipynb")], tmp_path) == \
        [tmp_path / "02_federated.ipynb", tmp_path / "01_lora_math.ipynb"]
    for names, words in ((["07"], "no notebook '07'"), (["x"], "no notebook 'x'"),
                         ([str(tmp_path / "03_none.ipynb")], "no notebook at"),
                         ([str(tmp_path / "student/01_lora_math.ipynb")], "is a student copy")):
        with pytest.raises(ValueError, match=re.escape(words)):
            executed.notebook_paths(names, tmp_path)


def test_an_unknown_notebook_is_one_line_before_anything_runs(capsys, monkeypatch):
    monkeypatch.setattr(executed, "run", lambda *a: pytest.fail("a notebook ran before the checks"))
    assert cli.main(["execute", "01", "42"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lora-leak: no notebook '42'"), err


def test_a_failing_notebook_is_one_line_naming_it(tmp_path):
    pytest.importorskip("nbclient")
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell('raise RuntimeError("boom")')]), path)
    with pytest.raises(ValueError, match=r"^99_broken.ipynb failed \(RuntimeError: boom\): run it in Jupyter") as error:
        executed.execute([path], "quick")
    assert "\n" not in str(error.value) and read(path).cells[0].outputs == []  # nothing written


def test_execute_runs_in_the_notebooks_folder_and_writes_it_back_clean(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the kernel finds this library all the same
    path = tmp_path / "99_small.ipynb"
    (tmp_path / "here.txt").write_text("found")
    nbformat.write(new_notebook(cells=[new_code_cell(
        "import os, pathlib, lora_leak_lib\n"
        "print(pathlib.Path('here.txt').read_text(), os.environ['LORA_LEAK_MODE'], lora_leak_lib.__file__)\n"
        "print(os.getcwd())")], metadata={"kernelspec": executed.KERNELSPEC}), path)
    executed.execute([path], "full")
    first = path.read_text()
    notebook = read(path)
    found, folder = notebook.cells[0].outputs[0].text.splitlines()
    assert found == "found full lora_leak_lib/__init__.py"
    assert folder.endswith(tmp_path.name) and not folder.startswith(str(tmp_path)), folder  # named without a path
    assert executed.is_current(notebook) and notebook.metadata[executed.STAMP]["mode"] == "full"
    executed.execute([path], "full")
    assert path.read_text() == first  # a second run changes nothing


def test_a_recorded_time_stays_and_a_live_one_goes():
    text = "MiniLM, 64 tokens: 100.0%, 12.3 s a sentence (2-core CPU, recorded)\nthis run: 4.2 s\n"
    assert executed.scrub(text) == "MiniLM, 64 tokens: 100.0%, 12.3 s a sentence (2-core CPU, recorded)\nthis run: ... s\n"
