"""The GPU run: on a machine with CUDA, the seed table and every notebook in full mode, timed, with the card's name.

Run from the repository root on a GPU machine (Colab, a lent H100/H200, ...):
``python benchmarks/gpu.py [--data ../shared/data/rt-polarity] [--notebooks 00,05] [--skip-seed]``.
Writes ``benchmarks/results/gpu.json`` (card, torch, CUDA, and per step: seconds and whether it passed) after
every step, and the seed table to ``benchmarks/results/seed_replication_gpu.json``. On a machine without CUDA it
says so in one line and exits 2: the CPU numbers are the other benchmarks' job.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--notebooks", default="all", help="comma-separated notebook numbers (00,05), or 'all'")
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed table")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds each step may take at most")
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    return parser


def notebooks(selection: str) -> list[Path]:
    """The solution notebooks chosen by number, in course order, or one clear error."""
    every = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if selection == "all":
        return every
    chosen = [n.strip() for n in selection.split(",") if n.strip()]
    found = [p for p in every if p.name[:2] in chosen]
    missing = set(chosen) - {p.name[:2] for p in found}
    if missing:
        raise SystemExit(f"gpu.py: no notebook numbered {', '.join(sorted(missing))}: choose from "
                         f"{', '.join(p.name[:2] for p in every)}.")
    return found


def run_step(name: str, command: list[str], timeout: int, record: dict, out: Path) -> None:
    """Run one step in full mode on the GPU, time it, and write the record so far."""
    env = dict(os.environ, LORA_LEAK_MODE="full", LORA_LEAK_DEVICE="cuda")
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        status, tail = ("passed" if done.returncode == 0 else f"failed ({done.returncode})"), done.stdout[-2000:]
        if done.returncode:
            tail += done.stderr[-2000:]
    except subprocess.TimeoutExpired:
        status, tail = f"timed out after {timeout} s", ""
    record["steps"].append({"step": name, "seconds": round(time.perf_counter() - start, 1), "status": status,
                            "output_tail": tail})
    print(f"{name:<45} {status:<22} {record['steps'][-1]['seconds']:>8.1f} s", flush=True)
    out.write_text(json.dumps(record, indent=1))


def main() -> int:
    args = build_parser().parse_args()
    if not torch.cuda.is_available():
        print("gpu.py: this machine has no CUDA GPU: run it on one (Colab, a lent GPU); the CPU tables come from "
              "the other benchmarks.", file=sys.stderr)
        return 2
    out = REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"card": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
              "mode": "full", "steps": []}
    print(f"GPU run on {record['card']} (torch {record['torch']}, CUDA {record['cuda']})")
    if not args.skip_seed:
        run_step("seed table (benchmarks/seed_replication.py)",
                 [sys.executable, "benchmarks/seed_replication.py", "--data", args.data,
                  "--out", "benchmarks/results/seed_replication_gpu.json"], args.timeout, record, out)
    for notebook in notebooks(args.notebooks):
        run_step(f"notebook {notebook.name}",
                 [sys.executable, "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
                  str(notebook.relative_to(REPO))], args.timeout, record, out)
    return 0 if all(s["status"] == "passed" for s in record["steps"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
