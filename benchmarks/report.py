"""Write docs/RESULTS.md from the benchmarks' JSON files: every number in it is read from benchmarks/results/*.json.

Run from anywhere: ``python benchmarks/report.py`` writes ``docs/RESULTS.md``; ``python benchmarks/report.py --check``
writes nothing and exits 1, naming the file, when ``docs/RESULTS.md`` differs from what it would write (a test runs
it). ``--results DIR`` and ``--out FILE`` point it at other copies. The library never imports this script, and this
script imports nothing but the standard library, so it runs in a second without torch.

What the JSON files do not hold (the day of a run, the command behind some files) is in ``PROVENANCE`` below, taken
from what the README recorded about each run; a table says "not recorded" where nothing was.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Iterable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUT = REPO / "docs" / "RESULTS.md"
COMMAND = "python benchmarks/report.py"

PROVENANCE: dict[str, dict[str, str]] = {
    # NOT IN THE JSON FILES. Per file: "date" of the run where the README recorded one; "command" that wrote the
    # file where neither the JSON nor a computed command says it (from the README's results section and the scripts'
    # docstrings); "committed": the day git last committed the file, shown where the run's own date is unknown.
    "adam_delta.json": {"command": "OMP_NUM_THREADS=1 python benchmarks/adam_delta.py", "committed": "2026-12-04"},
    "full_gradient.json": {"committed": "2026-11-25"},
    "lora_leakage.json": {"committed": "2026-11-25"},
    "lora_leakage_batch.json": {"date": "2026-12-02", "command": "python benchmarks/lora_leakage.py --settings 4 "
                                "--count 20 --out benchmarks/results/lora_leakage_batch.json"},
    "lora_leakage_families.json": {"command": "python benchmarks/lora_leakage.py --settings 6,9 --count 20 --out "
                                   "benchmarks/results/lora_leakage_families.json", "committed": "2026-12-01"},
    "lora_leakage_fastest.json": {"date": "2026-12-01", "command": "python benchmarks/lora_leakage.py --settings 0,1,4 "
                                  "--count 20 --out benchmarks/results/lora_leakage_fastest.json"},
    "lora_leakage_mpnet_64.json": {"date": "2026-12-02", "command": "OMP_NUM_THREADS=1 python "
                                   "benchmarks/lora_leakage.py --settings 8 --long-count 5 --out "
                                   "benchmarks/results/lora_leakage_mpnet_64.json"},
    "lora_leakage_mpnet_idle.json": {"command": "python benchmarks/lora_leakage.py --settings 6 --count 20 --out "
                                     "benchmarks/results/lora_leakage_mpnet_idle.json", "committed": "2026-12-01"},
    "lora_leakage_mpnet_long.json": {"command": "python benchmarks/lora_leakage.py --settings 7,8 --count 10 "
                                     "--long-count 2 --out benchmarks/results/lora_leakage_mpnet_long.json",
                                     "committed": "2026-12-01"},
    "lora_leakage_round0.json": {"date": "2026-12-02", "command": "OMP_NUM_THREADS=1 python benchmarks/lora_leakage.py "
                                 "--settings 5 --long-count 20 --out benchmarks/results/lora_leakage_round0.json"},
    "lora_leakage_span_tokens.json": {"command": "python benchmarks/lora_leakage.py --settings 3,2,4,8 --count 20 "
                                     "--long-count 5 --out benchmarks/results/lora_leakage_span_tokens.json",
                                     "committed": "2026-12-04"},
}

WHAT: dict[str, str] = {  # what each leakage file measured, in words (no numbers: those come from the JSON)
    "lora_leakage.json": "The leakage table: every CPU setting of `experiments.BENCHMARK`, one thread.",
    "lora_leakage_fastest.json": "The fastest settings with the machine's default threads and nothing else running.",
    "lora_leakage_batch.json": "The batch setting on its own, with the machine's default threads.",
    "lora_leakage_round0.json": "The first round (`B = 0`), with `lora-best`'s DLG search restarted from random "
                                "perturbations of its best sentence (`DLG.kicks`).",
    "lora_leakage_span_tokens.json": "The settings the span's-tokens path is for: the span attack reads the "
                                    "sentence's tokens off the first layer's span (`attacks/span_tokens.py`) and places "
                                    "each token by least squares, when the inputs far outnumber the rows "
                                    "(`span.FAR_PAST_RANK`) or after its first repair.",
    "lora_leakage_families.json": "Other families: MPNet at BERT-base scale (offline weights) and the GPT-2 decoder "
                                  "(next-token loss, LoRA on the fused `c_attn`).",
    "lora_leakage_mpnet_idle.json": "mpnet-base with nothing else running.",
    "lora_leakage_mpnet_long.json": "mpnet-base on longer sentences with nothing else running.",
    "lora_leakage_mpnet_64.json": "mpnet-base on its longest sentences, one thread.",
}

FULL_GRADIENT_ATTACKS = {
    "relaxed-cosine+swaps": "relaxed vocabulary + cosine + swap search",
    "relaxed-cosine": "relaxed vocabulary + cosine",
    "relaxed-l2": "relaxed vocabulary + L2",
    "embeddings-cosine": "free embeddings + cosine",
}

ORDER = {  # files of one kind in reading order; any other file of that kind follows, by name
    "lora_leakage": ["lora_leakage.json", "lora_leakage_fastest.json", "lora_leakage_batch.json",
                     "lora_leakage_round0.json", "lora_leakage_span_tokens.json", "lora_leakage_families.json",
                     "lora_leakage_mpnet_idle.json", "lora_leakage_mpnet_long.json", "lora_leakage_mpnet_64.json"],
}


# --- formatting: one way to write each kind of number, so the output is the same on every run ---------------------

def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def secs(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def num(x: float | None) -> str:
    """A number of any size in three significant digits (epsilon, losses, residuals)."""
    return "–" if x is None else f"{x:.3g}"


def load(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: Iterable[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_text(machine: dict | str | None) -> str:
    """A machine record (a script's dict or its sentence) in words."""
    if machine is None:
        return "not recorded"
    if isinstance(machine, str):
        return machine
    parts = [f"{machine.get('cpu', '?')} CPU"]
    if machine.get("cores") is not None:
        parts.append(f"{machine['cores']} cores")
    if machine.get("threads") is not None:
        parts.append(f"{machine['threads']} thread{'s' if machine['threads'] != 1 else ''}")
    if "gpu" in machine:
        parts.append(f"GPU {machine['gpu']}" if machine["gpu"] else "no GPU")
    start = machine.get("load_average", machine.get("load_average_start"))
    if start is not None:
        parts.append(f"load average {load(start)} at the start")
    return ", ".join(parts)


def day(name: str) -> str:
    """The run's date from PROVENANCE, else what is known: the day git last committed the file."""
    known = PROVENANCE.get(name, {})
    if "date" in known:
        return f"{known['date']} (from the README's record of the run)"
    if "committed" in known:
        return f"not recorded (the file was last committed on {known['committed']})"
    return "not recorded"


def header(name: str, machine: str, date: str, commands: list[str]) -> str:
    lines = [f"`benchmarks/results/{name}`. Machine: {machine}. Date: {date}."]
    if commands:
        lines.append("\n" + "\n".join(["```bash", *commands, "```"]))
    return "\n".join(lines)


def commands_of(name: str, data: dict) -> list[str]:
    if data.get("commands"):
        return list(data["commands"])
    if "command" in PROVENANCE.get(name, {}):
        return [PROVENANCE[name]["command"]]
    return []


# --- one renderer per kind of file ------------------------------------------------------------------------------

def full_gradient(name: str, data: dict) -> str:
    results = data["results"]
    machines = sorted({r.get("machine", "not recorded") for r in results})
    steps = sorted({r["steps"] for r in results})
    command = (f"python benchmarks/full_gradient.py --sentences {data['sentences']} --length {data['length']} "
               f"--model {data['model']} --steps {steps[0]}" if len(steps) == 1 else "")
    rows = [[FULL_GRADIENT_ATTACKS.get(r["attack"], r["attack"]), f"`{r['dlg']}`", r["steps"],
             f"{pct(r['token_accuracy']['mean'])} ± {pct(r['token_accuracy']['std'])}", pct(r["rouge1"]["mean"]),
             pct(r["rouge2"]["mean"]), pct(r["exact_match"]), pct(r["label_accuracy"]), secs(r["seconds_per_sentence"]),
             secs(r["cpu_seconds_per_sentence"]), load(r.get("load_average"))] for r in results]
    return "\n\n".join([
        f"## Full fine-tuning gradients ({data['model']}, {data['length']} tokens, batch {data['batch_size']}, "
        f"{data['sentences']} sentences)",
        header(name, "; ".join(machines), day(name), [command] if command else []),
        "DLG variants against the gradient of every weight (no LoRA): the gradient of the word embeddings gives the "
        "sentence's token set, and the variants differ in how they place the tokens. Token accuracy is the mean over "
        "sentences ± its standard deviation; the load average was read at the end of each variant.",
        table(["attack", "DLG variant", "steps", "token accuracy", "ROUGE-1", "ROUGE-2", "exact match",
               "label accuracy", "wall s / sentence", "CPU s / sentence", "load"], rows),
    ])


def leakage_setting(row: dict) -> list[object]:
    return [row["model"], row["tokens"], row["batch_size"], row["trained_steps"], row["rank"], f"`{row['attack']}`",
            row["sentences"]]


def lora_leakage(name: str, data: dict) -> str:
    rows = data["rows"]
    devices = list(data.get("devices") or [])
    two = len(devices) > 1
    headers = ["model", "tokens", "batch", "steps trained", "rank", "attack", "sentences", "token accuracy", "ROUGE-1",
               "ROUGE-2", "exact match"]
    headers += [f"s / sentence ({d})" for d in devices] if two else \
        [f"s / sentence ({devices[0]})" if devices else "s / sentence"]
    body = []
    for row in rows:
        seconds = [secs(row["by_device"][d]["seconds"]) for d in devices] if two else [secs(row["seconds"])]
        body.append(leakage_setting(row) + [pct(row["token_accuracy"]), pct(row["rouge1"]), pct(row["rouge2"]),
                                            pct(row["exact_match"])] + seconds)
    machine = machine_text(data.get("machine"))
    for key in sorted(k for k in data if k.startswith("machine_")):
        machine += f" ({key.removeprefix('machine_').replace('_', ' ')}: {machine_text(data[key])})"
    parts = [f"### {name.removesuffix('.json')}", header(name, machine, day(name), commands_of(name, data))]
    if name in WHAT:
        parts.append(WHAT[name])
    parts.append(table(headers, body))
    return "\n\n".join(parts)


def multi_round(name: str, data: dict) -> str:
    runs, rows = data.get("runs", []), data["rows"]
    started = sorted(r["started"] for r in runs if r.get("started"))
    days = sorted({s.split()[0] for s in started})
    date = (days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}") + f" ({len(runs)} runs)" if days else day(name)
    kinds = sorted({machine_text({k: r.get(k) for k in ("cpu", "cores", "threads")}) for r in runs})
    loads = [r["load_average"] for r in runs if r.get("load_average") is not None]
    machine = "; ".join(kinds) + (f", load average {load(min(loads))} to {load(max(loads))} at the starts"
                                  if loads else "")
    commands = [f"python {r['command']}  # {r.get('started', 'start not recorded')}" for r in runs]
    groups = {g: [r for r in rows if r["group"] == g] for g in sorted({r["group"] for r in rows})}
    parts = ["## Watched rounds and a malicious server",
             header(name, machine, date, commands),
             "The client sends the same batch in R consecutive rounds (each under that round's global adapter) and the "
             "server stacks the first layer's `lora_A` rows of all R (`Knowledge.other_rounds`); batches are threaded "
             "into sentences by layer 1 (`attacks/batch_threads.py`). Every row runs `lora-best` told the length and the "
             "batch size unless its setting names another attack. Each run merges its rows into the file, so each row "
             "has its own load average; the `sentences` column is small, so differences of a few sentences are noise. "
             "Seconds are per sentence (a batch's attack time over its sentences); a dash is a setting this file "
             "does not hold (one round of the longest sentences is in the LoRA-only tables). The commands are as the "
             "file records them, arguments joined by spaces: quote an `--only` value that holds spaces."]
    if "fedsgd" in groups:
        fed = groups.pop("fedsgd")
        rs = sorted({r["observed_rounds"] for r in fed})
        settings = sorted({(r["model"], r["batch"], r["tokens"]) for r in fed}, key=lambda s: (s[0], s[1] * s[2], s[2]))
        body = []
        for model, batch, tokens in settings:
            found = {r["observed_rounds"]: r for r in fed
                     if (r["model"], r["batch"], r["tokens"]) == (model, batch, tokens)}
            ns = sorted({r["sentences"] for r in found.values()})
            body.append([f"{model}, {batch} × {tokens} tokens", "/".join(map(str, ns))] + [
                f"{pct(found[k]['token_accuracy'])} / {pct(found[k]['rouge1'])}, {secs(found[k]['seconds'])} s"
                if k in found else "–" for k in rs])
        parts += ["### FedSGD, R rounds watched (token accuracy / ROUGE-1, seconds per sentence)",
                  table(["setting", "sentences"] + [f"R = {k}" for k in rs], body)]
    why = groups.pop("round0-why", [])
    titles = {"round0": "First round (`B = 0`): honest server against one that crafts the adapter "
                        "(`malicious.craft_adapter`)",
              "fedavg": "FedAvg: the client sends the delta of E local steps", "length": "Sentence length at R = 1",
              "resampled": "A batch drawn afresh each round from a larger local set",
              "layers": "More layers in the later-layer certificate (`later-layers`, `layers=`)"}
    for group, found in groups.items():
        body = [[r["key"], r.get("server", "honest"), r["sentences"], pct(r["token_accuracy"]), pct(r.get("rouge1")),
                 pct(r.get("rouge2")), pct(r.get("exact_match")), secs(r["seconds"]), secs(r.get("span_test_seconds")),
                 load(r.get("load_average"))] for r in sorted(found, key=lambda r: r["key"])]
        parts += [f"### {titles.get(group, group)}",
                  table(["setting", "server", "sentences", "token accuracy", "ROUGE-1", "ROUGE-2", "exact match",
                         "s / sentence", "span test s", "load"], body)]
    if why:
        body = [[r["key"], r["sentences"], pct(r["token_accuracy"]), r["misses"], r["misses_above_truth"],
                 num(r["max_true_loss"]), num(r["min_miss_loss"]), secs(r["seconds"]), load(r.get("load_average"))]
                for r in sorted(why, key=lambda r: r["key"])]
        parts += ["### Why an honest first round misses",
                  "For every sentence the attack got wrong, DLG's exact matching loss of the sentence it returned "
                  "against that of the true sentence: a miss whose loss is above the truth's is a failure of the "
                  "search, not of the objective.",
                  table(["setting", "sentences", "token accuracy", "sentences missed", "missed with loss above the "
                         "truth's", "largest loss of a true sentence", "smallest loss of a miss", "s / sentence",
                         "load"], body)]
    return "\n\n".join(parts)


def adam_delta(name: str, data: dict) -> str:
    rows = data["rows"]
    body = [[r["setting"], f"`{r['attack']}`", r["sentences"], pct(r["token_accuracy"]), pct(r["rouge1"]),
             secs(r["seconds"]), r.get("threads", "–"), load(r.get("load_average"))] for r in rows]
    notes = [f"- `{r['attack']}`: {r['note']}" for r in rows if r.get("note")]
    parts = ["## Adam deltas",
             header(name, machine_text(data.get("machine")), day(name), commands_of(name, data)),
             "A FedAvg client that trains its adapter with Adam sends a first-layer `lora_A` delta of about "
             "`−lr·sign(g)`: the signs of the gradient rather than the gradient. The span attack (`lora-best`) on "
             "that delta, and a draft of the sign attack that `benchmarks/adam_delta.py` also runs, on MiniLM.",
             table(["setting", "attack", "sentences", "token accuracy", "ROUGE-1", "s / sentence", "threads", "load"],
                   body)]
    if notes:
        parts.append("Notes from the file:\n\n" + "\n".join(notes))
    return "\n\n".join(parts)


def article_command(args: dict) -> str:
    words = ["python benchmarks/article_replication.py"]
    for key in ("models", "attacks", "count", "steps", "trained_steps", "seed"):
        if key in args:
            value = args[key]
            words.append(f"--{key.replace('_', '-')} " + (" ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return " ".join(words)


def article_replication(name: str, data: dict) -> str:
    runs = data.get("runs", [])
    machines = sorted({machine_text({k: v for k, v in r["machine"].items() if k != "load_average"}) for r in runs})
    loads = [r["machine"]["load_average"] for r in runs if r["machine"].get("load_average") is not None]
    days = sorted({r["started"].split()[0] for r in runs if r.get("started")})
    date = (days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}") + f" ({len(runs)} runs)" if days else day(name)
    machine = "; ".join(machines) + (f", load average {load(min(loads))} to {load(max(loads))} at the starts"
                                     if loads else "")
    commands = [f"OMP_NUM_THREADS={r['machine'].get('threads', 1)} {article_command(r['args'])}  # "
                f"{r.get('started', 'start not recorded')}" + (f", commit {r['commit']}" if r.get("commit") else "")
                for r in runs]
    rows = sorted(enumerate(data["rows"]), key=lambda ir: (ir[1]["parameters"], ir[0]))
    body = [[r["model"], f"{r['parameters'] / 1e6:.1f}M", f"`{r['attack']}`", r["change"], r["sentences"],
             r["steps"] if r["steps"] is not None else "–",
             f"{pct(r['token_accuracy'])} ± {pct(r['token_accuracy_std'])}", pct(r["rouge1"]), pct(r["rouge2"]),
             pct(r.get("head_share"), 2), secs(r["seconds"]), load(r.get("load_average")), r.get("commit", "–"),
             pct(r.get("published_token_accuracy"), 0)] for _, r in rows]
    body += [[model, "–", "skipped", reason] + ["–"] * 10
             for model, reason in sorted(data.get("skipped", {}).items())]
    published = data.get("published", {})
    return "\n\n".join([
        "## The published experiment, reproduced",
        header(name, machine, date, commands),
        "DLG as published (Zhu et al., 2019: dummy inputs and a soft label optimised jointly until their gradient "
        "matches the shared one under the raw L2 distance; `experiments.replication.PUBLISHED_RECIPE`) on the course's LoRA-only "
        "updates (one sentence a message, the adapter trained before the attacked round, the classification head "
        "shared; the commands above give the sizes), "
        "then one change at a time, then `lora-best` on the same updates. Every row is told the sentence length. "
        f"`published` is the published token accuracy for a model of that size ({pct(published.get('small'), 0)} on "
        f"small models, {pct(published.get('bert'), 0)} on BERT). `head share` is the classification head's part of "
        "the update's squared norm: where it is large, the raw L2 distance is mostly a head-matching problem, which "
        "DLG solves with unrelated words. The recipe: "
        + ", ".join(f"{k} {v}" for k, v in data.get("recipe", {}).items()) + ".",
        table(["model", "parameters", "attack", "what changes", "sentences", "DLG steps", "token accuracy", "ROUGE-1",
               "ROUGE-2", "head share", "s / sentence", "load", "commit", "published"], body),
        "DLG's text code was never released, so `PUBLISHED_RECIPE` is a reading of the paper (free embeddings, soft label, "
        "L-BFGS on the raw L2 distance, nearest-token decoding); the publication's LoRA set-up (which modules and "
        "layers, which round, whether the head's gradient is shared) and its small models are not known. "
        "`mpnet-base` stands in for BERT-base, whose weights need the Hugging Face hub. What holds at every size "
        "here is the shape the course teaches: gradient matching stays far from the exact attack, while `lora-best`, "
        "reading the tokens off the first layer's `lora_A` rows, does not depend on the model's size.",
    ])


def first_round(name: str, data: dict) -> str:
    rows = data["rows"]
    body = [[r["model"], r["rank"], r["tokens"], r["inputs"], f"{r['inputs_per_rank']:.2f}", r["sentences"],
             r["readable"], pct(r["token_accuracy"]), pct(r["exact_match"]), r["certified"], secs(r["cpu_seconds"])]
            for r in rows]
    return "\n\n".join([
        "## The first round at practical ranks",
        header(name, machine_text(data.get("machine")), data.get("started") or day(name),
               [data["command"]] if data.get("command") else commands_of(name, data)),
        "Round 0 (`B = 0`: every `dL/dA` is zero), one client's message of review sentences joined and cut to the "
        "stated length, LoRA on the first layer's query and value projections, the attacker told the length. "
        "`dL/dB = s·Σ δ_t (A x_t)ᵀ` has its rows in `span{A x_t}`: with fewer inputs than `r` that span leaves part "
        "of R^r empty and pins every input (`attacks/first_round.py`). `first-round` alone; a message with at least "
        "`r` inputs fills the row space and is not readable this way (`lora-best` runs DLG there).",
        table(["model", "rank", "tokens", "inputs", "inputs ÷ r", "messages", "readable", "token accuracy",
               "exact", "certified", "CPU s / message"], body)])


def exactness(name: str, data: dict) -> str:
    rows = data["rows"]
    body = [[r["model"], r["tokens"], r["inputs"], r["rank"], r["span"], r["width"], r["verdict"], r["messages"],
             pct(r["token_accuracy"]), pct(r["rouge1"]), r["exact"], r["certified"], secs(r["cpu_seconds"])]
            for r in rows]
    return "\n\n".join([
        "## The exactness rule beside the measurement",
        header(name, machine_text(data.get("machine")), data.get("started") or day(name),
               [data["command"]] if data.get("command") else commands_of(name, data)),
        f"A trained round ({data.get('trained_steps')} steps before it), one client's message of review sentences "
        "joined and cut to the stated length, LoRA on the query and value projections, `lora-best` told the "
        "length. The verdict is `experiments.exactness.predict`'s: *exact* when the span holds every input "
        "(inputs ≤ 2r), *determined* past the rank while `2·inputs + 1 + span` stays below the width `d` (only the "
        "sentence's tokens explain the span; the attack's pursuit may not find them), "
        "*search only* past the width (the first layer fixes nothing; a search on later layers may still find it). Certified: the attack's residual below `attacks.CERTIFIED` (on tiny-bert "
        "the true sentence's own residual can stand above it, so a message can be exact and not certified).",
        table(["model", "tokens", "inputs", "rank", "span", "width", "verdict", "messages", "token accuracy",
               "ROUGE-1", "exact", "certified", "CPU s / message"], body)])


def evaluate(name: str, data: dict) -> str:
    """A ``lora-leak evaluate`` record, as the command itself writes it (``experiments.evaluate.markdown``), one
    heading level down; the figure beside the JSON when there is one."""
    from lora_leak_lib.experiments import evaluate as ev

    body = ev.markdown(data).splitlines()[1:]  # the command's own title gives way to this section's
    parts = [f"## Every attack against every defence: the {data['suite']} suite",
             f"`benchmarks/results/{name}`, written by `lora-leak evaluate`; its code fingerprint is checked against "
             "the library by `tests/test_results_doc.py`, so a table here is the current code's.",
             "\n".join(line.replace("## ", "### ", 1) if line.startswith("## ") else line for line in body)]
    figure = Path(name).with_suffix(".png").name
    if (RESULTS / figure).exists():
        parts.append(f"![Worst-case ROUGE-1 against utility](../benchmarks/results/{figure})")
    return "\n\n".join(parts)


def gpu(name: str, data: dict) -> str:
    steps = data.get("steps", [])
    machine = (f"{data.get('card', '?')}, {data.get('gpu_memory_gib', '?')} GiB; torch {data.get('torch')}, "
               f"transformers {data.get('transformers')}, peft {data.get('peft')}, CUDA {data.get('cuda')}, "
               f"Python {data.get('python')}; commit {data.get('commit') or 'not recorded'}; "
               f"{data.get('notebooks_at_once')} notebooks at once")
    budget = {True: "yes", False: "no", None: "–"}
    return "\n\n".join([
        "## The GPU run", header(name, machine, data.get("date") or "not recorded", []),
        f"`python benchmarks/gpu.py`: each step timed; a notebook meets the budget when it passes within "
        f"{data.get('budget_seconds')} s.",
        table(["step", "status", "seconds", "within budget"],
              [[s["step"], s["status"], secs(s["seconds"]), budget[s.get("within_budget")]] for s in steps]),
    ])


KINDS: list[tuple[str, Callable[[str, dict], str]]] = [
    ("full_gradient", full_gradient), ("lora_leakage", lora_leakage), ("multi_round", multi_round),
    ("adam_delta", adam_delta), ("first_round", first_round), ("exactness", exactness),
    ("article_replication", article_replication),
    ("evaluate", evaluate), ("gpu", gpu),
]
"""File-name prefixes, in the order their sections appear; a file matches the longest prefix it starts with."""


def kind_of(name: str) -> str | None:
    stem = name.removesuffix(".json")
    matches = [k for k, _ in KINDS if stem == k or stem.startswith(k + "_")]
    return max(matches, key=len) if matches else None


def ordered(kind: str, names: list[str]) -> list[str]:
    first = [n for n in ORDER.get(kind, []) if n in names]
    return first + sorted(n for n in names if n not in first)


def load_results(results: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(Path(results).glob("*.json"))}


def render(results: Path = RESULTS) -> str:
    """The whole of docs/RESULTS.md for the JSON files in ``results``."""
    files = load_results(results)
    by_kind = {k: ordered(k, [n for n in files if kind_of(n) == k]) for k, _ in KINDS}
    covered = [n for k, _ in KINDS for n in by_kind[k]]
    parts = [
        "# Benchmark results",
        f"<!-- Written by `{COMMAND}` from benchmarks/results/*.json: do not edit by hand. -->",
        f"Every table here is written by `{COMMAND}` from the JSON files in `benchmarks/results/`, which the scripts "
        f"in `benchmarks/` write; `{COMMAND} --check` (and `tests/test_results_doc.py`) fails when this file differs "
        "from what the JSON files give. Each table names its file, the machine, the date and the command that wrote "
        "it. The sentences are Rotten Tomatoes snippets (the README's Benchmark data section says where to get them), "
        "cut to the stated number of WordPiece tokens; the attacked client's LoRA adapter is on the attention query "
        "and value projections. On a shared machine wall-clock seconds grow with the load average, so each table "
        "gives the load it ran under.",
        f"Files: {', '.join(f'`{n}`' for n in covered)}.",
    ]
    for kind, renderer in KINDS:
        names = by_kind[kind]
        if kind == "lora_leakage" and names:
            parts += ["## LoRA-only updates",
                      "One client's LoRA update (rank and attacked round per row: `steps trained` is how many steps "
                      "the global adapter trained before, so 0 is the first round, where `B = 0`), attacked by the server told the "
                      "sentence length. A file holds the rows of one run; a setting measured in several runs appears "
                      "in each, with that run's machine and date."]
        parts += [renderer(name, files[name]) for name in names]
        if kind == "multi_round" and (Path(results) / "multi_round_cost.png").exists():
            parts.append("The cost of the attack per message, from every row (`--groups cost` writes it):\n\n"
                         "![Cost of the attack per message](../benchmarks/results/multi_round_cost.png)")
    if "gpu.json" not in files:
        parts += ["## The GPU run",
                  "No GPU run is recorded: `benchmarks/results/` holds no `gpu.json`. `python benchmarks/gpu.py` on "
                  "a machine with CUDA writes it (the README's GPU section says what it runs), and this file then "
                  "shows it."]
    others = sorted(n for n in files if kind_of(n) is None)
    if others:
        parts += ["## Files without a table",
                  "No section of `benchmarks/report.py` reads these yet: " + ", ".join(f"`{n}`" for n in others) + "."]
    return "\n\n".join(parts).rstrip() + "\n"


def check(results: Path = RESULTS, out: Path = OUT) -> str | None:
    """``None`` when ``out`` holds what ``render(results)`` gives, else one line naming the stale file."""
    expected = render(results)
    if not Path(out).exists():
        return f"{out} is missing: run {COMMAND}"
    if Path(out).read_text(encoding="utf-8") != expected:
        return f"{out} is stale (it differs from what benchmarks/results/*.json give): run {COMMAND}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when the file is stale")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON files")
    parser.add_argument("--out", type=Path, default=OUT, help="the Markdown file to write or check")
    args = parser.parse_args(argv)
    if args.check:
        problem = check(args.results, args.out)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{args.out} is current")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args.results), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
