"""Benchmark: every defence's knob against the strongest LoRA attack, with the utility each setting keeps.

For each setting of ``lora_leak_lib.experiments.sweep.settings``: a federated run (FedSGD clients on Rotten
Tomatoes, FedAdam server) under that defence, its held-out accuracy, and the ``lora-best`` attack on the
defended messages of victim clients that hold one held-out sentence each. Prints a table and, per defence,
the setting that brings mean ROUGE-1 below 20% with the most accuracy kept (or says that none did), and
writes JSON to benchmarks/results/defenses.json. The run behind the committed JSON (2 shared CPU cores):

    OMP_NUM_THREADS=1 python benchmarks/defenses.py --model tiny-bert --grid full --sentences 240 --rounds 8 --victims 4 --max-words 16

Random-init ``tiny-bert`` barely learns Rotten Tomatoes, so its accuracy column is near chance. Pretrained
MiniLM learns it (58% -> 77% held out), so its utility numbers mean something; the README's MiniLM table:

    OMP_NUM_THREADS=1 python benchmarks/defenses.py --model minilm --grid full --sentences 400 --rounds 10 --victims 8 --max-words 16 --out benchmarks/results/defenses_minilm.json

(25 minutes for 43 settings on 2 busy CPU cores with the span attack alone; ``lora-best``'s later-layer
search can add up to a minute per victim sentence it cannot certify.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

import lora_leak_lib as ll
from lora_leak_lib.attacks import attack_names, get_attack
from lora_leak_lib.experiments import sweep


def machine() -> str:
    """The hardware the numbers come from, in words."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--model", default="tiny-bert", choices=list(ll.models.MODELS))
    parser.add_argument("--sentences", type=int, default=400, help="Rotten Tomatoes sentences in the run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--victims", type=int, default=4, help="attacked victim messages per setting")
    parser.add_argument("--max-words", type=int, default=24, help="victims' sentences have at most this many words")
    parser.add_argument("--grid", choices=("quick", "full"), default="quick", help="knob values to visit")
    parser.add_argument("--only", nargs="*", default=None, help="defence names to run (default: all)")
    parser.add_argument("--threshold", type=float, default=0.2, help="ROUGE-1 a setting must stay below")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/defenses.json")
    parser.add_argument("--attack", default="lora-best", choices=attack_names(lora_text=True),
                        help="the attack on every victim message, from the attack registry")
    return parser


def load_pool(args: argparse.Namespace) -> list[ll.data.Example]:
    """Rotten Tomatoes sentences, the short ones only (so the victims' sentences stay attackable sizes)."""
    pool = [e for e in ll.data.rotten_tomatoes(args.data, seed=args.seed) if len(e.text.split()) <= args.max_words]
    if len(pool) < args.sentences:
        raise ValueError(f"only {len(pool)} sentences of at most {args.max_words} words: ask for fewer.")
    return pool[: args.sentences]


def main() -> None:
    args = build_parser().parse_args()
    attack = get_attack(args.attack).reconstruct
    ll.setup(args.seed)
    recipe = sweep.Recipe(model=ll.models.resolve(args.model), n_clients=args.clients, rounds=args.rounds,
                             n_victims=args.victims, source=load_pool(args), held_out=0.25, seed=args.seed)
    chosen = [d for d in sweep.settings(quick=args.grid == "quick")
              if args.only is None or d.name in args.only or d.name == "none"]
    results, start = [], time.perf_counter()
    for defence in chosen:
        t = time.perf_counter()
        results.append(sweep.run_setting(defence, recipe, attack))
        print(f"{defence.label:<20} done in {time.perf_counter() - t:5.1f} s", flush=True)
    if args.only is None or "secure-agg" in args.only:
        results.append(sweep.two_client_attack(recipe, attack))
    table = sweep.recommendations(results, args.threshold)
    print("\n" + sweep.results_table(results) + "\n")
    for row in table:
        print(f"- {row['defence']}: {row['verdict']}" + (f" (ε = {row['epsilon']:.3g})" if row["epsilon"] else ""))
    report = dict(
        benchmark="defenses", machine=machine(), load_average=os.getloadavg()[0],
        seconds=time.perf_counter() - start, threshold=args.threshold,
        recipe={k: v for k, v in dataclasses.asdict(recipe).items() if k != "source"} | {"source": args.data,
                                                                                          "sentences": args.sentences},
        results=[{k: v for k, v in dataclasses.asdict(r).items() if k != "examples"} for r in results],  # no RT text
        recommendations=table,
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
