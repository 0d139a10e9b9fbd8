"""Attacks on LoRA-only updates by name, the strongest one ("lora-best"), head tricks, and one scored run.

What a LoRA update carries, per round:
- after some rounds (``B ≠ 0``): ``dL/dA = s·Bᵀ G`` whose rows span the layer's inputs, so the first layer
  gives the tokens exactly (``span``);
- at round 0 (``B = 0``): every ``dL/dA`` is zero and ``dL/dB = s·G·Aᵀ = s·Σ_t δ_t (A x_t)ᵀ`` only shows each
  input through the ``r`` random directions of ``A``; the head gradient still gives the label and, at
  batch size 1, the pooled sentence vector (``pooled_output``). There the course falls back to DLG.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from .. import data, fl, metrics, models
from .base import Attack, Callback, Reconstruction, SharedUpdate
from .dlg import DLG
from .labels import head_bias_gradient
from .later_layers import span_then_later_layers
from .span import SpanAttack, first_layer_rows

ROUND0_LR = 0.3
"""Adam's step on the vocabulary logits at round 0: over MiniLM's 30k-token vocabulary DLG's 0.03 barely moves."""
ROUND0_RESTARTS = 3
"""Relaxation restarts at round 0 (``dlg_steps // 2`` steps each): their top tokens together form the shortlist."""
ROUND0_SEARCH_STEPS = 60
"""Greedy substitution steps after the relaxation at round 0 (each scores a few hundred texts exactly)."""
LATER_SECONDS = 60.0
"""Time the later-layer search may take on a sentence the first layer alone could not certify."""
DEFAULT_ROUNDS = 20
"""Training steps of the global adapter before the attacked round in the CLI and benchmark: ``B ≠ 0``."""


def head_weight_gradient(update: dict[str, torch.Tensor]) -> torch.Tensor:
    """The gradient of the classification head's weight (``num_labels × hidden``)."""
    names = [n for n in update if n.endswith("classifier.weight") or n.endswith("classifier.modules_to_save.default.weight")]
    if not names:
        raise ValueError("the update holds no classifier weight: the pooled output needs the head to be shared.")
    return update[names[0]]


def pooled_output(update: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pooled sentence vector of a batch-1 update, exactly: ``dL/dW_c = (p_c − y_c)·h`` and ``dL/db_c = p_c − y_c``.

    Dividing a row of the head's weight gradient by the matching bias entry gives ``h``, the input of the
    head (the pooler output of [CLS] in the last layer), whatever the round.
    """
    bias = head_bias_gradient(update).detach().double()
    c = int(torch.argmax(bias.abs()))
    if float(bias[c].abs()) == 0.0:
        raise ValueError("the head-bias gradient is zero: the model is already certain, nothing can be divided.")
    return head_weight_gradient(update).detach().double()[c] / bias[c]


def lora_a_is_zero(update: dict[str, torch.Tensor]) -> bool:
    """True at round 0, where ``B = 0`` makes every ``dL/dA`` zero."""
    return all(float(t.abs().max()) == 0.0 for n, t in update.items() if "lora_A" in n)


class LoRABest:
    """The strongest attack the course has on a LoRA-only update.

    With non-zero first-layer ``lora_A`` gradients it runs the span attack (exact tokens within the
    stacked rank, matching pursuit and local search beyond it) and, for one sentence it could not certify,
    a local search on the spans of layers 0 and 1 for up to ``later_seconds`` (``later_layers``); at round
    0 it runs relaxed-vocabulary
    cosine DLG on the ``lora_B`` and head gradients (lr 0.3, three restarts of ``dlg_steps // 2`` steps) as a
    shortlist of tokens per position, then a greedy discrete search of single-token substitutions and pair
    swaps scored by the exact matching loss (``DLG.search_steps``).
    """

    name = "lora-best"

    def __init__(self, dlg_steps: int = 200, restarts: int = 1, later_seconds: float = LATER_SECONDS) -> None:
        self.dlg_steps, self.restarts, self.later_seconds = dlg_steps, restarts, later_seconds

    def reconstruct(self, shared: SharedUpdate, callback: Callback | None = None) -> Reconstruction:
        start = time.perf_counter()
        if not lora_a_is_zero(shared.update):
            first_layer_rows(shared.update)  # one clear error when layer 0 has no attention LoRA
            result = span_then_later_layers(shared, self.later_seconds, callback=callback)
        else:
            dlg = DLG(distance="cosine", lr=ROUND0_LR, steps=max(1, self.dlg_steps // 2),
                      restarts=max(ROUND0_RESTARTS, self.restarts), search_steps=ROUND0_SEARCH_STEPS, progress=False)
            result = dlg.reconstruct(shared, callback)
        result.attack, result.seconds = self.name, time.perf_counter() - start
        return result


ATTACKS = ("lora-best", "span", "dlg")
"""Attack names the CLI and benchmark accept."""


def get_attack(name: str, dlg_steps: int = 200) -> Attack:
    """An attack by name, or one ``ValueError`` listing the names."""
    if name == "lora-best":
        return LoRABest(dlg_steps)
    if name == "span":
        return SpanAttack()
    if name == "dlg":
        return DLG(distance="cosine", steps=dlg_steps, progress=False)
    raise ValueError(f"unknown attack {name!r}: choose one of {', '.join(ATTACKS)}.")


def attack_texts(texts: Sequence[str], labels: Sequence[int] | None = None, model_name: str = "tiny-bert",
                 rank: int = 8, rounds: int = DEFAULT_ROUNDS, attack: str = "lora-best", seed: int = 0,
                 train_head: bool = True, dlg_steps: int = 200, know_length: bool = True) -> list[dict]:
    """Simulate one client's LoRA update on ``texts`` (one batch), attack it, and score every sentence.

    Returns one row per sentence with ``original``, ``reconstruction``, ``token_accuracy``, ``rouge1``,
    ``rouge2``, ``rougeL``, ``seconds`` (attack time per sentence) and the set-up. Reconstructions are
    matched to sentences by the Hungarian assignment on ROUGE-1 when the batch has several. With
    ``know_length`` the server is told the padded length (``shared.max_tokens``), as DLG needs.
    """
    models.check_model_name(name=model_name)
    if rounds < 0:
        raise ValueError(f"rounds must be 0 (the first round) or more, got {rounds}.")
    method = get_attack(attack, dlg_steps)
    tokenizer = models.load_tokenizer(model_name)
    labels = list(labels) if labels is not None else [0] * len(texts)
    shared = fl.capture_update(list(texts), labels, model_name, rank, train_head=train_head, rounds=rounds, seed=seed)
    references = [tokenizer(t)["input_ids"][1:-1] for t in texts]
    if know_length:
        shared.max_tokens = max(len(r) for r in references)
    result = method.reconstruct(shared)
    rows = metrics.score_batch(list(texts), result.texts, references, result.token_ids)
    order = metrics.match_batch(list(texts), result.texts)
    for row, text, j in zip(rows, texts, order):
        row.update(original=text, reconstruction=result.texts[j] if j >= 0 else "", model=model_name, rank=rank,
                   rounds=rounds, attack=attack, batch_size=len(texts), seconds=result.seconds / len(texts),
                   tokens=len(tokenizer.tokenize(text)))
    return rows


@dataclass(frozen=True)
class Setting:
    """One row of the leakage table: which model, sentence length, batch, rank, round and parts shared."""

    model: str
    tokens: int
    batch_size: int = 1
    rank: int = 8
    rounds: int = DEFAULT_ROUNDS
    attack: str = "lora-best"
    train_head: bool = True

    def label(self) -> str:
        head = "" if self.train_head else ", head frozen"
        return (f"{self.model}, {self.tokens} tokens, batch {self.batch_size}, r={self.rank}, "
                f"{'round 0' if self.rounds == 0 else f'{self.rounds} steps trained'}{head}")


BENCHMARK = (
    Setting("tiny-bert", 16), Setting("minilm", 16), Setting("minilm", 32), Setting("minilm", 64),
    Setting("minilm", 16, batch_size=4), Setting("tiny-bert", 16, rounds=0),
)
"""The settings of the issue's targets (LoRA r=8 on query+value)."""


def run_setting(setting: Setting, examples: Sequence[data.Example], count: int, seed: int = 0,
                dlg_steps: int = 200) -> dict:
    """Attack ``count`` sentences cut to ``setting.tokens`` tokens (in batches) and average the scores."""
    tokenizer = models.load_tokenizer(setting.model)
    chosen = data.truncate_to_tokens(tokenizer, list(examples), setting.tokens, count)
    rows: list[dict] = []
    for i in range(0, count - setting.batch_size + 1, setting.batch_size):
        batch = chosen[i:i + setting.batch_size]
        rows += attack_texts([e.text for e in batch], [e.label for e in batch], setting.model, setting.rank,
                             setting.rounds, setting.attack, seed, setting.train_head, dlg_steps)
    summary = metrics.summarize(rows)
    keys = ("token_accuracy", "rouge1", "rouge2", "rougeL", "exact_match", "seconds")
    return {**asdict(setting), "sentences": len(rows),
            **{k: summary[k]["mean"] for k in keys if k in summary}, "rows": rows}
