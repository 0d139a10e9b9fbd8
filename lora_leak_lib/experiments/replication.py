"""The article's experiment replicated: DLG as published (joint labels, L2) on LoRA-only updates, beside lora-best.

The course starts from a published result: DLG (Zhu et al., 2019) run on LoRA-only gradients rebuilds 16-token
sentences almost perfectly on small models but only about 36% of the tokens on BERT. ``PUBLISHED_RECIPE`` is that
attack as published; ``ARTICLE_ATTACKS`` adds, as separate rows, the numerical fix and the course's relaxations,
and ``lora-best`` on the same updates; ``run_article_row`` measures one (model, attack) row.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .. import data, fl, lora, metrics, models
from ..attacks import SharedUpdate, get_attack
from .core import DEFAULT_TRAINED_STEPS, attack_update

PUBLISHED = {"small": 1.00, "bert": 0.36}
"""The published token accuracies of DLG on LoRA-only updates of 16-token sentences: small models, BERT."""

ARTICLE_LENGTH = 16
"""Tokens per sentence (without [CLS]/[SEP]) in the published experiment."""

PUBLISHED_RECIPE: Mapping[str, object] = dict(parametrisation="embeddings", distance="l2", optimizer="lbfgs", lr=1.0,
                                         learn_label=True, use_token_set=False, scale="none")
"""DLG as published: free dummy embeddings and a soft label, optimised jointly by L-BFGS (lr 1) on the raw L2
distance between the dummy and the shared gradients; tokens are read off as the nearest word embedding."""


@dataclass(frozen=True)
class ArticleAttack:
    """One row's attack: a registry name and its knobs, and what it changes from the published recipe."""

    name: str
    attack: str
    knobs: Mapping[str, object] = field(default_factory=dict)
    change: str = ""

    def build(self, steps: int):
        """The ready attack with a budget of ``steps`` DLG optimiser steps (lora-best's are unused when B ≠ 0)."""
        return get_attack(self.attack, **{**self.knobs, "steps": steps})


ARTICLE_ATTACKS: dict[str, ArticleAttack] = {a.name: a for a in (
    ArticleAttack("dlg-published", "dlg", PUBLISHED_RECIPE, "none: joint label, L2, free embeddings, L-BFGS"),
    ArticleAttack("dlg-published-unit-scale", "dlg",
               {**PUBLISHED_RECIPE, "scale": "global", "lbfgs_tolerances": (0.0, 0.0)},
               "numerical only: L2 of the update scaled to unit norm (same minimum), L-BFGS never stops early"),
    ArticleAttack("dlg-l2-per-tensor", "dlg", {**PUBLISHED_RECIPE, "scale": "tensor", "lbfgs_tolerances": (0.0, 0.0)},
               "L2 with each shared tensor scaled to unit norm (the head no longer outweighs the adapter)"),
    ArticleAttack("dlg-relaxed-l2-per-tensor", "dlg",
               dict(parametrisation="relaxed", distance="l2", scale="tensor", optimizer="adam", lr=0.1,
                    learn_label=True, use_token_set=False),
               "L2 per tensor, relaxed vocabulary (softmax over the vocabulary, argmax), Adam lr 0.1"),
    ArticleAttack("dlg-relaxed-cosine", "dlg",
               dict(parametrisation="relaxed", distance="cosine", optimizer="adam", lr=0.1, learn_label=True,
                    use_token_set=False),
               "the course's DLG objective: relaxed vocabulary, cosine per tensor, Adam lr 0.1"),
    ArticleAttack("lora-best", "lora-best", {}, "the course's exact attack (span of the first layer's lora_A rows)"),
)}
"""Every row's attack by name: the published recipe first, then one change at a time, then ``lora-best``."""


def check_article_attack(name: str) -> ArticleAttack:
    """The entry of ``name`` in ``ARTICLE_ATTACKS`` or one clear error listing them."""
    if name not in ARTICLE_ATTACKS:
        raise ValueError(f"unknown replication attack {name!r}: choose one of {', '.join(map(repr, ARTICLE_ATTACKS))}.")
    return ARTICLE_ATTACKS[name]


def article_sentences(model: models.PublicModel, examples: Sequence[data.Example], count: int,
                   length: int = ARTICLE_LENGTH) -> list[data.Example]:
    """The first ``count`` sentences with at least ``length`` tokens of ``model``'s tokenizer, cut to it."""
    return data.truncate_to_tokens(model.tokenizer, list(examples), length, count)


def article_updates(model: models.PublicModel, sentences: Sequence[data.Example], *, rank: int = 8,
                    trained_steps: int = DEFAULT_TRAINED_STEPS, seed: int = 0) -> list[SharedUpdate]:
    """One client's LoRA-only FedSGD update per sentence (batch 1, r on query and value, the adapter trained
    ``trained_steps`` steps first, as in the leakage table): the messages every row attacks."""
    return [fl.capture_update([e.text], [e.label], model, rank=rank, trained_steps=trained_steps, seed=seed) for e in sentences]


def head_share(updates: Sequence[SharedUpdate]) -> float:
    """The mean fraction of an update's squared norm outside the LoRA adapter (the classification head's):
    what dominates DLG's raw L2 distance."""
    shares = []
    for shared in updates:
        norms = {n: float(t.double().pow(2).sum()) for n, t in shared.update.items()}
        shares.append(sum(v for n, v in norms.items() if "lora_" not in n) / max(sum(norms.values()), 1e-300))
    return sum(shares) / len(shares)


def run_article_row(model: models.PublicModel, attack: str, sentences: Sequence[data.Example], updates: Sequence[SharedUpdate],
            steps: int = 100) -> dict:
    """Attack every update with one replication attack (told the sentence length) and average the scores.

    Returns model, parameters, attack, steps, sentences, the mean token accuracy, ROUGE-1/2, label accuracy,
    attack seconds per sentence, the published figure for this model's size, and one row per sentence.
    """
    spec = check_article_attack(attack)
    if len(sentences) != len(updates) or not sentences:
        raise ValueError(f"give one update per sentence, got {len(sentences)} sentences and {len(updates)} updates.")
    rows = []
    for example, shared in zip(sentences, updates):
        start = time.perf_counter()
        row = attack_update(shared, [example.text], spec.build(steps))[0].as_json()  # told the length, as DLG assumes
        row["wall_seconds"] = time.perf_counter() - start
        rows.append(row)
    summary = metrics.summarize(rows)
    mean = {k: summary[k]["mean"] for k in ("token_accuracy", "rouge1", "rouge2", "seconds") if k in summary}
    budget = lora.parameter_budget(model, updates[0].setup.rank)
    return dict(model=model.name, parameters=budget.total, shared_parameters=budget.trainable, attack=attack,
                change=spec.change, steps=steps if spec.attack == "dlg" else None, rank=updates[0].setup.rank,
                sentences=len(rows), **mean, token_accuracy_std=summary["token_accuracy"]["std"],
                head_share=head_share(updates),
                published_token_accuracy=published_figure(model) if attack == "dlg-published" else None,
                rows=rows)


def published_figure(model: models.PublicModel) -> float:
    """The published token accuracy of DLG for this model: BERT's for BERT-base and larger, else the small models'."""
    return PUBLISHED["bert"] if lora.parameter_budget(model, 1).total >= 100_000_000 else PUBLISHED["small"]
