"""LoRA leakage table: the strongest attack on LoRA-only updates of Rotten Tomatoes sentences (issue 5 targets).

Run from the repository root: ``python benchmarks/lora_leakage.py [--data ../shared/data/rt-polarity]``.
Prints one row per setting and writes ``benchmarks/results/lora_leakage.json`` after every row.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import lora_leak_lib as ll
from dataclasses import replace

from lora_leak_lib.attacks import attack_names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--count", type=int, default=20, help="sentences per setting")
    parser.add_argument("--long-count", type=int, default=5,
                        help="sentences for the slow settings (64 tokens, round 0 DLG)")
    parser.add_argument("--dlg-steps", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results/lora_leakage.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settings", default="all",
                        help="comma-separated row numbers of the table to run (0-based), or 'all'")
    parser.add_argument("--attack", default="lora-best", choices=attack_names(lora_text=True),
                        help="the attack of every row, from the attack registry")
    parser.add_argument("--devices", default="auto",
                        help="comma-separated devices each row runs on (cpu, cuda), or 'auto': the CPU, and the GPU "
                             "too when there is one (then the table has a column for each and their ratio)")
    return parser


def devices(text: str) -> list[str]:
    """The devices of ``--devices``: each checked (one clear error for a device this machine lacks)."""
    if text == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [str(ll.config.check_device(name.strip())) for name in text.split(",")]


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    settings = [replace(s, attack=args.attack) for s in ll.experiments.BENCHMARK]
    if args.settings != "all":
        try:
            settings = [settings[int(i)] for i in args.settings.split(",")]
        except (ValueError, IndexError):
            parser.error(f"--settings takes row numbers 0 to {len(settings) - 1} separated by commas, or 'all'")
    try:
        chosen = devices(args.devices)
    except ValueError as error:
        parser.error(str(error))
    print(ll.setup(args.seed))
    examples = ll.data.rotten_tomatoes(args.data, seed=args.seed)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "load_average": os.getloadavg()[0],
               "cores": os.cpu_count(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    results = {"machine": machine, "devices": chosen, "rows": []}
    columns = " ".join(f"{d + ' s/sent':>13}" for d in chosen) + (f" {'ratio':>6}" if len(chosen) == 2 else "")
    print(f"{'setting':<58} {'n':>3} {'token acc':>9} {'ROUGE-1':>8} {'ROUGE-2':>8} {columns}")
    for setting in settings:
        slow = setting.tokens >= 64 or setting.trained_steps == 0
        count = args.long_count if slow else args.count
        by_device = {}
        for device in chosen:  # the same sentences and seed on each device
            ll.config.use_device(device)
            start = time.perf_counter()
            row = ll.experiments.run_leakage_setting(setting, examples, count, args.seed, args.dlg_steps)
            row["wall_seconds"] = time.perf_counter() - start
            for sentence in row["rows"]:  # scores only: the Rotten Tomatoes text stays out of the repository
                sentence.pop("original", None)
                sentence.pop("reconstruction", None)
            by_device[device] = row
        ll.config.use_device(None)
        row = {**by_device[chosen[0]], "device": chosen[0]}
        if len(chosen) > 1:
            row["by_device"] = {d: {k: r[k] for k in ("token_accuracy", "rouge1", "rouge2", "seconds", "wall_seconds")}
                                for d, r in by_device.items()}
        results["rows"].append(row)
        seconds = " ".join(f"{by_device[d]['seconds']:>13.2f}" for d in chosen)
        ratio = f" {by_device[chosen[0]]['seconds'] / by_device[chosen[1]]['seconds']:>5.1f}x" if len(chosen) == 2 else ""
        print(f"{setting.label():<58} {row['sentences']:>3} {row['token_accuracy']:>9.1%} {row['rouge1']:>8.1%} "
              f"{row['rouge2']:>8.1%} {seconds}{ratio}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
