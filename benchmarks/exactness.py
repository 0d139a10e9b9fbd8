"""The rule beside the measurement: what ``experiments.exactness.predict`` says of a trained round, and what
``lora-best`` reads (and whether it certifies it), over message length and LoRA rank.

Run from the repository root: ``python benchmarks/exactness.py [--data ../shared/data/rt-polarity]``.
One message a client (review sentences joined, then cut to the length), the global adapter trained 20 steps
before the attacked round, LoRA r on the query and value projections, the attacker told the length; per (model,
length, rank) ``--count`` messages. The first round has its own grid (``first_round.py``). Writes
``benchmarks/results/exactness.json`` after every cell.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm.auto import tqdm

import lora_leak_lib as ll
from lora_leak_lib.attacks import Knowledge, get_attack
from lora_leak_lib.experiments import exactness

GRID = {"tiny-bert": ((6, 12, 20, 30, 44, 60), (1, 2, 4, 8, 16)),
        "minilm": ((12, 30, 60), (1, 4, 16))}
"""Per model: message lengths (tokens without [CLS]/[SEP]) and ranks. tiny-bert's width (128) is crossed inside
the lab's 64 tokens; MiniLM's (384) is not."""
TRAINED_STEPS = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--models", default="tiny-bert,minilm", help="comma-separated models of the grid")
    parser.add_argument("--count", type=int, default=2, help="messages per (model, length, rank)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/exactness.json")
    return parser


def run_cell(model: ll.models.PublicModel, tokens: int, rank: int, examples: list, count: int, seed: int) -> dict:
    """The rule's verdict for ``tokens``-token messages at rank ``rank``, and ``lora-best``'s mean scores on
    ``count`` of them."""
    attack = get_attack("lora-best")
    prediction = exactness.predict(model, tokens + 2, rank)
    rows, seconds = [], 0.0
    for example in ll.data.joined_to_tokens(model.tokenizer, examples, tokens, count):
        shared = ll.fl.capture_update([example.text], [example.label], model, rank=rank,
                                      trained_steps=TRAINED_STEPS, seed=seed)
        start = time.process_time()
        rebuilt = attack.reconstruct(shared, Knowledge(length=tokens))
        seconds += time.process_time() - start
        rows.append(ll.experiments.result_rows([example.text], rebuilt, shared, Knowledge(length=tokens),
                                               "lora-best")[0])
    mean = (lambda key: sum(float(r[key]) for r in rows) / len(rows))
    return {"model": model.name, "tokens": tokens, "inputs": tokens + 2, "rank": rank, "span": prediction.span,
            "width": prediction.width, "verdict": prediction.verdict, "reason": prediction.reason,
            "messages": len(rows), "token_accuracy": mean("token_accuracy"), "rouge1": mean("rouge1"),
            "exact": sum(float(r["token_accuracy"]) == 1.0 for r in rows),
            "certified": sum(r.residual < ll.attacks.CERTIFIED for r in rows), "cpu_seconds": seconds / len(rows)}


def main() -> None:
    args = build_parser().parse_args()
    print(ll.setup(args.seed))
    examples = ll.data.rotten_tomatoes(args.data, seed=args.seed)
    names = args.models.split(",")
    unknown = [n for n in names if n not in GRID]
    if unknown:
        raise SystemExit(f"--models takes models of the grid: {', '.join(GRID)} (not {unknown[0]}).")
    results = {"machine": ll.experiments.evaluate.machine(), "started": time.strftime("%Y-%m-%d %H:%M"),
               "trained_steps": TRAINED_STEPS,
               "command": "python benchmarks/exactness.py " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("data", "out")),
               "rows": []}
    out = Path(args.out)
    cells = [(name, tokens, rank) for name in names for tokens in GRID[name][0] for rank in GRID[name][1]]
    for name, tokens, rank in tqdm(cells, desc="model × length × rank"):
        model = ll.models.resolve(name)
        model.check_available()
        row = run_cell(model, tokens, rank, examples, args.count, args.seed)
        results["rows"].append(row)
        out.write_text(json.dumps(results, indent=1))
        tqdm.write(f"{name:<9} {row['inputs']:>3} inputs r={rank:<3} {row['verdict']:<15} "
                   f"{row['token_accuracy']:.0%} ({row['exact']}/{row['messages']} exact, "
                   f"{row['certified']} certified, {row['cpu_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
