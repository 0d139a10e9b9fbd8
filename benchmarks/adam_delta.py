"""Adam deltas (issue 24, item 4): the span attack (``lora-best``) against the sign attack (``benchmarks/sign_attack.py``) on
FedAvg clients that train their adapter with Adam, whose first-layer ``lora_A`` delta is about ``−lr·sign(g)``.

Run from the repository root: ``python benchmarks/adam_delta.py [--data ../shared/data/rt-polarity]``. Prints one
row per (setting, attack) and writes ``benchmarks/results/adam_delta.json`` after every row (scores only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import lora_leak_lib as ll
from lora_leak_lib.attacks import Knowledge
from sign_attack import sign_span_attack  # research beside this script, not in the library
from lora_leak_lib.experiments.core import score
from lora_leak_lib.experiments.multi_round import Watch, attack_watched, watched_messages


@dataclass(frozen=True)
class Setting:
    """One row group: MiniLM, r = 8, adapter trained 20 steps, one sentence of ``tokens`` tokens, FedAvg Adam
    at lr 1e-3 with ``local_steps`` steps, ``observed_rounds`` consecutive rounds watched."""

    tokens: int
    local_steps: int
    observed_rounds: int

    def watch(self) -> Watch:
        return Watch(observed_rounds=self.observed_rounds, protocol="fedavg", local_steps=self.local_steps, optimizer="adam",
                     lr=1e-3)

    def label(self) -> str:
        return f"minilm, {self.tokens} tokens, Adam E={self.local_steps}, R={self.observed_rounds}"


SETTINGS = (Setting(16, 1, 1), Setting(16, 4, 1), Setting(16, 4, 8), Setting(64, 1, 1))


def sign_rows(texts: list[str], labels: list[int], model, setting: Setting) -> list[dict]:
    """The sign attack on one sentence's watched messages, scored like ``attack_watched``'s rows."""
    messages, seen = watched_messages(texts, labels, model, rank=8, trained_steps=20, watch=setting.watch(), seed=0)
    knowledge = Knowledge(length=setting.tokens, other_rounds=tuple(messages[1:]))
    rebuilt = sign_span_attack(messages[0], knowledge)
    rows = score(seen[0], rebuilt, model.tokenizer)
    for row in rows:
        row["certificate"] = rebuilt.loss
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--count", type=int, default=5, help="sentences per row")
    parser.add_argument("--out", default="benchmarks/results/adam_delta.json")
    parser.add_argument("--settings", default="0,1", help=f"comma-separated rows of {len(SETTINGS)} settings (0-based)")
    parser.add_argument("--attacks", default="lora-best,sign", help="comma-separated: lora-best, sign")
    args = parser.parse_args()
    try:
        settings = [SETTINGS[int(i)] for i in args.settings.split(",")]
    except (ValueError, IndexError):
        parser.error(f"--settings takes row numbers 0 to {len(SETTINGS) - 1} separated by commas")
    attacks = args.attacks.split(",")
    if not set(attacks) <= {"lora-best", "sign"}:
        parser.error("--attacks takes lora-best and/or sign")
    model = ll.resolve("minilm")
    examples = ll.data.rotten_tomatoes(args.data, seed=0)
    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "load_average_start": os.getloadavg()[0], "cores": os.cpu_count()}
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {"rows": []}
    results["machine"] = machine
    print(f"{'setting':<42} {'attack':<10} {'n':>3} {'token acc':>9} {'ROUGE-1':>8} {'s/sent':>7} {'load':>5}")
    for setting in settings:
        chosen = ll.data.truncate_to_tokens(model.tokenizer, examples, setting.tokens, args.count)
        for attack in attacks:
            rows, start = [], time.perf_counter()
            for example in chosen:
                if attack == "sign":
                    rows += sign_rows([example.text], [example.label], model, setting)
                else:
                    rows += [r.as_json() for r in attack_watched([example.text], [example.label], model, rank=8,
                                                                 trained_steps=20, watch=setting.watch(), seed=0)]
            for row in rows:  # scores only: the Rotten Tomatoes text stays out of the repository
                row.pop("original", None)
                row.pop("reconstruction", None)
            summary = {"setting": setting.label(), "tokens": setting.tokens, "local_steps": setting.local_steps,
                       "observed_rounds": setting.observed_rounds, "attack": attack, "sentences": len(rows),
                       "token_accuracy": sum(r["token_accuracy"] for r in rows) / len(rows),
                       "rouge1": sum(r["rouge1"] for r in rows) / len(rows),
                       "seconds": (time.perf_counter() - start) / len(rows),
                       "attack_seconds": sum(r["seconds"] for r in rows) / len(rows),
                       "load_average": os.getloadavg()[0], "threads": torch.get_num_threads(), "rows": rows}
            results["rows"] = [r for r in results["rows"] if (r["setting"], r["attack"]) != (summary["setting"], attack)]
            results["rows"].append(summary)
            print(f"{setting.label():<42} {attack:<10} {len(rows):>3} {summary['token_accuracy']:>9.1%} "
                  f"{summary['rouge1']:>8.1%} {summary['seconds']:>7.1f} {summary['load_average']:>5.1f}", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
