"""The course book: notebooks 00 and 01 as pages with their figures, a course map and a glossary; its workflow."""
import re

import pytest

from lora_leak_lib import cli
from lora_leak_lib.course import book, executed

pytest.importorskip("nbclient")
COURSE = book.chapters()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    return out, book.build("00,01", out)


def test_the_course_map_comes_from_the_readme_table():
    assert [c.number for c in COURSE] == [f"{i:02d}" for i in range(len(COURSE))] and len(COURSE) >= 9
    assert COURSE[1].name == "01_lora_math" and COURSE[1].time == "13 s" and "dL/dA" in COURSE[1].teaches
    assert set(book.PREREQUISITES) == {c.number for c in COURSE}
    assert all(p < c for c, needs in book.PREREQUISITES.items() for p in needs)  # only earlier notebooks
    assert {where for _, _, where in book.glossary()} <= {c.number for c in COURSE}


def test_every_page_holds_its_figures_and_links_the_book(site):
    out, pages = site
    assert sorted(p.name for p in pages) == ["00_course_overview.html", "01_lora_math.html", "glossary.html",
                                             "index.html"]
    for chapter in COURSE[:2]:
        text = (out / chapter.page).read_text()
        assert len(re.findall(r'<img[^>]+src="data:image/png;base64,[A-Za-z0-9+/]{100}', text)) >= 1, chapter.name
        assert 'href="index.html"' in text and 'href="glossary.html"' in text
        assert f"Time (quick mode, 2-core CPU): {chapter.time}" in text
        assert re.search(r"mode=(quick|full)", text)  # ll.setup()'s output: the page shows a run
    assert 'href="00_course_overview.html">00 · Course overview</a>' in (out / COURSE[1].page).read_text()


def test_the_index_and_glossary_link_each_page(site):
    out, _ = site
    index, glossary = (out / "index.html").read_text(), (out / "glossary.html").read_text()
    for chapter in COURSE[:2]:
        assert f'href="{chapter.page}"' in index and f'href="{chapter.page}"' in glossary
    for chapter in COURSE[2:]:  # listed, not linked: those pages were not built
        assert f"{chapter.number} · {chapter.title}" in index and f'href="{chapter.page}"' not in index
        assert f"<td>{chapter.time}</td>" in index
    for term in ("FedSGD", "FedAvg", "FedAdam", "LoRA", "Rank r", "Span", "Certificate", "ROUGE", "Token accuracy",
                 "ε and δ", "RDP", "DP-SGD", "Secure aggregation", "WordPiece", "Honest-but-curious server", "DLG"):
        assert f">{term}</dt>" in glossary, term


@pytest.mark.parametrize("numbers, words", [("00,42", "no notebook '42' in the course: choose from 00, 01"),
                                            ("zero", "no notebook 'zero'"), (" , ", "no notebook chosen")])
def test_an_unknown_notebook_is_one_clear_error(numbers, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        book.select(numbers, COURSE)


def test_numbers_may_drop_the_leading_zero_and_come_in_any_order():
    assert [c.number for c in book.select("1,0", COURSE)] == ["00", "01"]


def test_an_unwritable_out_dir_is_one_line_before_any_notebook_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(book, "load", lambda path: pytest.fail("a notebook was read before the checks"))
    afile = tmp_path / "afile"
    afile.write_text("")
    for out, words in ((afile, "is a file"), (afile / "inside", "cannot write the book to")):
        assert cli.main(["book", "--notebooks", "00", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lora-leak: ") and words in err, err
    assert cli.main(["book", "--notebooks", "99", "--out", str(tmp_path / "b")]) == 2
    assert "no notebook '99'" in capsys.readouterr().err


def stamped(text):
    """A notebook as ``lora-leak execute`` commits it: one cell that printed ``text``."""
    import nbformat

    cell = nbformat.v4.new_code_cell("print(1)", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", name="stdout", text=text)])
    return executed.clean(nbformat.v4.new_notebook(cells=[cell]), "full")


def test_the_book_shows_current_outputs_and_runs_only_stale_notebooks(tmp_path, monkeypatch, capsys):
    import nbformat

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nbformat.write(stamped("committed output"), notebooks / f"{COURSE[0].name}.ipynb")
    stale = stamped("old output")
    stale.cells[0].source = "print(2)"  # edited after its run
    nbformat.write(stale, notebooks / f"{COURSE[1].name}.ipynb")
    ran = []
    monkeypatch.setattr(executed, "run", lambda path, mode: ran.append((path.name, mode)) or stamped("fresh output"))
    book.build("00,01", tmp_path / "out", notebooks)
    assert ran == [(f"{COURSE[1].name}.ipynb", "quick")]
    assert "running 01 in quick mode" in capsys.readouterr().err
    assert "committed output" in (tmp_path / "out" / COURSE[0].page).read_text()
    page = (tmp_path / "out" / COURSE[1].page).read_text()
    assert "fresh output" in page and "old output" not in page


def test_the_workflow_tests_then_publishes_the_book_once_enabled():
    yaml = pytest.importorskip("yaml")
    workflows = sorted((book.ROOT / ".github" / "workflows").glob("*.yml"))
    assert workflows
    for path in workflows:
        flow = yaml.safe_load(path.read_text())
        assert flow.get("on", flow.get(True)), f"{path.name}: no trigger"  # PyYAML reads the key `on` as True
        for name, job in flow["jobs"].items():
            assert job["runs-on"] and (job.get("steps") or job.get("uses")), f"{path.name}: job {name}"
    flow = yaml.safe_load((book.ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert "push" in flow[True]
    test, deploy = flow["jobs"]["test"], flow["jobs"]["pages"]
    runs = [step.get("run", "") for step in test["steps"]]
    assert "bash .ci/run" in runs and any(r.startswith(".venv/bin/lora-leak book") for r in runs)  # .ci/run's venv
    upload = next(s for s in test["steps"] if s.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_book" and "vars.PUBLISH_BOOK" in upload["if"]
    assert deploy["needs"] == "test" and "vars.PUBLISH_BOOK" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert any(s.get("uses", "").startswith("actions/deploy-pages") for s in deploy["steps"])
