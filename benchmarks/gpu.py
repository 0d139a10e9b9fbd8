"""The GPU run: on a machine with CUDA, the unit suite, every notebook in full mode, the article's experiment and the leakage tables, timed.

Run from the repository root on a GPU machine (Colab, a lent H100/H200, ...): ``python benchmarks/gpu.py
[--steps unit,notebooks,article,leakage] [--notebooks 00,05] [--parallel 3] [--budget 300] [--dry-run]``.
Writes ``benchmarks/results/gpu.json`` (the card, its memory, the versions, the date, the commit, and per step:
its command, seconds, status and, for a notebook, whether it met the class-period budget) after every step, the
article table to ``benchmarks/results/article_replication_gpu.json`` and the leakage table's rows to
``benchmarks/results/lora_leakage_gpu.json`` and ``lora_leakage_64_gpu.json``. ``--dry-run`` prints the commands
and runs nothing. On a machine without CUDA it says so in one line and exits 2: the CPU numbers are the other
benchmarks' job.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import platform
import shlex
import signal
import subprocess
import threading
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import torch

REPO = Path(__file__).resolve().parents[1]
STEPS = ("unit", "notebooks", "article", "leakage")
FLOWER_TESTS = "tests/test_flower.py"
ON_CUDA = {"LORA_LEAK_DEVICE": "cuda"}
FULL_ON_CUDA = {"LORA_LEAK_MODE": "full", **ON_CUDA}
RUNNING: set[subprocess.Popen] = set()  # the steps' processes while they run, to kill on Ctrl-C
STOPPING = threading.Event()  # set on Ctrl-C: a step whose process starts after the kill kills it at once
LEAKAGE_RUNS = (  # the README's leakage table: 20 sentences a row, 5 at 64 tokens
    ("leakage table rows 0,1,2,4,5", ["--settings", "0,1,2,4,5", "--count", "20", "--long-count", "20"],
     "benchmarks/results/lora_leakage_gpu.json"),
    ("leakage table row 3 (64 tokens)", ["--settings", "3", "--long-count", "5"],
     "benchmarks/results/lora_leakage_64_gpu.json"),
)


class Step(NamedTuple):
    """One command of the run, the environment variables it adds, and what it leaves out."""
    name: str
    command: list[str]
    env: dict[str, str]
    notebook: bool = False
    left_out: tuple[str, ...] = ()

    def shell(self) -> str:
        """The command as one shell line, its variables first."""
        return " ".join([*(f"{k}={v}" for k, v in self.env.items()), shlex.join(self.command)])


def at_least(minimum: int):
    """An argparse type: a whole number of at least ``minimum``."""
    def whole(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {minimum}")
        return int(text)
    return whole


def step_names(text: str) -> list[str]:
    """An argparse type: steps of ``STEPS``, comma-separated, or 'all'."""
    chosen = list(STEPS) if text == "all" else [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEPS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"no step {', '.join(unknown) or 'given'}: choose from {', '.join(STEPS)} "
                                         "or 'all'")
    return chosen


def notebooks(selection: str) -> list[Path]:
    """An argparse type: the solution notebooks chosen by number, in course order, or 'all'."""
    every = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if selection == "all":
        return every
    chosen = [n.strip() for n in selection.split(",") if n.strip()]
    missing = sorted(set(chosen) - {p.name[:2] for p in every})
    if missing or not chosen:
        raise argparse.ArgumentTypeError(f"no notebook numbered {', '.join(missing) or 'given'}: choose from "
                                         f"{', '.join(p.name[:2] for p in every)} or 'all'")
    return [p for p in every if p.name[:2] in chosen]


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="gpu.py", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=step_names, default="all", help=f"comma-separated, of: {', '.join(STEPS)}")
    parser.add_argument("--notebooks", type=notebooks, default="all",
                        help="comma-separated notebook numbers (00,05), or 'all'")
    parser.add_argument("--parallel", type=at_least(1), default=3, help="notebooks run at once on the card")
    parser.add_argument("--workers", type=at_least(0), default=4, metavar="N",
                        help="pytest-xdist workers of the unit suite (-n N) when xdist is installed; 0: none")
    parser.add_argument("--ignore-flower", action=argparse.BooleanOptionalAction, default=True,
                        help=f"leave {FLOWER_TESTS} (Ray and Flower processes) out of the unit suite")
    parser.add_argument("--budget", type=at_least(1), default=300, help="seconds a notebook may take (a class period)")
    parser.add_argument("--timeout", type=at_least(1), default=3600, help="seconds each step may take at most")
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--commit", default=None, help="the commit to record where git cannot tell (a copied tree)")
    parser.add_argument("--out", default="benchmarks/results/gpu.json", help="the record, relative to the repository")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and run nothing (no CUDA needed)")
    return parser


def unit_step(args: argparse.Namespace) -> Step:
    """The unit suite on the card; pytest.ini's nbval options are dropped (tests/ only)."""
    command = [sys.executable, "-m", "pytest", "tests", "-q", "-o", "addopts=", "-p", "no:cacheprovider"]
    if args.workers and importlib.util.find_spec("xdist") is not None:
        command += ["-n", str(args.workers)]
    left_out = (FLOWER_TESTS,) if args.ignore_flower else ()
    command += [f"--ignore={path}" for path in left_out]
    name = "unit suite on CUDA" + (", Flower left out" if left_out else "")
    return Step(name, command, ON_CUDA, left_out=left_out)


def notebook_step(notebook: Path) -> Step:
    command = [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
               str(notebook.relative_to(REPO))]
    return Step(f"notebook {notebook.stem}", command, FULL_ON_CUDA, notebook=True)


def article_step(args: argparse.Namespace) -> Step:
    command = [sys.executable, "benchmarks/article_replication.py", "--data", args.data,
               "--out", "benchmarks/results/article_replication_gpu.json"]
    return Step("article table", command, FULL_ON_CUDA)


def leakage_steps(args: argparse.Namespace) -> list[Step]:
    return [Step(name, [sys.executable, "benchmarks/lora_leakage.py", "--data", args.data, *options, "--out", out],
                 FULL_ON_CUDA) for name, options, out in LEAKAGE_RUNS]


def plan(args: argparse.Namespace) -> list[Step]:
    """Every step chosen, in the order they run."""
    steps = {"unit": lambda: [unit_step(args)], "notebooks": lambda: [notebook_step(n) for n in args.notebooks],
             "article": lambda: [article_step(args)], "leakage": lambda: leakage_steps(args)}
    return [step for name in STEPS if name in args.steps for step in steps[name]()]


def commit() -> str | None:
    """The checked-out commit (with ``-dirty`` when the tree has changes), or ``None`` outside a git clone."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def record_head(args: argparse.Namespace) -> dict:
    """The card, its software and the run's settings: the head of ``gpu.json``."""
    card = torch.cuda.get_device_properties(0)
    return {"card": card.name, "gpu_memory_gib": round(card.total_memory / 2**30, 1), "torch": torch.__version__,
            "transformers": version("transformers"), "peft": version("peft"), "cuda": torch.version.cuda,
            "python": platform.python_version(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "commit": args.commit or commit(), "notebooks_at_once": args.parallel, "budget_seconds": args.budget,
            "steps": []}


def kill(process: subprocess.Popen) -> None:
    """Kill a step's whole process group (pytest-xdist workers, the benchmark's children), if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def run_step(step: Step, timeout: int, budget: int) -> dict:
    """Run one step in its own process group (killed whole on timeout) and return its record."""
    start = time.perf_counter()
    with subprocess.Popen(step.command, cwd=REPO, env={**os.environ, **step.env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True) as process:
        RUNNING.add(process)
        if STOPPING.is_set():  # Ctrl-C came while this process started: the kill loop may have missed it
            kill(process)
        try:
            output = process.communicate(timeout=timeout)[0]
            status = "passed" if process.returncode == 0 else f"failed ({process.returncode})"
        except subprocess.TimeoutExpired:
            kill(process)
            output, status = process.communicate()[0], f"timed out after {timeout} s"
        finally:
            RUNNING.discard(process)
    seconds = round(time.perf_counter() - start, 1)
    return {"step": step.name, "command": step.shell(), "seconds": seconds, "status": status,
            "within_budget": status == "passed" and seconds <= budget if step.notebook else None,
            "left_out": list(step.left_out), "output_tail": output[-3000:]}


def row(entry: dict) -> str:
    budget = {True: "yes", False: "no", None: ""}[entry["within_budget"]]
    return f"{entry['step']:<40} {entry['status']:<24} {entry['seconds']:>8.1f} {budget:>10}"


def run_all(steps: list[Step], args: argparse.Namespace, record: dict, out: Path) -> None:
    """Run the steps, notebooks ``args.parallel`` at once, writing ``record`` to ``out`` after each one.

    On Ctrl-C (or SIGTERM, which ``main`` turns into one) the steps still running are killed before it goes on up,
    a step starting at that moment included (``STOPPING``).
    """
    STOPPING.clear()
    for is_notebook, group in itertools.groupby(steps, key=lambda s: s.notebook):
        with ThreadPoolExecutor(args.parallel if is_notebook else 1) as pool:
            try:
                for done in as_completed([pool.submit(run_step, s, args.timeout, args.budget) for s in group]):
                    record["steps"].append(done.result())
                    out.write_text(json.dumps(record, indent=1))
                    print(row(record["steps"][-1]), flush=True)
            except KeyboardInterrupt:
                STOPPING.set()
                pool.shutdown(wait=False, cancel_futures=True)  # no queued notebook starts
                for process in list(RUNNING):
                    kill(process)
                raise


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    steps = plan(args)
    if args.dry_run:
        print("\n".join(step.shell() for step in steps))
        print(f"# the record goes to {args.out}; notebooks run {args.parallel} at once")
        return 0
    if not torch.cuda.is_available():
        print("gpu.py: this machine has no CUDA GPU: run it on one (Colab, a lent GPU), or see the commands with "
              "--dry-run; the CPU tables come from the other benchmarks.", file=sys.stderr)
        return 2
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    record = record_head(args)
    print(f"GPU run on {record['card']} ({record['gpu_memory_gib']} GiB; torch {record['torch']}, CUDA "
          f"{record['cuda']}), {len(steps)} steps, {args.parallel} notebooks at once")
    header = f"{'step':<40} {'status':<24} {'seconds':>8} {'in budget':>10}"
    print(header, flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        run_all(steps, args, record, out)
    except KeyboardInterrupt:
        print(f"gpu.py: interrupted; the steps that ended are in {args.out}", file=sys.stderr)
        return 130
    print(f"\n{header}\n" + "\n".join(row(entry) for entry in record["steps"]) + f"\nwrote {args.out}")
    return 0 if all(entry["status"] == "passed" for entry in record["steps"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
