"""The ``lora-leak`` command: ``lora-leak demo`` shows one federated LoRA step and what it leaks."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import config, data, gradients, lora, models
from .attacks import infer_labels
from .fl import capture_update


def demo(args: argparse.Namespace) -> None:
    """One client, one private sentence, one FedSGD step with LoRA: print what the server receives."""
    models.check_available(args.model)
    lora.check_rank(args.rank)
    sentences = data.course_sentences()
    if not 0 <= args.index < len(sentences):
        raise ValueError(f"--index {args.index} is out of range: choose 0 to {len(sentences) - 1}.")
    config.setup(args.seed)
    example = sentences[args.index]
    print(f"A client fine-tunes {args.model} with LoRA (rank {args.rank} on query and value) on one private")
    print(f"sentence and sends its gradient to the server (FedSGD, first round, seed {args.seed}).\n")
    shared = capture_update([example.text], [example.label], args.model, rank=args.rank, seed=args.seed)
    rows = gradients.describe_update(shared.update)
    width = max(len(gradients.short_name(r.name)) for r in rows)
    print("What crosses the wire:")
    for r in rows:
        print(f"  {gradients.short_name(r.name):<{width}}  {str(list(r.shape)):<10} {r.bytes:>7,} bytes")
    total_model = lora.count_parameters(shared.public_model())
    sent = sum(r.numel for r in rows)
    print(f"  {'total':<{width}}  {sent:,} numbers, {gradients.update_bytes(shared.update):,} bytes "
          f"= {100 * sent / total_model:.2f}% of the model's {total_model:,} parameters\n")
    zero_a = all(float(t.abs().max()) == 0.0 for n, t in shared.update.items() if "lora_A" in n)
    label = infer_labels(shared.update)[0]
    print(f"private sentence : {example.text!r}")
    print(f"true label       : {data.LABELS[example.label]}")
    print(f"server reads     : label {data.LABELS[label]} from the sign of the head-bias gradient "
          f"({'right' if label == example.label else 'wrong'})")
    print(f"every dL/dA zero : {zero_a} (B = 0 in the first round, so dL/dA = (alpha/r)·Bᵀ·G = 0)")
    print("\nLater chapters rebuild the words themselves: open the course with `jupyter lab notebooks/`.")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; a ``ValueError`` becomes one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(prog="lora-leak", description="Private-data leakage from LoRA gradients.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="one federated LoRA step on a private sentence, and what leaks")
    p.add_argument("--model", default="tiny-bert", help=f"one of {', '.join(models.MODELS)}")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--index", type=int, default=6, help="which course sentence the client holds")
    p.add_argument("--seed", type=int, default=config.DEFAULT_SEED)
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ValueError as error:
        print(f"lora-leak: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
