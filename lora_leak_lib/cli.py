"""The ``lora-leak`` command: ``demo`` shows one federated LoRA step, ``attack`` rebuilds a text, ``bench`` the table,
``evaluate`` every attack against every defence.

This module parses and checks a command line without loading torch, transformers or a model, so a bad argument is
answered at once, in one line, with exit status 2; only then does it load ``commands``, the half that does the work.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Sequence

from . import catalog
from .checks import (DEFAULT_TRAINED_STEPS, DEFAULT_SEED, SERVERS, check_int, check_rank, check_record_path,
                     check_trained_steps, visible_text)


class OldFlag(argparse.Action):
    """A renamed flag kept as an alias: it stores its value under the new name and says that name on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{option_string} is now {self.new}: it counts the same thing.", file=sys.stderr)
        setattr(namespace, self.dest, values)


def read_sentences(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, or one clear error naming the file."""
    if not path.is_file():
        raise ValueError(f"no file at {path}: give a text file with one sentence a line.")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {path} ({error.strerror or error}): check its permissions.") from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}): save it as UTF-8.") from error
    texts = [line.strip() for line in text.splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"{path} holds no sentence: write one sentence a line.")
    return texts


EVALUATION_SUITES = ("quick", "minilm", "full")
"""The suites ``lora-leak evaluate --suite`` runs (``experiments.evaluate.SUITES``: a test keeps the two the same)."""
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
"""How a brought-in attack or defence is named: ``package.module:Name``."""


def check_import_paths(names: Sequence[str], flag: str, shape: str) -> None:
    """One clear error for a ``flag`` value with a colon that is not ``package.module:Name`` (``shape`` says what
    ``Name`` is); registry names (no colon) are checked once the registries load."""
    for name in names:
        if ":" in name and not IMPORT_PATH.match(name):
            raise ValueError(f"{flag} {name!r} is not an import path: write package.module:{shape}, or a registered "
                             "name.")


def check_arguments(args: argparse.Namespace) -> None:
    """Every check of a command line that needs no model: names, counts, texts and files (``attack`` reads its file
    and keeps the visible texts as ``args.texts``). One ``ValueError`` for the first problem found."""
    if getattr(args, "model", None) is not None:
        spec = catalog.check_model_name(args.model)
        if hasattr(args, "rank"):
            check_rank(args.rank, spec.hidden_size, args.model)
    if hasattr(args, "seed"):
        check_int(args.seed, "--seed", 0)
    if args.run == "demo":
        check_int(args.index, "--index", 0, hint="it picks a course sentence")
    if args.run == "bench":
        check_int(args.count, "--count", hint="sentences per setting")
        check_int(args.dlg_steps, "--dlg-steps", hint="DLG's optimiser steps")
        if args.data is not None and not Path(args.data).is_dir():
            raise ValueError(f"no folder at {args.data}: give the folder holding rt-polarity.pos and .neg (README, "
                             "Benchmarks, says how to get it).")
    if args.run == "evaluate_suite":
        if args.suite not in EVALUATION_SUITES:
            raise ValueError(f"unknown suite {args.suite!r}: choose one of {', '.join(EVALUATION_SUITES)}.")
        if args.data is not None and not Path(args.data).is_dir():
            raise ValueError(f"no folder at {args.data}: give the folder holding rt-polarity.pos and .neg (README, "
                             "Benchmarks, says how to get it).")
        check_import_paths(args.attack, "--attack", "ClassName")
        check_import_paths(args.defence, "--defence", "function")
        args.out = args.out or f"evaluate_{args.suite}.json"
        check_record_path(args.out)
    if args.run == "attack":
        check_trained_steps(args.trained_steps, "--trained-steps")
        if args.observed_rounds < 1:
            raise ValueError(f"--observed-rounds counts the rounds the server watches, 1 or more, got "
                             f"{args.observed_rounds}.")
        check_trained_steps(args.trained_steps + args.observed_rounds - 1, "--trained-steps + --observed-rounds - 1")
        if (args.text is None) == (args.file is None):
            raise ValueError("give exactly one of --text \"...\" or --file F (one sentence a line).")
        if args.batch < 1 or args.batch > 1 and args.file is None:
            raise ValueError(f"--batch N (got {args.batch}) puts N consecutive lines of --file in one client update: "
                             "give N ≥ 1 and a --file.")
        texts = read_sentences(Path(args.file)) if args.file is not None else [args.text]
        args.texts = []
        for number, text in enumerate(texts, 1):
            try:
                args.texts.append(visible_text(text))
            except ValueError as error:
                where = f" (line {number} of {args.file})" if args.file is not None else ""
                raise ValueError(f"{error}{where}") from error
        if len(args.texts) % args.batch:
            raise ValueError(f"{args.file} has {len(args.texts)} sentences, not a multiple of --batch {args.batch}: "
                             "every client update needs a full batch.")


def build_parser() -> argparse.ArgumentParser:
    """The ``lora-leak`` command line: one sub-command per job."""
    parser = argparse.ArgumentParser(prog="lora-leak", description="Private-data leakage from LoRA gradients.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="one federated LoRA step on a private sentence, and what leaks")
    p.add_argument("--model", default="tiny-bert", help=f"one of {', '.join(catalog.MODELS)}")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--index", type=int, default=6, help="which course sentence the client holds")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.set_defaults(run="demo")
    p = commands.add_parser("attack", help="simulate a client's LoRA update on a text and rebuild the text")
    p.add_argument("--model", default="tiny-bert", help=f"one of {', '.join(catalog.MODELS)}")
    p.add_argument("--text", help="the private sentence")
    p.add_argument("--file", help="a text file, one private sentence a line (each one client update)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank r")
    p.add_argument("--trained-steps", type=int, default=DEFAULT_TRAINED_STEPS,
                   help="training steps of the global adapter before this round (0: first round, B = 0)")
    p.add_argument("--rounds", type=int, dest="trained_steps", action=OldFlag, new="--trained-steps",
                   help=argparse.SUPPRESS)
    p.add_argument("--attack", default="lora-best",
                   help="a registered attack that rebuilds text (default lora-best; an unknown name lists them)")
    p.add_argument("--observed-rounds", type=int, default=1,
                   help="rounds in which the server watches this client send the same text (1: one message)")
    p.add_argument("--batch", type=int, default=1,
                   help="N consecutive lines of --file form one client's update (a batch of N sentences)")
    p.add_argument("--server", default="honest", choices=SERVERS,
                   help="honest: the global adapter as trained; malicious: a crafted one (random B: round 0 leaks)")
    p.add_argument("--label", type=int, default=1, choices=(0, 1), help="the sentence's label (classifiers)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--json", action="store_true", help="print one JSON object per sentence")
    p.set_defaults(run="attack")
    p = commands.add_parser("bench", help="the leakage table on Rotten Tomatoes sentences")
    p.add_argument("--data", default=None,
                   help="folder with rt-polarity.pos/.neg (Pang & Lee's public sentence polarity data: README, Benchmarks, "
                        "says how to get it); without it, the hub's rotten_tomatoes (internet and `pip install datasets`)")
    p.add_argument("--count", type=int, default=20, help="sentences per setting")
    p.add_argument("--model", default=None, help="only the settings of this model")
    p.add_argument("--dlg-steps", type=int, default=200, help="DLG steps for the round-0 setting")
    p.add_argument("--out", default=None, help="also write the results as JSON to this file")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.set_defaults(run="bench")
    p = commands.add_parser("evaluate", help="every attack against every defence on one table: worst-case leakage, "
                            "utility, ε")
    p.add_argument("--suite", default="quick",
                   help=f"one of {', '.join(EVALUATION_SUITES)} (quick: CPU, minutes; minilm: the recorded "
                        "defence table, an hour or two on a CPU; full: every axis, GPU-sized)")
    p.add_argument("--attack", action="extend", nargs="+", default=[], metavar="NAME|module:Class",
                   help="only these attacks: registered names, or package.module:ClassName (instantiated with no "
                        "arguments, with a reconstruct(shared, knowledge) method)")
    p.add_argument("--defence", action="extend", nargs="+", default=[], metavar="NAME|module:function",
                   help="only these defences (and the undefended baseline): registered names, or "
                        "package.module:function(update, seed) -> update applied to every message")
    p.add_argument("--data", default=None, help="folder with rt-polarity.pos/.neg for the full suite's sentences "
                                                "(default: the course sentences)")
    p.add_argument("--out", default=None, help="the JSON record (default evaluate_SUITE.json); the .md table and "
                                               ".png figure go beside it; a rerun resumes it")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.set_defaults(run="evaluate_suite")
    p = commands.add_parser("models", help="the models the course knows: offline or hub, size, install command")
    p.set_defaults(run="list_models")
    p = commands.add_parser("student", help="write the student copies of the notebooks with nbgrader")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a student copy is stale")
    p.add_argument("--source", default=None, help="the solution notebooks (default: the course's notebooks/)")
    p.add_argument("--target", default=None, help="where student copies go (default: SOURCE/student)")
    p.set_defaults(run="student")
    p = commands.add_parser("grade", help="autograde filled-in student copies with nbgrader (points per exercise); "
                                          "the feedback goes beside each copy, NN_name.feedback.html")
    p.add_argument("notebooks", nargs="+", help="student copies, named like the course notebook (NN_name.ipynb)")
    p.add_argument("--source", default=None, help="the solution notebooks (default: the course's notebooks/)")
    p.add_argument("--timeout", type=int, default=900, help="seconds a cell may run (default: 900)")
    p.set_defaults(run="grade_notebooks")
    p = commands.add_parser("colab", help="write every Colab badge and install cell from pyproject's Repository URL")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a badge or install cell differs")
    p.add_argument("--bundle", action="store_true",
                   help="write nothing but one wheel (the library and its data) for Colab, without a public repository")
    p.add_argument("--out", default="dist", help="the folder --bundle writes the wheel into")
    p.set_defaults(run="colab_cells")
    p = commands.add_parser("book", help="the notebooks' outputs as an HTML book with a course map and glossary")
    p.add_argument("--notebooks", default=None, help="comma-separated numbers, e.g. 00,01 (default: all)")
    p.add_argument("--out", default="_book", help="the folder to write the book into")
    p.set_defaults(run="book")
    p = commands.add_parser("execute", help="run solution notebooks in place and keep their cleaned outputs")
    p.add_argument("notebook", nargs="*", help="numbers (01) or paths of solution notebooks (default: all)")
    p.add_argument("--mode", choices=("quick", "full"), default=None,
                   help="LORA_LEAK_MODE for the run (default: the library's choice, full on a GPU)")
    p.set_defaults(run="execute_notebooks")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; a ``ValueError`` becomes one line on stderr and exit status 2.

    The arguments are checked first, with nothing heavy loaded; ``commands`` (torch, transformers, the models) is
    imported only for a command line that passed.
    """
    args = build_parser().parse_args(argv)
    try:
        check_arguments(args)
        from . import commands  # torch and the models load here, once the command line has passed its checks

        status = getattr(commands, args.run)(args)
    except KeyboardInterrupt:
        print("lora-leak: interrupted.", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:  # an OSError left: a file or the network, in one line
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"lora-leak: {message}", file=sys.stderr)
        return 2
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
