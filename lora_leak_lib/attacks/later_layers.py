"""Later layers as a sharper certificate: when the first layer's span is too small for the sentence.

Every layer's ``lora_A`` gradient rows lie in the span of *that* layer's inputs, just as in layer 0. Past
layer 0 those inputs are hidden states, which depend on the whole sentence, so the server cannot test
tokens one by one there; but for a whole candidate sentence it can run the public model and measure how
much of each layer's gradient span its hidden states leave unexplained. Only the true sentence leaves
nothing in any layer, and layer 1 is far more sensitive to word order than layer 0 (one swapped pair of
64 tokens leaves 10× more residual there). ``deep_refine`` is a local search on that sum: token moves,
swaps and substitutions, the substitutes ranked over the whole vocabulary by the layer-0 span test.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from .base import Progress, Reconstruction, SharedUpdate
from .batch_threads import thread_batch
from .case import Case
from .inputs import EmbeddingInputs
from .layer_residual import DEFAULT_LAYERS, LayerResidual
from .search import (descent_step, input_basis, kicked, random_moves, rearrangements_at, substitution,
                     unexplained)
from .span import CERTIFIED

LATER_ITERATIONS = 40
"""Iterations of the later-layer search on a sentence the first layer alone could not certify (each scores up to
258 candidate sentences on layers 0 and 1): the budget is counted in steps, never in seconds."""
SAFETY_SECONDS = 3600.0
"""A runaway guard only: no default search comes near it, and no test or notebook result depends on it."""


def substitutes(basis: torch.Tensor, inputs: EmbeddingInputs, ids: list[int], vocab: torch.Tensor,
                count: int) -> dict[int, list[int]]:
    """For each inner position, the ``count`` tokens of the whole vocabulary that would explain most of the
    layer-0 span left over by the other positions (float32: a ranking, not a certificate).

    Every product with a candidate ``x = (γ⊙ē + γ⊙c̄)/σ + β`` splits into a token part, computed once for
    the vocabulary, and a position part, so no ``V × d`` tensor is built per position.
    """
    n, d = len(ids), inputs.tokens.shape[1]
    e = inputs.tokens[vocab].float()                                         # centred ē (V, d)
    gamma, beta = inputs.gamma.float(), inputs.beta.float()
    ge = e * gamma                                                           # γ⊙ē
    e_norm, ge_norm, ge_beta = e.pow(2).sum(1), ge.pow(2).sum(1), ge @ beta
    chosen = inputs.vectors(ids, list(range(n)))
    out = {}
    for p in range(1, n - 1):
        u = input_basis(torch.cat([chosen[:p], chosen[p + 1:]]))            # inputs of the other positions
        resid = unexplained(basis, u)
        c = inputs.positions[p].float()
        gc = gamma * c
        sigma = torch.sqrt((e_norm + 2 * (e @ c) + c.pow(2).sum()) / d + inputs.eps)
        matrix = torch.cat([u, resid.T], dim=1).float()                      # (d, n-1+k)
        product = (ge @ matrix + gc @ matrix) / sigma[:, None] + beta @ matrix
        norm_x = ((ge_norm + 2 * (ge @ gc) + gc.pow(2).sum()) / sigma.pow(2)
                  + 2 * (ge_beta + gc @ beta) / sigma + beta.pow(2).sum())
        outside = (norm_x - product[:, :u.shape[1]].pow(2).sum(1)).clamp(min=1e-12)
        gain = product[:, u.shape[1]:].pow(2).sum(1) / outside
        out[p] = vocab[torch.topk(gain, count).indices].tolist()
    return out


def neighbours(ids: list[int], substitutes: dict[int, list[int]], window: int) -> list[tuple[list[int], set[int]]]:
    """Every sentence one step away, with the positions it touches: move a token (up to ``window`` places),
    swap two, or substitute one. [CLS] and [SEP] stay where they are."""
    inner = range(1, len(ids) - 1)
    out = []
    for p in inner:
        out += [([ids[i] for i in order], touched) for order, touched in rearrangements_at(ids, p, inner, window)]
        out += [substitution(ids, p, token) for token in substitutes.get(p, []) if token != ids[p]]
    return out


def deep_refine(shared: SharedUpdate, inputs: EmbeddingInputs, ids: list[int], vocab: torch.Tensor,
                layers: Sequence[int] = DEFAULT_LAYERS, iterations: int = LATER_ITERATIONS, substitute_count: int = 8,
                window: int = 8, shortlist: int = 256, kick: int = 3, patience: int = 1, seed: int = 0,
                on_iteration: Callable[[int, float], None] | None = None,
                safety_seconds: float = SAFETY_SECONDS) -> tuple[list[int], float]:
    """Local search on the later-layer residual, from ``ids`` (with [CLS]/[SEP]); returns ids and residual.

    Layer 0 is always among ``layers``: its span ranks the substitutes and pre-ranks the neighbours.

    Each round ranks every neighbour of the sentence by its layer-0 residual (no transformer block:
    cheap), scores the best ``shortlist`` of them on all ``layers``, then takes the best step together
    with the other improving steps that touch positions away from it (many repairs per round on long
    sentences), if the combination scores better than the best step alone. Substitutes are ranked again
    only when a round finds nothing. At a local minimum the best sentence so far gets ``kick`` random
    steps and the descent starts again (iterated local search). It stops when the sentence is certified
    in every layer, after ``patience`` kicks in a row that found nothing better (``kick=0``: at the first
    local minimum), or after ``iterations`` iterations: a budget in steps, so the same seed gives the same sentence
    on any machine. ``on_iteration(iteration, best residual)`` is called after each iteration; ``safety_seconds`` only
    guards against a runaway search and no result should depend on it.
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    score = LayerResidual(shared, sorted({0, *layers}))  # layer 0 ranks substitutes and pre-ranks neighbours
    basis = score.bases[0]
    best_ids, best = list(ids), float(score([ids])[0])
    value, stale = best, 0
    subs, fresh = substitutes(basis, inputs, ids, vocab, substitute_count), True
    for iteration in range(iterations):
        if best < CERTIFIED or time.perf_counter() - start > safety_seconds:
            break
        if on_iteration is not None and iteration:
            on_iteration(iteration, best)
        steps = neighbours(ids, subs, window)
        if len(steps) > shortlist:
            first = score([s for s, _ in steps], layers=(0,))
            steps = [steps[i] for i in torch.argsort(first)[:shortlist].tolist()]
        step = descent_step(ids, steps, score, value)
        if step is not None:
            (ids, value), fresh = step, False
            if value < best:
                best_ids, best, stale = list(ids), value, 0
            continue
        if not fresh:  # a local minimum: rank the substitutes again at this sentence first
            subs, fresh = substitutes(basis, inputs, ids, vocab, substitute_count), True
            continue
        if kick == 0 or stale >= patience:
            break
        stale += 1
        ids = kicked(best_ids, random_moves(neighbours(best_ids, subs, window), kick, generator))
        value, fresh = float(score([ids])[0]), False
    return best_ids, best


def later_layer_search(case: Case, found: Reconstruction, progress: Progress, iterations: int = LATER_ITERATIONS,
                       layers: Sequence[int] = DEFAULT_LAYERS) -> Reconstruction:
    """One sentence the first layer could not certify (``found``), repaired by ``deep_refine`` on the spans of
    ``layers`` of the latest live round, for up to ``iterations`` iterations; one more step of ``progress``."""
    start = time.perf_counter()
    tokenizer = case.tokenizer
    ids = [case.special[0]] + found.token_ids[0] + [case.special[1]]
    ids, residual = deep_refine(case.live_rounds[0], case.inputs, ids, case.vocab, layers, iterations)
    body = ids[1:-1]
    progress.step(residual, [tokenizer.decode(body)])
    return Reconstruction(token_ids=[body], texts=[tokenizer.decode(body)], labels=found.labels,
                          attack=found.attack, seconds=found.seconds + time.perf_counter() - start,
                          loss=residual, loss_history=progress.loss_history, snapshots=progress.snapshots)


def thread_sentences(case: Case, found: Reconstruction, progress: Progress) -> Reconstruction:
    """A batch whose tokens per position the first layer certified (``found``): thread them into sentences by
    layer 1 (``batch_threads.thread_batch``); one more step of ``progress``."""
    start = time.perf_counter()
    sentences, residual = thread_batch(case, found.token_ids)
    texts = [case.tokenizer.decode(s) for s in sentences]
    progress.step(found.loss if residual != residual else residual, texts)
    return Reconstruction(token_ids=sentences, texts=texts, labels=found.labels, attack=found.attack,
                          seconds=found.seconds + time.perf_counter() - start, loss=progress.loss_history[-1],
                          loss_history=progress.loss_history, snapshots=progress.snapshots)
