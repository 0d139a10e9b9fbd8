"""The first round at practical ranks: token accuracy of the dL/dB row-space attack against inputs ÷ r.

Run from the repository root: ``python benchmarks/first_round.py [--data ../shared/data/rt-polarity]``.
Round 0 (``B = 0``, every ``dL/dA`` zero), one message of joined review sentences a client, LoRA r on the query and
value projections of the first layer's attention, the attacker told the length. For each rank and message length the
messages are attacked by ``first-round`` alone; a message with at least ``r`` inputs leaves every row space full,
the attack has nothing to test, and the row records it as not readable (``lora-best`` runs DLG there:
``lora_leakage_round0.json``). Writes ``benchmarks/results/first_round.json`` after every row.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

import lora_leak_lib as ll
from lora_leak_lib.attacks import Knowledge, get_attack

GRID = {16: (4, 6, 8, 10, 12, 13, 14, 16, 20), 64: (16, 32, 48, 56, 60, 61, 62, 64, 80)}
"""Sentence lengths (tokens without [CLS]/[SEP]) per rank: inputs ÷ r from about 0.4 to 1.4, crossing 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--model", default="minilm", help="a model of the registry")
    parser.add_argument("--ranks", default="16,64", help="comma-separated ranks of the grid (16, 64)")
    parser.add_argument("--count", type=int, default=3, help="sentences per (rank, length)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/first_round.json")
    return parser


def run_cell(model: ll.models.PublicModel, rank: int, tokens: int, examples: list, count: int, seed: int) -> dict:
    """Attack ``count`` sentences of ``tokens`` tokens at round 0 and rank ``rank``; the mean scores of the readable
    ones and how many were readable."""
    attack = get_attack("first-round")
    chosen = ll.data.joined_to_tokens(model.tokenizer, examples, tokens, count)
    scored, unreadable, seconds = [], 0, 0.0
    for example in chosen:
        shared = ll.fl.capture_update([example.text], [example.label], model, rank=rank, trained_steps=0, seed=seed)
        start = time.process_time()
        try:
            rebuilt = attack.reconstruct(shared, Knowledge(length=tokens))
        except ValueError:
            unreadable += 1
            continue
        seconds += time.process_time() - start
        row = ll.experiments.result_rows([example.text], rebuilt, shared, Knowledge(length=tokens), "first-round")[0]
        scored.append(row)
    mean = (lambda key: sum(float(r[key]) for r in scored) / len(scored) if scored else None)
    return {"model": model.name, "rank": rank, "tokens": tokens, "inputs": tokens + 2,
            "inputs_per_rank": (tokens + 2) / rank, "sentences": len(chosen), "readable": len(scored),
            "unreadable": unreadable, "token_accuracy": mean("token_accuracy"), "exact_match": mean("exact_match"),
            "rouge1": mean("rouge1"), "certified": sum(r.residual < ll.attacks.CERTIFIED for r in scored),
            "cpu_seconds": seconds / len(scored) if scored else None}


def main() -> None:
    args = build_parser().parse_args()
    print(ll.setup(args.seed))
    model = ll.models.resolve(args.model)
    model.check_available()
    examples = ll.data.rotten_tomatoes(args.data, seed=args.seed)
    cells = [(int(r), n) for r in args.ranks.split(",") for n in GRID.get(int(r), ())]
    if not cells:
        raise SystemExit(f"--ranks takes ranks of the grid: {', '.join(map(str, GRID))}.")
    results = {"machine": ll.experiments.evaluate.machine(), "started": time.strftime("%Y-%m-%d %H:%M"),
               "command": "python benchmarks/first_round.py " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("data", "out")),
               "rows": []}
    out = Path(args.out)
    for rank, tokens in tqdm(cells, desc="rank × length"):
        row = run_cell(model, rank, tokens, examples, args.count, args.seed)
        results["rows"].append(row)
        out.write_text(json.dumps(results, indent=1))
        accuracy = "not readable" if row["token_accuracy"] is None else f"{row['token_accuracy']:.1%}"
        tqdm.write(f"r={rank:<3} {tokens:>3} tokens ({row['inputs_per_rank']:.2f} inputs per rank): "
                   f"{accuracy}, {row['readable']}/{row['sentences']} readable, {row['certified']} certified")


if __name__ == "__main__":
    main()
