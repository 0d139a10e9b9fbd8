"""The course book: a static HTML site of the chosen notebooks, from their committed outputs when those are
current (else run in quick mode), with a course map and a glossary (plain ``nbconvert`` pages: no site generator
to install, works offline)."""
from __future__ import annotations

import csv
import html
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from . import ROOT, executed

NOTEBOOK_ROW = re.compile(r"^\| \[`((\d\d)_\w+)`\]\(notebooks/\1\.ipynb\) (.+?) \| (.+?) \| (.+?) \|", re.M)
"""A row of the README's notebook table: name, number, title, what you learn, quick-mode time."""

PREREQUISITES = {
    "00": (), "01": ("00",), "02": ("00", "01"), "03": ("00",), "04": ("03",), "05": ("01", "02", "04"),
    "06": ("05",), "07": ("05", "06"), "08": ("07",), "09": ("05", "06"), "10": ("02", "05", "07"),
}
"""The notebooks each one builds on (besides Python, PyTorch and a first course in linear algebra)."""

GLOSSARY = ROOT / "docs" / "glossary.tsv"
"""The course's terms: one a line (term, definition, the notebook that teaches it), tab-separated."""


def glossary(path: Path = GLOSSARY) -> list[tuple[str, str, str]]:
    """The glossary's entries, in the file's order."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["term"], row["definition"], row["notebook"]) for row in csv.DictReader(handle, delimiter="\t")]


@dataclass(frozen=True)
class Chapter:
    """One notebook of the course as the book lists it."""

    number: str
    name: str
    title: str
    teaches: str  # Markdown, from the README
    time: str  # quick mode, 2-core CPU, from the README
    prerequisites: tuple[str, ...]

    @property
    def page(self) -> str:
        return f"{self.name}.html"


def chapters(readme: Path = ROOT / "README.md") -> list[Chapter]:
    """The course's notebooks in order, with what each teaches and its time, read from the README's table."""
    rows = NOTEBOOK_ROW.findall(readme.read_text(encoding="utf-8"))
    if not rows:
        raise ValueError(f"no notebook table in {readme}: the book reads each notebook's row from it.")
    return [Chapter(number, name, title.strip(), teaches.strip(), time.strip(), PREREQUISITES.get(number, ()))
            for name, number, title, teaches, time in rows]


def select(numbers: str | Sequence[str] | None, course: Sequence[Chapter]) -> list[Chapter]:
    """The chapters named by ``"00,01"`` (or a list of numbers; ``None``: all), in course order."""
    by_number = {c.number: c for c in course}
    if numbers is None:
        return list(course)
    wanted = [n.strip() for n in (numbers.split(",") if isinstance(numbers, str) else numbers) if n.strip()]
    if not wanted:
        raise ValueError(f"no notebook chosen: give numbers such as 00,01 (the course has {', '.join(by_number)}).")
    for n in wanted:
        if not n.isdigit() or f"{int(n):02d}" not in by_number:
            raise ValueError(f"no notebook {n!r} in the course: choose from {', '.join(by_number)}.")
    return [c for c in course if c.number in {f"{int(n):02d}" for n in wanted}]


def check_out(out: Path) -> Path:
    """``out`` as a folder one can write to (made if missing), or one clear error."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the book.")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"cannot write the book to {out} ({error.strerror or error}): choose a folder you can "
                         "write to with --out.") from error
    return out


def load(path: Path) -> "nbformat.NotebookNode | None":
    """The notebook at ``path`` with its committed outputs, or ``None`` when they are missing or stale."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    return notebook if executed.is_current(notebook) else None


def _inline(markdown: str) -> str:
    """HTML of the README's cell text: escaped, with `code` spans kept."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(markdown, quote=False))


def _link(chapter: Chapter, built: set[str]) -> str:
    label = f"{chapter.number} · {html.escape(chapter.title)}"
    return f'<a href="{chapter.page}">{label}</a>' if chapter.number in built else label


def _nav(course: Sequence[Chapter], built: set[str]) -> str:
    pages = " · ".join(f'<a href="{c.page}">{c.number}</a>' for c in course if c.number in built)
    return f'<nav><a href="index.html">Course map</a> · <a href="glossary.html">Glossary</a> · {pages}</nav>'


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;vertical-align:top}}
dt{{font-weight:bold;margin-top:.8rem}}nav{{margin-bottom:1.5rem}}</style></head>
<body>{nav}<h1>{title}</h1>
{body}</body></html>
"""


def index_page(course: Sequence[Chapter], built: set[str]) -> str:
    """The course map: every notebook in order with what it teaches, what it builds on and its time."""
    by_number = {c.number: c for c in course}
    rows = "\n".join(
        f"<tr><td>{_link(c, built)}</td><td>{_inline(c.teaches)}</td>"
        f"<td>{', '.join(_link(by_number[p], built) for p in c.prerequisites) or 'none'}</td>"
        f"<td>{html.escape(c.time)}</td></tr>"
        for c in course)
    body = ("<p>Private-data leakage from LoRA gradients in federated learning: the notebooks in order. "
            "Times are quick mode on a 2-core CPU. Pages not built here are listed without a link "
            "(<code>lora-leak book --notebooks NN</code> builds them).</p>\n"
            "<table><tr><th>notebook</th><th>what you learn</th><th>prerequisites</th><th>time</th></tr>\n"
            f"{rows}</table>\n")
    return PAGE.format(title="lora-leak: the course map", nav=_nav(course, built), body=body)


def glossary_page(course: Sequence[Chapter], built: set[str]) -> str:
    """The glossary: each term, what it means, and the notebook that teaches it."""
    by_number = {c.number: c for c in course}
    entries = "\n".join(f"<dt id=\"{re.sub(r'[^a-z0-9]+', '-', term.lower()).strip('-')}\">{html.escape(term)}</dt>"
                        f"<dd>{html.escape(text)} (taught in {_link(by_number[where], built)})</dd>"
                        for term, text, where in sorted(glossary(), key=lambda g: g[0].lower()))
    return PAGE.format(title="lora-leak: glossary", nav=_nav(course, built), body=f"<dl>\n{entries}\n</dl>\n")


def chapter_page(notebook: "nbformat.NotebookNode", chapter: Chapter, course: Sequence[Chapter],
                 built: set[str]) -> str:
    """One executed notebook as HTML (figures embedded as PNG data), under a header that links the book."""
    import nbformat
    from nbconvert import HTMLExporter

    by_number = {c.number: c for c in course}
    needs = ", ".join(f"[{p} · {by_number[p].title}]({by_number[p].page})" if p in built else f"{p} · "
                      f"{by_number[p].title}" for p in chapter.prerequisites) or "none"
    pages = " · ".join(f"[{c.number}]({c.page})" for c in course if c.number in built)
    header = nbformat.v4.new_markdown_cell(f"[Course map](index.html) · [Glossary](glossary.html) · {pages}\n\n"
                                           f"Prerequisites: {needs}. Time (quick mode, 2-core CPU): {chapter.time}.")
    notebook.cells.insert(0, header)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    return body


def build(numbers: str | Sequence[str] | None = None, out: Path | str = "_book",
          notebooks: Path = ROOT / "notebooks", readme: Path = ROOT / "README.md") -> list[Path]:
    """Write the book of the chosen notebooks into ``out``: one page each, ``index.html`` (the course map) and
    ``glossary.html``. A notebook whose committed outputs are stale is run in quick mode first. Returns the pages
    written. Every input is checked first."""
    if importlib.util.find_spec("nbclient") is None or importlib.util.find_spec("nbconvert") is None:
        raise ValueError('the book needs nbconvert and nbclient: pip install -e ".[book]".')
    course = chapters(readme)
    chosen = select(numbers, course)
    missing = [c.name for c in chosen if not (notebooks / f"{c.name}.ipynb").is_file()]
    if missing:
        raise ValueError(f"no notebook {missing[0]}.ipynb in {notebooks}: build from a clone of the course.")
    out = check_out(Path(out))
    built = {c.number for c in chosen}
    ready = {c.number: load(notebooks / f"{c.name}.ipynb") for c in chosen}
    stale = [c for c in chosen if ready[c.number] is None]
    if stale:
        print(f"running {', '.join(c.number for c in stale)} in quick mode: their committed outputs are missing or "
              "stale (`lora-leak execute` commits fresh ones).", file=sys.stderr)
    for chapter in tqdm(stale, desc="running notebooks", unit="notebook", disable=not stale):
        ready[chapter.number] = executed.clean(executed.run(notebooks / f"{chapter.name}.ipynb", "quick"), "quick")
    pages = []
    for chapter in chosen:
        page = out / chapter.page
        page.write_text(chapter_page(ready[chapter.number], chapter, course, built), encoding="utf-8")
        pages.append(page)
    for name, text in (("index.html", index_page(course, built)), ("glossary.html", glossary_page(course, built))):
        (out / name).write_text(text, encoding="utf-8")
        pages.append(out / name)
    return pages
