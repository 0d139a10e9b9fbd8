"""The article's experiment replicated: DLG as published (joint labels, L2) on LoRA-only updates, and lora-best.

Run from the repository root, e.g. ``OMP_NUM_THREADS=1 python benchmarks/article_replication.py --models tiny-bert
--count 20 --steps 300``. Every model's updates (batch 1, 16 tokens, r = 8 on query and value, the adapter trained
``experiments.DEFAULT_TRAINED_STEPS`` steps as in the leakage table) are captured once and attacked by every attack.
Prints one row per (model, attack) and writes ``benchmarks/results/article_replication.json`` after every row; rows
of an earlier run with other (model, attack) pairs are kept, so models can be measured one at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import lora_leak_lib as ll
from lora_leak_lib.experiments import replication

DEFAULT_MODELS = ("tiny-bert", "minilm", "mpnet-base", "bert-base-uncased")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS),
                        help="models of the registry; one not installed or not reachable is skipped with a note")
    parser.add_argument("--attacks", nargs="+", default=list(replication.ARTICLE_ATTACKS), choices=list(replication.ARTICLE_ATTACKS),
                        metavar="ATTACK", help=f"rows per model, from: {', '.join(replication.ARTICLE_ATTACKS)}")
    parser.add_argument("--count", type=int, default=20, help="sentences of 16 tokens per row")
    parser.add_argument("--steps", type=int, default=300, help="DLG optimiser steps per sentence")
    parser.add_argument("--trained-steps", type=int, default=ll.experiments.DEFAULT_TRAINED_STEPS,
                        help="adapter training steps before the attacked round (the leakage table's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/article_replication.json")
    return parser


def machine() -> dict:
    """The hardware and load the seconds come from."""
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def commit() -> str | None:
    """The checked-out commit the numbers come from, when this is a git clone."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def available(model: str) -> str | None:
    """Why ``model`` cannot run here (not in the registry, weights not installed, hub unreachable), or ``None``."""
    try:
        ll.models.resolve(model).check_available()
        ll.models.resolve(model).tokenizer
    except (ValueError, OSError, ImportError) as error:
        return str(error).splitlines()[0]
    return None


def write(out: Path, report: dict) -> None:
    """Merge ``report`` into ``out``: its rows replace earlier ones of the same (model, attack)."""
    if out.exists():
        old = json.loads(out.read_text())
        keys = {(r["model"], r["attack"]) for r in report["rows"]}
        report = {**report, "rows": [r for r in old.get("rows", []) if (r["model"], r["attack"]) not in keys]
                  + report["rows"],
                  "skipped": {**old.get("skipped", {}), **report["skipped"]},
                  "runs": old.get("runs", []) + [r for r in report["runs"] if r not in old.get("runs", [])]}
        for model in {r["model"] for r in report["rows"]}:
            report["skipped"].pop(model, None)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


def print_row(row: dict) -> None:
    published = row["published_token_accuracy"]
    tqdm.write(f"{row['model']:<18} {row['parameters'] / 1e6:>6.1f}M {row['attack']:<26} {row['sentences']:>3} "
               f"{row['token_accuracy']:>9.1%} {row['rouge1']:>8.1%} {row['rouge2']:>8.1%} {row['seconds']:>7.1f} "
               f"{'' if published is None else f'{published:.0%}':>9}")


def main() -> None:
    args = build_parser().parse_args()
    print(ll.setup(args.seed))
    examples = ll.data.rotten_tomatoes(args.data, seed=args.seed)
    run = dict(args=vars(args), machine=machine(), commit=commit(), started=time.strftime("%Y-%m-%d %H:%M"))
    report = {"published": replication.PUBLISHED, "recipe": dict(replication.PUBLISHED_RECIPE), "rows": [], "skipped": {},
              "runs": [run]}
    print(f"{'model':<18} {'params':>7} {'attack':<26} {'n':>3} {'token acc':>9} {'ROUGE-1':>8} {'ROUGE-2':>8} "
          f"{'s/sent':>7} {'published':>9}")
    for model in args.models:
        reason = available(model)
        if reason is not None:
            report["skipped"][model] = reason
            print(f"{model:<18} skipped: {reason}", flush=True)
            continue
        start = time.perf_counter()
        public = ll.models.resolve(model)
        sentences = replication.article_sentences(public, examples, args.count)
        updates = replication.article_updates(public, sentences, trained_steps=args.trained_steps, seed=args.seed)
        capture = (time.perf_counter() - start) / len(sentences)
        for attack in tqdm(args.attacks, desc=model, leave=False):
            start = time.perf_counter()
            row = replication.run_article_row(public, attack, sentences, updates, args.steps)
            row.update(wall_seconds=time.perf_counter() - start, capture_seconds_per_sentence=capture,
                       load_average=os.getloadavg()[0], commit=run["commit"])
            for sentence in row["rows"]:  # scores only: the Rotten Tomatoes text stays out of the repository
                sentence.pop("original", None)
                sentence.pop("reconstruction", None)
            report["rows"].append(row)
            print_row(row)
            write(Path(args.out), report)
    write(Path(args.out), report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
