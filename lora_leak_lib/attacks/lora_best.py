"""The strongest attack the course has on a LoRA-only update ("lora-best"), whatever the round: its policy.

What a LoRA update carries, per round:
- after some rounds (``B ≠ 0``): ``dL/dA = s·Bᵀ G`` whose rows span the layer's inputs, so the first layer
  gives the tokens exactly (``span``), and later layers certify the order (``later_layers``);
- at round 0 (``B = 0``), and at every round of FFA-LoRA (``A`` frozen): no ``dL/dA`` to read, and
  ``dL/dB = s·Σ_t δ_t (A x_t)ᵀ`` shows each input through the ``r`` public directions of ``A``. With fewer
  inputs than ``r`` its rows leave part of R^r empty, and that alone pins every input (``first_round``); with
  as many or more the course falls back to DLG on ``lora_B`` and the head.

``policy`` says which strategy runs in which situation; each strategy is a function of its own module, and every
one reads the same ``Case``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Sequence

from ..checks import check_int
from .base import Callback, Knowledge, Progress, Reconstruction, SharedUpdate
from .case import Case
from .dlg import DLG
from .first_round import first_round_span
from .inputs import first_layer_adapted, first_layer_rows
from .later_layers import LATER_ITERATIONS, later_layer_search, thread_sentences
from .layer_residual import DEFAULT_LAYERS
from .registry import register
from .span import CERTIFIED, batch_tokens, one_sentence

ROUND0_LR = 0.3
"""Adam's step on the vocabulary logits at round 0: over MiniLM's 30k-token vocabulary DLG's 0.03 barely moves."""
ROUND0_RESTARTS = 3
"""Relaxation restarts at round 0 (``steps // 2`` steps each): their top tokens together form the shortlist."""
ROUND0_SEARCH_STEPS = 60
"""Greedy substitution steps after the relaxation at round 0 (each scores a few hundred texts exactly)."""
ROUND0_KICKS, ROUND0_KICK_SIZE = 10, 8
"""At round 0 the greedy search stops in a local minimum well above the truth's loss; 10 restarts from 8 random
shortlisted substitutions of the best sentence so far (iterated local search) escape some of them."""


def first_round_dlg(steps: int = 200, restarts: int = 1) -> DLG:
    """Round 0's strategy: relaxed-vocabulary cosine DLG on the ``lora_B`` and head gradients (lr 0.3, three
    restarts of ``steps // 2`` steps) as a shortlist of tokens per position, then a greedy discrete search
    scored by the exact matching loss, restarted ``ROUND0_KICKS`` times from random perturbations."""
    return DLG(distance="cosine", lr=ROUND0_LR, steps=max(1, steps // 2), restarts=max(ROUND0_RESTARTS, restarts),
               search_steps=ROUND0_SEARCH_STEPS, kicks=ROUND0_KICKS, kick_size=ROUND0_KICK_SIZE, progress=False)


def policy(case: Case, callback: Callback | None = None, first_round_attack: DLG | None = None,
           later_iterations: int = LATER_ITERATIONS, layers: Sequence[int] = DEFAULT_LAYERS,
           span_tokens: bool = True) -> Reconstruction:
    """What ``lora-best`` runs, situation by situation (``later-layers`` is the same without ``first_round_attack``).

    - first round (no watched ``lora_A`` gradient: ``B = 0``, or FFA-LoRA's frozen ``A``): the tokens from the
      first layer's ``dL/dB`` row spaces when the message has fewer inputs than ``r``
      (``first_round.first_round_span``), a certified batch then threaded by layer 1's row spaces; else
      ``first_round_attack``, DLG on ``lora_B`` and the head;
    - a batch: each position's tokens from layer 0 (``span.batch_tokens``), then, when layer 0 certified them,
      the sentences threaded by layer 1 (``later_layers.thread_sentences``);
    - one sentence (``span.one_sentence``): per candidate length, far past the rank (inputs over ``FAR_PAST_RANK``
      times the span's rows) the sentence's tokens read from the span first, near it the per-position pursuit and its
      repairs first (``span.recover_sentence``);
    - one sentence layer 0 could not certify: a local search on the spans of layers 0 and 1
      (``later_layers.later_layer_search``), for up to ``later_iterations`` iterations;
    - no LoRA on layer 0 (the ``frozen-layers`` defence): no input span to test, so ``first_round_attack`` on what
      is sent;
    - a known defence's noise that drowns every direction of a trained round's ``lora_A`` (``Case.drowned``) and of
      its ``dL/dB``: the message read as the unaware attack reads it (the span with the noise in it), not DLG.
    """
    progress = Progress(callback)
    forward = lambda step, loss, texts: progress.step(loss, texts)  # noqa: E731 (the strategies' steps are ours)
    if first_round_attack is not None and not first_layer_adapted(case.shared.update):
        return first_round_attack.reconstruct(case.shared, case.knowledge, callback)
    if case.first_round:
        if (found := first_round_span(case, forward)) is not None:
            if case.sentences != 1 and later_iterations > 0 and found.loss < CERTIFIED:
                return thread_sentences(case, found, progress)
            found.loss_history, found.snapshots = progress.loss_history, progress.snapshots
            return found
        if case.drowned:  # nothing stands above the known noise: read the message as the unaware attack does
            case = Case(case.shared, replace(case.knowledge, defence=None))
        elif first_round_attack is not None:
            return first_round_attack.reconstruct(case.shared, case.knowledge, callback)
    first_layer_rows(case.shared.update)  # one clear error when layer 0 has no attention LoRA
    if case.sentences != 1:
        found = batch_tokens(case, callback=forward, span_tokens=span_tokens)
        if later_iterations > 0 and found.loss < CERTIFIED:
            return thread_sentences(case, found, progress)
    else:
        found = one_sentence(case, callback=forward, span_tokens=span_tokens)
        if later_iterations > 0 and found.loss >= CERTIFIED:
            return later_layer_search(case, found, progress, later_iterations, layers)
    found.loss_history, found.snapshots = progress.loss_history, progress.snapshots
    return found


@register("lora-best", "the strongest: span attack (then layers 0 and 1) when B ≠ 0; at round 0 the dL/dB row "
          "spaces (fewer inputs than r), else DLG on lora_B and the head; DLG where layer 0 has no LoRA",
          "span residual (B ≠ 0), dL/dB certificate or DLG's matching loss (round 0)")
class LoRABest:
    """The strongest attack the course has on a LoRA-only update: ``policy`` with round 0's DLG (``steps``, its
    budget in optimiser steps, as every DLG's)."""

    name = "lora-best"

    def __init__(self, steps: int = 200, restarts: int = 1, later_iterations: int = LATER_ITERATIONS,
                 span_tokens: bool = True) -> None:
        check_int(later_iterations, "later_iterations", 0, hint="it counts the later-layer search's iterations")
        self.steps, self.restarts, self.later_iterations = steps, restarts, later_iterations
        self.span_tokens = span_tokens

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        start = time.perf_counter()
        result = policy(Case(shared, knowledge), callback, first_round_dlg(self.steps, self.restarts),
                        self.later_iterations, span_tokens=self.span_tokens)
        result.attack, result.seconds = self.name, time.perf_counter() - start
        return result


@register("later-layers", "the span attack, then a local search on the spans of layers 0 and 1 for a sentence "
          "the first layer could not certify", "span residual of layer 0, then summed over layers 0 and 1")
class LaterLayers:
    """``policy`` without a first-round strategy: the span attack, then, for one sentence it could not certify,
    the later-layer search for up to ``iterations`` iterations (a certified batch is threaded by layer 1).

    Its steps: one per sentence length the span attack tried, then one for the later-layer search.
    """

    name = "later-layers"

    def __init__(self, iterations: int = LATER_ITERATIONS, layers: Sequence[int] = DEFAULT_LAYERS,
                 span_tokens: bool = True) -> None:
        check_int(iterations, "iterations", 0, hint="it counts the later-layer search's iterations")
        self.iterations, self.layers, self.span_tokens = iterations, tuple(layers), span_tokens

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        start = time.perf_counter()
        result = policy(Case(shared, knowledge), callback, None, self.iterations, self.layers, self.span_tokens)
        result.attack, result.seconds = self.name, time.perf_counter() - start
        return result
