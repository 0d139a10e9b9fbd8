"""Benchmark: DLG variants against FULL fine-tuning gradients of Rotten Tomatoes sentences (batch 1).

Prints a table (attack, model, length, token accuracy, ROUGE-1/2, seconds per sentence, machine) and writes
JSON to benchmarks/results/full_gradient.json (wall and CPU seconds, and the load average: on a shared
machine the wall time grows with the load). Example (2 CPU cores):

    python benchmarks/full_gradient.py --sentences 20 --length 16
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
from tqdm.auto import tqdm

VARIANTS = {
    "relaxed-cosine+swaps": dict(parametrisation="relaxed", distance="cosine", refine_sweeps=10),
    "relaxed-cosine": dict(parametrisation="relaxed", distance="cosine"),
    "relaxed-l2": dict(parametrisation="relaxed", distance="l2"),
    "embeddings-cosine": dict(parametrisation="embeddings", distance="cosine"),
}


def machine() -> str:
    """The hardware the numbers come from, in words."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, attack on 1 thread"


def run_attack(name: str, sentences: list[ll.data.Example], model: str, steps: int) -> dict:
    """Attack every sentence's full gradient with one variant; return its row and per-sentence scores."""
    public = ll.models.resolve(model)
    tokenizer = public.tokenizer
    attack = ll.get_attack("dlg", steps=steps, **VARIANTS[name])
    rows, seconds, cpu_seconds = [], 0.0, 0.0
    for example in tqdm(sentences, desc=name, leave=False):
        shared = ll.fl.capture_full_update([example.text], [example.label], public)
        start, cpu_start = time.perf_counter(), time.process_time()
        rec = attack.reconstruct(shared)
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu_start
        reference = tokenizer(example.text)["input_ids"][1:-1]
        row = ll.metrics.sentence_scores(tokenizer.decode(reference), rec.texts[0], reference, rec.token_ids[0])
        row.update(label_correct=float(rec.labels[0] == example.label))  # scores only: Rotten Tomatoes text stays out
        rows.append(row)
    summary = ll.metrics.summarize(rows)
    return dict(attack=name, dlg=attack.variant, model=model, steps=steps,
                token_accuracy=summary["token_accuracy"], rouge1=summary["rouge1"], rouge2=summary["rouge2"],
                exact_match=summary["exact_match"]["mean"], label_accuracy=summary["label_correct"]["mean"],
                seconds_per_sentence=seconds / len(sentences), cpu_seconds_per_sentence=cpu_seconds / len(sentences),
                load_average=os.getloadavg()[0], sentences=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--length", type=int, default=16, help="tokens per sentence, without [CLS]/[SEP]")
    parser.add_argument("--model", default="tiny-bert")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--attacks", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results/full_gradient.json")
    args = parser.parse_args()

    ll.setup()
    tokenizer = ll.models.resolve(args.model).tokenizer
    examples = ll.data.rotten_tomatoes(args.data, seed=0)
    sentences = ll.data.truncate_to_tokens(tokenizer, examples, args.length, args.sentences)
    results = []
    header = f"{'attack':<22}{'model':<11}{'length':>7}{'token acc':>16}{'ROUGE-1':>9}{'ROUGE-2':>9}{'s/sent':>8}  machine"
    print(header)
    for name in args.attacks:
        result = run_attack(name, sentences, args.model, args.steps)
        result.update(length=args.length, machine=machine())
        results.append(result)
        acc = result["token_accuracy"]
        print(f"{name:<22}{args.model:<11}{args.length:>7}{acc['mean']:>10.3f} ±{acc['std']:.3f}"
              f"{result['rouge1']['mean']:>9.3f}{result['rouge2']['mean']:>9.3f}"
              f"{result['seconds_per_sentence']:>8.1f}  {result['machine']}", flush=True)
        write(Path(args.out), args, results)  # after every attack, so a long run keeps what it measured
    print(f"wrote {args.out}")


def write(out: Path, args: argparse.Namespace, results: list[dict]) -> None:
    """The JSON report: the set-up and one entry per attack; entries of other attacks from an earlier run
    with the same set-up are kept, so attacks can be measured one at a time."""
    report = dict(sentences=args.sentences, length=args.length, batch_size=1, model=args.model, results=[])
    if out.exists():
        old = json.loads(out.read_text())
        if all(old.get(k) == report[k] for k in ("sentences", "length", "model")):
            report["results"] = [r for r in old["results"] if r["attack"] not in {n["attack"] for n in results}]
    report["results"] = sorted(report["results"] + results, key=lambda r: list(VARIANTS).index(r["attack"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
