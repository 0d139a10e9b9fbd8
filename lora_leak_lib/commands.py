"""What the ``lora-leak`` commands do, once ``cli`` has checked their arguments: the half that loads torch.

``cli`` parses and checks a command line with nothing heavy loaded, then calls the function here of the same
name; each of these resolves the model name once and runs the library.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config, course, data, experiments, gradients, lora, models
from .course import book as course_book, colab, executed, grading, student_copies
from .experiments import evaluate as evaluation
from .attacks import attack_names, check_attack_name, infer_labels
from .fl import capture_update
from .message import FederatedSetup


def demo(args: argparse.Namespace) -> None:
    """One client, one private sentence, one FedSGD step with LoRA: what the server receives and rebuilds."""
    model = models.resolve(args.model)  # the one place the demo reads a model name
    setup = FederatedSetup(model=model, rank=args.rank)
    model.check_available()
    sentences = data.course_sentences()
    if not 0 <= args.index < len(sentences):
        raise ValueError(f"--index {args.index} is out of range: choose 0 to {len(sentences) - 1}.")
    config.setup(args.seed)
    example = sentences[args.index]
    trained_steps = experiments.DEFAULT_TRAINED_STEPS
    print(f"A client fine-tunes {args.model} with LoRA (rank {args.rank} on {' and '.join(setup.targets)}) on one private")
    print(f"sentence and sends its gradient to the server (FedSGD, seed {args.seed}). The global adapter has")
    print(f"already trained {trained_steps} steps on other clients' sentences, so B ≠ 0.\n")
    shared = capture_update([example.text], [example.label], model, rank=args.rank, trained_steps=trained_steps,
                            seed=args.seed)
    rows = gradients.describe_update(shared.update)
    width = max(len(gradients.short_name(r.name)) for r in rows)
    print("What crosses the wire:")
    for r in rows:
        print(f"  {gradients.short_name(r.name):<{width}}  {str(list(r.shape)):<10} {r.bytes:>7,} bytes")
    total_model = lora.count_parameters(shared.public_model())
    sent = sum(r.numel for r in rows)
    print(f"  {'total':<{width}}  {sent:,} numbers, {gradients.update_bytes(shared.update):,} bytes "
          f"= {100 * sent / total_model:.2f}% of the model's {total_model:,} parameters\n")
    print(f"private sentence : {example.text!r}")
    if model.family.head is not None:  # a decoder's client has no label to read
        label = infer_labels(shared.update)[0]
        print(f"true label       : {data.LABELS[example.label]}")
        print(f"server reads     : label {data.LABELS[label]} from the sign of the head-bias gradient "
              f"({'right' if label == example.label else 'wrong'})")
    row = experiments.attack_update(shared, [example.text], "lora-best")[0]
    print(f"server rebuilds  : {row['reconstruction']!r}")
    print(f"token accuracy   : {row['token_accuracy']:.1%} (ROUGE-1 {row['rouge1']:.1%}), attack lora-best told "
          f"the length, {row['seconds']:.1f} s")
    first = capture_update([example.text], [example.label], model, rank=args.rank, trained_steps=0, seed=args.seed)
    zero_a = all(float(t.abs().max()) == 0.0 for n, t in first.update.items() if "lora_A" in n)
    print(f"round 0 caveat   : in the first round B = 0, so every dL/dA = (alpha/r)·Bᵀ·G is zero ({zero_a} here) "
          "and the span attack has nothing to read; lora-best falls back to DLG (try `lora-leak attack --trained-steps 0`).")
    print("\nThe course explains each step: open it with `jupyter lab notebooks/`.")


def attack(args: argparse.Namespace) -> None:
    """Simulate one client's LoRA update on each text, attack it, print the reconstruction and its scores.

    The command line checked every argument and every line's text before torch loaded (``cli.check_arguments``);
    here the attack's name and each text against the model's tokenizer are checked before the first attack runs.
    """
    if args.attack not in attack_names(lora_text=True):
        check_attack_name(args.attack)  # an unknown name: the registry's message
        raise ValueError(f"attack {args.attack!r} does not rebuild text from a LoRA update: choose one of "
                         f"{', '.join(attack_names(lora_text=True))}.")
    model = models.resolve(args.model)
    model.check_available()
    config.setup(args.seed)
    tokenizer, limit = model.tokenizer, model.text_limit
    checked = []
    for number, text in enumerate(args.texts, 1):
        where = f" (line {number} of {args.file})" if args.file is not None else ""
        try:
            checked.append(data.check_text(text, tokenizer))
        except ValueError as error:
            raise ValueError(f"{error}{where}") from error
        count = data.n_tokens(tokenizer, checked[-1])
        if count > limit:
            raise ValueError(f"a text has {count} tokens but {args.model} takes at most {limit}{where}: shorten it.")
    for start in range(0, len(checked), args.batch):
        batch = checked[start:start + args.batch]
        for row in experiments.attack_texts(batch, [args.label] * len(batch), model, rank=args.rank,
                                            trained_steps=args.trained_steps, attack=args.attack, seed=args.seed,
                                            observed_rounds=args.observed_rounds, server=args.server):
            _print_row(row, args.json)


def _print_row(row: experiments.SentenceResult, as_json: bool) -> None:
    """One reconstructed sentence and its scores, flushed at once (piped output arrives as it is made)."""
    if as_json:
        print(json.dumps(row.as_json()), flush=True)
        return
    print(f"original       : {row['original']}")
    print(f"reconstruction : {row['reconstruction']}")
    print(f"token accuracy : {row['token_accuracy']:.1%}   ROUGE-1 {row['rouge1']:.1%}   "
          f"ROUGE-2 {row['rouge2']:.1%}   ROUGE-L {row['rougeL']:.1%}")
    round_ = "round 0 (B = 0)" if row.trained_steps == 0 else f"after {row.trained_steps} training steps"
    if row["server"] == "malicious":
        round_ += ", malicious server (crafted B)"
    batch = f", batch {row['batch_size']}" if row.get("batch_size", 1) > 1 else ""
    print(f"attack         : {row['attack']} on {row['model']}, r={row['rank']}, {round_}{batch}, "
          f"{row['seconds']:.1f} s per sentence\n", flush=True)


def bench(args: argparse.Namespace) -> None:
    """Run the leakage table on Rotten Tomatoes sentences and print it (and write JSON with ``--out``)."""
    settings = [s for s in experiments.BENCHMARK if args.model in (None, s.model.name)]
    if not settings:
        used = sorted({s.model.name for s in experiments.BENCHMARK})
        raise ValueError(f"no setting of the table uses {args.model!r}: choose one of {', '.join(used)}.")
    config.setup(args.seed)
    examples = data.rotten_tomatoes(args.data, seed=args.seed)
    results = []
    print(f"{'setting':<58} {'token acc':>9} {'ROUGE-1':>8} {'ROUGE-2':>8} {'s/sent':>7}")
    for setting in settings:
        result = experiments.run_leakage_setting(setting, examples, args.count, args.seed, args.dlg_steps)
        results.append(result)
        print(f"{setting.label():<58} {result['token_accuracy']:>9.1%} {result['rouge1']:>8.1%} "
              f"{result['rouge2']:>8.1%} {result['seconds']:>7.2f}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


def evaluate_suite(args: argparse.Namespace) -> None:
    """Every attack against every defence of a suite: the JSON record (resumed when it exists), the Markdown table
    and the privacy–utility figure beside it; the table is printed at the end.

    The command line checked the suite's name, the import paths' shape and ``--out`` before torch loaded; here every
    attack and defence is found (a brought-in class is built and must have ``reconstruct``) and every model of the
    suite is checked before the first row runs.
    """
    suite = evaluation.get_suite(args.suite, args.data)
    attacks = [evaluation.check_attack(name) for name in args.attack]
    suite = suite.choose(attacks=attacks, defences=evaluation.choose_defences(args.defence))
    for setting, _ in suite.cells():
        setting.model.check_available()
    suite.recipe.model.check_available()
    config.setup(args.seed)
    command = evaluation.command_line(args.suite, args.out, args.seed, args.attack, args.defence, args.data)
    record = evaluation.run_suite(suite, args.out, seed=args.seed, command=command,
                                  say=lambda line: print(line, file=sys.stderr, flush=True))
    print(evaluation.markdown(record))
    out = Path(args.out)
    print(f"\nwrote {out}, {out.with_suffix('.md')} and {out.with_suffix('.png')}", file=sys.stderr)


def list_models(args: argparse.Namespace) -> None:
    """The model registry: name, family and task, offline or hub, parameters (counted from the architecture) and
    how to install."""
    print(f"{'model':<20} {'family':<7} {'task':<15} {'where':<8} {'parameters':>12}  install")
    for name, spec in models.MODELS.items():
        count = lora.count_parameters(models.resolve(name).architecture())
        print(f"{name:<20} {spec.family:<7} {models.resolve(name).family.task:<15} {'offline' if spec.offline else 'hub':<8} "
              f"{count:>12,}  {spec.install}")


def student(args: argparse.Namespace) -> int:
    """Write the student copies of the notebooks with nbgrader (answers and hidden tests removed, outputs cleared),
    or with ``--check`` list the stale ones."""
    source = Path(args.source) if args.source else student_copies.NOTEBOOKS
    target = Path(args.target) if args.target else source / "student"
    if not source.is_dir():
        raise ValueError(f"no notebook folder at {source}: pass --source with the course's notebooks/ folder.")
    if not course.course_notebooks(source):
        raise ValueError(f"no course notebook (NN_name.ipynb) in {source}: pass --source with the course's "
                         "notebooks/ folder.")
    if target.exists() and not target.is_dir():
        raise ValueError(f"--target {target} is a file: give a folder for the student copies.")
    if args.check:
        stale = student_copies.stale_student_notebooks(source, target)
        if stale:
            print(f"stale student notebooks (run `lora-leak student`): {', '.join(stale)}")
            return 1
        print(f"student notebooks in {target} are current.")
        return 0
    written = student_copies.write_student_notebooks(source, target)
    print(f"wrote {len(written)} student notebooks to {target}")
    return 0


def grade_notebooks(args: argparse.Namespace) -> int:
    """Autograde filled-in student copies with nbgrader: points per checked exercise, the total, and where the
    learner's feedback (HTML) was written, beside each copy."""
    source = Path(args.source) if args.source else student_copies.NOTEBOOKS
    for notebook in args.notebooks:
        print(grading.grade(notebook, source, timeout=args.timeout).table(), flush=True)
    return 0


def colab_cells(args: argparse.Namespace) -> int:
    """Write every Colab badge and install cell from pyproject's URL, with ``--check`` list those that differ, or
    with ``--bundle`` build the wheel a student uploads to Colab."""
    if args.bundle:
        wheel = colab.bundle(Path(args.out))
        print(f"wrote {wheel}: upload it to Colab's Files pane (/content), or to MyDrive on Google Drive and mount "
              "Drive; each notebook's install cell installs it (`pip install` it anywhere else).")
        return 0
    if args.check:
        problems = colab.check()
        for problem in problems:
            print(problem)
        if problems:
            print(f"{len(problems)} Colab badges or install cells disagree with pyproject.toml: run `lora-leak colab`.")
            return 1
        print(f"every Colab badge and install cell opens {colab.repository()}.")
        return 0
    changed = colab.write()
    names = ", ".join(str(p.relative_to(colab.ROOT)) for p in changed)
    print(f"rewrote {len(changed)} files from {colab.repository()}" + (f": {names}" if changed else ""))
    return 0


def book(args: argparse.Namespace) -> None:
    """Write the course book (pages, course map, glossary) from the notebooks' committed outputs, running those
    whose outputs are stale in quick mode."""
    pages = course_book.build(args.notebooks, args.out)
    print(f"wrote {len(pages)} pages to {args.out}: open {Path(args.out) / 'index.html'}")


def execute_notebooks(args: argparse.Namespace) -> None:
    """Run solution notebooks in place and commit their cleaned outputs (all by default)."""
    executed.execute(executed.notebook_paths(args.notebook), args.mode)
