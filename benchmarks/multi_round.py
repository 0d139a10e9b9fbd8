"""Past the stacked rank: a server that watches one client over R rounds, or chooses the adapter it sends (issue 16).

Run from the repository root: ``python benchmarks/multi_round.py --groups fedsgd [--data ../shared/data/rt-polarity]``.
Groups: ``fedsgd`` (the same batch R times, FedSGD gradients), ``length`` (16 and 32 tokens, for the cost plot), ``fedavg`` (FedAvg deltas of E local steps),
``resampled`` (a batch drawn afresh each round from a larger local set), ``round0`` (honest vs malicious server at
round 0), ``layers`` (64 tokens, one round: the later-layer search summing layers 0-1, 0-3 or 0-5), ``round0-why``
(why an honest round 0 misses: DLG's exact matching loss of the true sentence against the one the attack returns,
``--only`` picks the model), ``cost`` (the cost plot from every row written so far). Prints one row per setting, merges the rows into
``benchmarks/results/multi_round.json`` (a row of the same setting is replaced) and writes the cost plot
``benchmarks/results/multi_round_cost.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import lora_leak_lib as ll
from lora_leak_lib.experiments.multi_round import Watch, attack_watched


@dataclass(frozen=True)
class Row:
    """One row: a model, sentences of ``tokens`` tokens, ``batch`` sentences a message (``local`` held by the
    client when it draws a new batch each round), ``trained_steps`` honest training steps before, the watch, and the
    attack with its knobs (``(name, value)`` pairs)."""

    group: str
    model: str
    tokens: int
    batch: int
    watch: Watch
    trained_steps: int = 20
    local: int | None = None
    attack: str = "lora-best"
    knobs: tuple[tuple[str, object], ...] = ()

    def key(self) -> str:
        local = f", local set {self.local}" if self.local else ""
        attack = "" if self.attack == "lora-best" and not self.knobs else \
            f", {self.attack}" + "".join(f" {k}={v}" for k, v in self.knobs)
        return (f"{self.model}, {self.batch} x {self.tokens} tokens{local}, round {self.trained_steps}, "
                f"{self.watch.label()}{attack}")


def rows_of(group: str, observed: list[int]) -> list[Row]:
    """The benchmark's rows of one group, R from ``observed`` where the group varies it."""
    sgd = [Row("fedsgd", "minilm", n, b, Watch(observed_rounds=r)) for n, b in ((64, 1), (16, 4), (16, 8))
           for r in observed]
    if group == "fedsgd":
        return sgd
    if group == "length":
        return [Row("length", "minilm", n, 1, Watch(observed_rounds=r)) for n in (16, 32) for r in observed if r <= 2]
    if group == "fedavg":
        return [Row("fedavg", "minilm", n, b, Watch(observed_rounds=r, protocol="fedavg", local_steps=4,
                                                     optimizer=opt, lr=lr))
                for n, b in ((64, 1), (16, 4)) for r in observed
                for opt, lr in (("sgd", 0.05), ("adam", 1e-3)) if opt == "sgd" or r == max(observed)]
    if group == "resampled":
        return [Row("resampled", "minilm", 16, b, Watch(observed_rounds=r, batch_size=b), local=4 * b)
                for b in (1, 4) for r in observed]
    if group == "round0":
        return [Row("round0", m, 16, b, Watch(server=s), trained_steps=0) for m in ("tiny-bert", "minilm")
                for b in (1, 4) for s in ("honest", "malicious")]
    if group == "layers":
        return [Row("layers", "minilm", 64, 1, Watch(), attack="later-layers", knobs=(("layers", tuple(range(n))),))
                for n in (2, 4, 6)]
    raise ValueError(f"unknown group {group!r}: choose fedsgd, length, fedavg, resampled, round0, layers or cost.")


def run_row(row: Row, examples: list[ll.data.Example], count: int, seed: int, dlg_steps: int) -> dict:
    """Attack ``count`` sentences of the row (in messages of ``row.batch``; a local set of ``row.local``) and
    average the scores of every sentence attacked."""
    public = ll.models.resolve(row.model)
    tokenizer = public.tokenizer
    per_message = row.local or row.batch
    messages = max(1, count // row.batch)
    chosen = ll.data.truncate_to_tokens(tokenizer, examples, row.tokens, messages * per_message)
    knobs = {"steps": dlg_steps} if row.trained_steps == 0 and row.watch.server == "honest" else {}
    knobs.update(row.knobs)
    sentences: list[dict] = []
    attacks, tests = [], []
    for i in range(messages):
        part = chosen[i * per_message:(i + 1) * per_message]
        scored = attack_watched([e.text for e in part], [e.label for e in part], public, rank=8,
                                trained_steps=row.trained_steps, watch=row.watch, attack=row.attack, seed=seed,
                                time_span_test=True, **knobs)
        sentences += [s.as_json() for s in scored]
        attacks.append(scored[0].attack_seconds)
        if scored[0].span_test_seconds is not None:
            tests.append(scored[0].span_test_seconds)
    summary = ll.metrics.summarize(sentences)
    keys = ("token_accuracy", "rouge1", "rouge2", "exact_match", "seconds")
    for s in sentences:  # scores only: the Rotten Tomatoes text stays out of the repository
        s.pop("original", None)
        s.pop("reconstruction", None)
    return {"key": row.key(), "group": row.group, "model": row.model, "tokens": row.tokens, "batch": row.batch,
            "local": row.local, "trained_steps": row.trained_steps, **asdict(row.watch), "attack": row.attack,
            "knobs": dict(row.knobs), "messages": messages,
            "sentences": len(sentences), **{k: summary[k]["mean"] for k in keys if k in summary},
            "span_test_seconds": sum(tests) / len(tests) if tests else None,
            "attack_seconds": sum(attacks) / messages,
            "rows": sentences}


def round0_why(model: str, examples: list[ll.data.Example], count: int, seed: int, dlg_steps: int) -> dict:
    """Round 0, honest server, one sentence a message: is the objective or the search to blame for a miss?

    For each sentence, DLG's exact matching loss (cosine, the one ``lora-best`` minimises at round 0) of the true
    sentence and of the sentence the attack returns. The truth scores 0 up to rounding, so a returned sentence with
    a higher loss is a search that stopped in a local minimum, not an objective that prefers a wrong text."""
    from lora_leak_lib.attacks import Knowledge, get_attack, matching_losses

    public = ll.models.resolve(model)
    tokenizer = public.tokenizer
    chosen = ll.data.truncate_to_tokens(tokenizer, examples, 16, count)
    attack = get_attack("lora-best", steps=dlg_steps)
    rows = []
    for example in chosen:
        shared = ll.fl.capture_update([example.text], [example.label], public, rank=8, trained_steps=0, seed=seed)
        truth = tokenizer(example.text)["input_ids"][1:-1]
        found = attack.reconstruct(shared, Knowledge(length=len(truth)))
        true_loss, found_loss = matching_losses(shared, [truth, found.token_ids[0]])
        rows.append({"token_accuracy": ll.metrics.token_accuracy(truth, found.token_ids[0]),
                     "true_loss": true_loss, "found_loss": found_loss, "seconds": found.seconds})
    misses = [r for r in rows if r["token_accuracy"] < 1.0]
    return {"key": f"{model}, 1 x 16 tokens, round 0, why honest misses", "group": "round0-why", "model": model,
            "tokens": 16, "batch": 1, "rounds": 0, "observed_rounds": 1, "messages": len(rows),
            "sentences": len(rows), "token_accuracy": sum(r["token_accuracy"] for r in rows) / len(rows),
            "misses": len(misses), "misses_above_truth": sum(r["found_loss"] > r["true_loss"] for r in misses),
            "max_true_loss": max(r["true_loss"] for r in rows),
            "min_miss_loss": min((r["found_loss"] for r in misses), default=None),
            "seconds": sum(r["seconds"] for r in rows) / len(rows), "span_test_seconds": None,
            "attack_seconds": sum(r["seconds"] for r in rows) / len(rows), "rows": rows}


def cost_plot(rows: list[dict], out: Path) -> None:
    """Seconds per message of the span test alone and of everything else (search), against the inputs the
    span must explain (one sentence of 16, 32, 64 tokens; batches of 4 and 8 sentences of 16), one line per R."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = [r for r in rows if r["group"] == "layers" and r["knobs"].get("layers") == [0, 1]]  # lora-best's search
    chosen = [r for r in rows if r["group"] in ("fedsgd", "length") and r["span_test_seconds"]] + default
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, observed in enumerate(sorted({r["observed_rounds"] for r in chosen})):
        part = sorted((r for r in chosen if r["observed_rounds"] == observed), key=lambda r: r["batch"] * r["tokens"])
        x = [r["batch"] * (r["tokens"] + 2) for r in part]
        colour = f"C{i}"
        ax.plot(x, [r["span_test_seconds"] for r in part], "o--", color=colour, label=f"span test, R = {observed}")
        ax.plot(x, [max(r["attack_seconds"] - r["span_test_seconds"], 1e-2) for r in part], "s-", color=colour,
                label=f"search, R = {observed}")
    ax.axvline(16, color="grey", lw=0.8)
    ax.text(16, 0.5, " 2r = 16 rows a round", fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="inputs the span must explain (sentences × (tokens + 2))",
           ylabel="seconds per message (2-core CPU)",
           title="MiniLM, r = 8: the span test costs 1–3 s at any size;\nthe rest (search, batch threading) is the cost")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/rt-polarity", help="folder with rt-polarity.pos/.neg")
    parser.add_argument("--groups", default="fedsgd", help="comma-separated: fedsgd, length, fedavg, resampled, round0, layers, round0-why, cost")
    parser.add_argument("--observed", default="1,2,4,8", help="R values, comma-separated")
    parser.add_argument("--count", type=int, default=8, help="sentences per row (batch rows: whole batches)")
    parser.add_argument("--long-count", type=int, default=3, help="sentences for 64-token rows with R = 1")
    parser.add_argument("--only", default="", help="run only rows whose key contains this text")
    parser.add_argument("--dlg-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/multi_round.json")
    args = parser.parse_args()
    print(ll.setup(args.seed))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": [], "rows": []}
    observed = [int(r) for r in args.observed.split(",")]
    groups = [g for g in args.groups.split(",") if g not in ("cost", "round0-why")]
    todo = [row for g in groups for row in rows_of(g, observed) if args.only in row.key()]
    examples = ll.data.rotten_tomatoes(args.data, seed=args.seed)
    results["runs"].append({"command": " ".join(os.sys.argv), "cpu": platform.processor() or platform.machine(),
                            "threads": torch.get_num_threads(), "load_average": os.getloadavg()[0],
                            "cores": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M")})
    print(f"{'setting':<80} {'n':>3} {'tok acc':>7} {'R-1':>6} {'s/sent':>7} {'test s':>7}")
    for row in todo:
        slow = row.tokens >= 64 and row.watch.observed_rounds == 1
        start = time.perf_counter()
        result = run_row(row, examples, args.long_count if slow else args.count, args.seed, args.dlg_steps)
        result["wall_seconds"] = time.perf_counter() - start
        result["load_average"] = os.getloadavg()[0]
        results["rows"] = [r for r in results["rows"] if r["key"] != result["key"]] + [result]
        test = result["span_test_seconds"]
        print(f"{row.key():<80} {result['sentences']:>3} {result['token_accuracy']:>7.1%} {result['rouge1']:>6.1%} "
              f"{result['seconds']:>7.2f} {test if test is not None else float('nan'):>7.3f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    if "round0-why" in args.groups.split(","):
        start = time.perf_counter()
        result = round0_why(args.only or "tiny-bert", examples, args.count, args.seed, args.dlg_steps)
        result["wall_seconds"], result["load_average"] = time.perf_counter() - start, os.getloadavg()[0]
        results["rows"] = [r for r in results["rows"] if r["key"] != result["key"]] + [result]
        out.write_text(json.dumps(results, indent=1))
        print(f"{result['key']}: {result['sentences']} sentences, token accuracy {result['token_accuracy']:.1%}, "
              f"{result['misses']} missed, {result['misses_above_truth']} of them with a higher matching loss than "
              f"the truth (truth at most {result['max_true_loss']:.1e}, misses from {result['min_miss_loss']})")
    if "cost" in args.groups.split(","):
        cost_plot(results["rows"], out.with_name("multi_round_cost.png"))


if __name__ == "__main__":
    main()
