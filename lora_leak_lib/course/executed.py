"""Executed notebooks: run each solution notebook in place and keep outputs that read the same on every machine.

Outputs are cleaned as they are written: no local paths, memory addresses, wall-clock timings, progress bars or
widgets (they need a live kernel), and no execution timestamps. A stamp in the notebook's metadata (the mode and
a hash of the code cells' sources) lets the book tell current outputs from stale ones.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import site
import tempfile
from pathlib import Path
from typing import Sequence

from .. import config
from . import NOTEBOOKS, ROOT, course_notebooks, kernel_environment

STAMP = "lora_leak"
"""The notebook metadata key of the stamp: ``{"mode": "quick", "sources": sha256 of the code cells}``."""
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
WIDGET = "application/vnd.jupyter.widget-view+json"
TEXT_TYPES = ("text/plain", "text/html", "text/markdown")
PROGRESS = re.compile(r"\d+%\|.*\||\d+(?:/\d+)?[a-z]* \[\d+:\d+")
"""A tqdm progress bar (``40%|####  | 2/5 [00:01<...``, ``7it [00:02, ...``), in text or a widget's text/plain."""
WIDGET_NOTE = "(an interactive control: run the notebook in Jupyter to use it)"
TIMING = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)? ?(s|ms|µs|sec|seconds?)(?![\w/])")
RECORDED = "recorded"
"""A line that says it prints a recorded benchmark's time keeps it: that time is read from a JSON, the same on every
machine, and the prose may lean on it."""
CELL_FILE = re.compile(r"\S*ipykernel_\d+/\d+\.py")
"""The file a kernel gives a cell's code (a warning names it): a new name in every run."""
ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{6,}\b")
ABSOLUTE = re.compile(r"(?<![\w.)\]/])/(?:root|home|Users|work|tmp|var|private|opt|usr|mnt|content|srv)/[^\s'\"<>:,)]*")
PLOTS = re.compile(r"\bplt\.(show|figure|subplots)\(")


def code_cells(notebook: "nbformat.NotebookNode") -> list["nbformat.NotebookNode"]:
    """The code cells that run: those with a source."""
    return [c for c in notebook.cells if c.cell_type == "code" and c.source.strip()]


def sources_hash(notebook: "nbformat.NotebookNode") -> str:
    """The SHA-256 of the code cells' sources: what the outputs were produced from."""
    return hashlib.sha256(json.dumps([c.source for c in code_cells(notebook)]).encode()).hexdigest()


def is_current(notebook: "nbformat.NotebookNode") -> bool:
    """True when every code cell ran and the stamp's hash matches the sources as they are now."""
    stamp = notebook.metadata.get(STAMP, {})
    return (stamp.get("sources") == sources_hash(notebook)
            and all(c.execution_count is not None for c in code_cells(notebook)))


def plots(source: str) -> bool:
    """True when a cell's code (comments left out) draws a matplotlib figure."""
    return bool(PLOTS.search("\n".join(line.split("#", 1)[0] for line in source.splitlines())))


def shows(source: str) -> bool:
    """True when a cell's code can show something: it prints, displays or plots, or ends in an expression."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython's own syntax (%pip): take it as showing
        return True
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return bool(tree.body and isinstance(tree.body[-1], ast.Expr) or calls & {"print", "display"} or plots(source))


def _local_folders() -> list[tuple[str, str]]:
    """(folder, what replaces it) for the folders whose names differ between machines, longest first."""
    folders = [(str(ROOT), ""), *((f, "") for f in site.getsitepackages()),
               (site.getusersitepackages(), ""), (tempfile.gettempdir(), "<tmp>/"), (os.path.expanduser("~"), "~/")]
    return sorted(((f.rstrip("/") + "/", new) for f, new in folders if len(f) > 1), key=lambda f: -len(f[0]))


def scrub(text: str) -> str:
    """``text`` without local paths, memory addresses, timings or progress bars (a line redrawn with ``\\r``
    keeps its last state); a line that says ``recorded`` keeps its times."""
    lines = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]
    text = CELL_FILE.sub("<cell>", "\n".join(line for line in lines if not PROGRESS.search(line)))
    for folder, new in _local_folders():
        text = text.replace(folder, new)
    text = ABSOLUTE.sub(lambda m: ".../" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    text = ADDRESS.sub("0x...", text)
    return "\n".join(line if RECORDED in line else TIMING.sub(lambda m: f"... {m.group(1)}", line)
                     for line in text.split("\n"))


def _clean_output(output: "nbformat.NotebookNode") -> "nbformat.NotebookNode | None":
    """One output cleaned, or ``None`` when nothing of it is worth keeping."""
    if output.output_type == "stream":
        output.text = scrub(output.text)
        return output if output.text.strip() else None
    if output.output_type not in ("display_data", "execute_result"):
        return output
    if WIDGET in output.data:  # its state needs a live kernel: a progress bar goes, a control becomes a note
        if PROGRESS.search(output.data.get("text/plain", "")):
            return None
        output.data, output.metadata = {"text/plain": WIDGET_NOTE}, {}
    for kind in TEXT_TYPES:
        if kind in output.data:
            output.data[kind] = scrub(output.data[kind])
    return output


def _merged(outputs: list) -> list:
    """``outputs`` with each run of stream outputs to the same stream joined into one, as Jupyter shows it."""
    merged = []
    for output in outputs:
        last = merged[-1] if merged else None
        if last and output.output_type == last.output_type == "stream" and output.name == last.name:
            last.text += output.text
        else:
            merged.append(output)
    return merged


def clean(notebook: "nbformat.NotebookNode", mode: str) -> "nbformat.NotebookNode":
    """The executed ``notebook`` made the same on every machine, stamped with ``mode`` and its sources' hash."""
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in map(_clean_output, _merged(cell.outputs)) if o is not None]
    kept = {k: v for k, v in notebook.metadata.items() if k != "widgets"}
    notebook.metadata = {**kept, "kernelspec": KERNELSPEC, "language_info": {"name": "python"},
                         STAMP: {"mode": mode, "sources": sources_hash(notebook)}}
    return notebook


def run(path: Path, mode: str | None = None) -> "nbformat.NotebookNode":
    """The notebook at ``path`` run top to bottom in its own folder (as nbval runs it), outputs kept.

    ``mode`` sets ``LORA_LEAK_MODE`` for the kernel; ``None`` leaves the library to choose. The kernel imports
    this very library, installed or not.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    env = kernel_environment(**({config.MODE_VARIABLE: mode} if mode else {}))
    client = NotebookClient(notebook, kernel_name="python3", record_timing=False, store_widget_state=False,
                            resources={"metadata": {"path": str(path.absolute().parent)}})
    try:
        client.execute(env=env)
    except CellExecutionError as error:
        reason = (str(error.evalue).splitlines() or [""])[0]
        raise ValueError(f"{path.name} failed ({error.ename}: {reason}): run it in Jupyter to see where.") from error
    return notebook


def notebook_paths(names: Sequence[str], notebooks: Path = NOTEBOOKS) -> list[Path]:
    """The solution notebooks named by number (``01``, ``1``) or path; none named: every one in ``notebooks``."""
    if not names:
        return course_notebooks(notebooks)
    paths = []
    for name in names:
        if name.endswith(".ipynb"):
            path = Path(name)
        else:
            found = sorted(notebooks.glob(f"{int(name):02d}_*.ipynb")) if name.isdigit() else []
            if not found:
                raise ValueError(f"no notebook {name!r} in {notebooks}: give a number such as 01 or a path.")
            path = found[0]
        if not path.is_file():
            raise ValueError(f"no notebook at {path}: give a number such as 01 or a path to an .ipynb file.")
        if path.absolute().parent.name == "student":
            raise ValueError(f"{path} is a student copy, which carries no outputs: execute its solution notebook.")
        paths.append(path)
    return paths


def execute(paths: Sequence[Path], mode: str | None = None) -> None:
    """Run each notebook in place and write it back cleaned and stamped."""
    import nbformat

    chosen = mode or config.mode()
    for path in paths:
        notebook = clean(run(path, chosen), chosen)
        path.write_text(nbformat.writes(notebook) + "\n", encoding="utf-8")
        print(f"executed {path.name} ({chosen} mode)", flush=True)
