"""The strongest attack the course has on a LoRA-only update ("lora-best"), whatever the round.

What a LoRA update carries, per round:
- after some rounds (``B ≠ 0``): ``dL/dA = s·Bᵀ G`` whose rows span the layer's inputs, so the first layer
  gives the tokens exactly (``span``), and later layers certify the order (``later_layers``);
- at round 0 (``B = 0``): every ``dL/dA`` is zero and ``dL/dB = s·G·Aᵀ = s·Σ_t δ_t (A x_t)ᵀ`` only shows each
  input through the ``r`` random directions of ``A``; the head gradient still gives the label and, at
  batch size 1, the pooled sentence vector (``linear.pooled_output``). There the course falls back to DLG.
"""
from __future__ import annotations

import time

from .base import Callback, Knowledge, Reconstruction, SharedUpdate
from .dlg import DLG
from .inputs import first_layer_rows, lora_a_is_zero
from .later_layers import LATER_ROUNDS, LaterLayers
from .registry import register

ROUND0_LR = 0.3
"""Adam's step on the vocabulary logits at round 0: over MiniLM's 30k-token vocabulary DLG's 0.03 barely moves."""
ROUND0_RESTARTS = 3
"""Relaxation restarts at round 0 (``dlg_steps // 2`` steps each): their top tokens together form the shortlist."""
ROUND0_SEARCH_STEPS = 60
"""Greedy substitution steps after the relaxation at round 0 (each scores a few hundred texts exactly)."""
ROUND0_KICKS, ROUND0_KICK_SIZE = 10, 8
"""At round 0 the greedy search stops in a local minimum well above the truth's loss (benchmarks/multi_round.py
``--groups round0-why``); 10 restarts from 8 random shortlisted substitutions of the best sentence so far
(iterated local search) escape some of them."""


@register("lora-best", "the strongest: span attack (then layers 0 and 1) when B ≠ 0, DLG on lora_B and the head "
          "at round 0", "span residual (B ≠ 0) or DLG's matching loss (round 0)")
class LoRABest:
    """The strongest attack the course has on a LoRA-only update.

    With non-zero first-layer ``lora_A`` gradients it runs the span attack (exact tokens within the
    stacked rank; beyond it the sentence's token set and their order from the span (``span_tokens``, off with
    ``token_sets=False``), else matching pursuit and local search) and, for one sentence it could not certify,
    a local search on the spans of layers 0 and 1 for up to ``later_rounds`` rounds (``later_layers``); at round
    0 it runs relaxed-vocabulary
    cosine DLG on the ``lora_B`` and head gradients (lr 0.3, three restarts of ``dlg_steps // 2`` steps) as a
    shortlist of tokens per position, then a greedy discrete search of single-token substitutions and pair
    swaps scored by the exact matching loss (``DLG.search_steps``), restarted ``ROUND0_KICKS`` times from random
    perturbations of the best sentence (``DLG.kicks``).
    """

    name = "lora-best"

    def __init__(self, dlg_steps: int = 200, restarts: int = 1, later_rounds: int = LATER_ROUNDS,
                 token_sets: bool = True) -> None:
        self.dlg_steps, self.restarts, self.later_rounds = dlg_steps, restarts, later_rounds
        self.token_sets = token_sets

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        start = time.perf_counter()
        if not all(lora_a_is_zero(u.update) for u in knowledge.rounds_watched(shared)):
            first_layer_rows(shared.update)  # one clear error when layer 0 has no attention LoRA
            result = LaterLayers(self.later_rounds, token_sets=self.token_sets).reconstruct(shared, knowledge, callback)
        else:
            dlg = DLG(distance="cosine", lr=ROUND0_LR, steps=max(1, self.dlg_steps // 2),
                      restarts=max(ROUND0_RESTARTS, self.restarts), search_steps=ROUND0_SEARCH_STEPS,
                      kicks=ROUND0_KICKS, kick_size=ROUND0_KICK_SIZE, progress=False)
            result = dlg.reconstruct(shared, knowledge, callback)
        result.attack, result.seconds = self.name, time.perf_counter() - start
        return result


