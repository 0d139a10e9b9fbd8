"""The course book: notebooks 00 and 01 run into pages with their figures, a course map and a glossary."""
import re

import pytest

from lora_leak_lib import book, cli

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
    assert {where for _, _, where in book.GLOSSARY} <= {c.number for c in COURSE}


def test_every_page_holds_its_figures_and_links_the_book(site):
    out, pages = site
    assert sorted(p.name for p in pages) == ["00_course_overview.html", "01_lora_math.html", "glossary.html",
                                             "index.html"]
    for chapter in COURSE[:2]:
        text = (out / chapter.page).read_text()
        assert len(re.findall(r'<img[^>]+src="data:image/png;base64,[A-Za-z0-9+/]{100}', text)) >= 1, chapter.name
        assert 'href="index.html"' in text and 'href="glossary.html"' in text
        assert f"Time (quick mode, 2-core CPU): {chapter.time}" in text
        assert "mode=quick" in text  # ll.setup()'s output: the notebook ran, in quick mode
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
    monkeypatch.setattr(book, "execute", lambda path: pytest.fail("a notebook ran before the checks"))
    afile = tmp_path / "afile"
    afile.write_text("")
    for out, words in ((afile, "is a file"), (afile / "inside", "cannot write the book to")):
        assert cli.main(["book", "--notebooks", "00", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lora-leak: ") and words in err, err
    assert cli.main(["book", "--notebooks", "99", "--out", str(tmp_path / "b")]) == 2
    assert "no notebook '99'" in capsys.readouterr().err


def test_a_failing_notebook_is_one_line_naming_it(tmp_path):
    import nbformat

    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('raise RuntimeError("boom")')]), path)
    with pytest.raises(ValueError, match=r"^99_broken.ipynb failed \(RuntimeError: boom\): run it in Jupyter") as error:
        book.execute(path)
    assert "\n" not in str(error.value)
