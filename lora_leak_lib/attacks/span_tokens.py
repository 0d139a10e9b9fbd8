"""The tokens of a sentence from one round's first layer, at any length the width allows, and then their order.

Every first-layer input is ``x_p = Γ(ē_{v_p} + c̄_p)/σ_p + β`` (``EmbeddingInputs``): a token part, a position
part, the same scale ``1/σ_p`` on both, and ``β``. So each input lies in the span of ``Γē_{v_p}``, ``Γc̄_p`` and
``β``, and the gradient span ``Q`` (the stacked ``lora_A`` rows, ``k`` of them) lies in the span of

    the sentence's distinct tokens ``Γē_v``  +  the positions ``Γc̄_0 … Γc̄_{n−1}``  +  ``β``,

whatever ``σ`` is. The positions and ``β`` are known once the length is: project them out and what is left of
``Q`` lies in the span of the sentence's tokens alone, at most ``n`` of the whole vocabulary. Finding them is a
sparse recovery with ``k`` measurement vectors (a rank-aware matching pursuit over the vocabulary,
``search.Pursuit``); it needs no search over positions, so it reaches far past ``k`` inputs: while
``tokens + n + 1 + k`` stays below the width ``d``, a set that explains ``Q`` is, generically, the sentence's.

For a batch the same pursuit gives the union of its sentences' tokens, but no order: ``B·n`` inputs in a
space of ``tokens + n + 1`` dimensions are dependent once ``B·n`` reaches it, and then nearly any choice of
(token, position) inputs from that union contains the span (layer 0 certifies a wrong batch).

For one sentence the order then comes from the coefficients. Writing every row of ``Q`` in that span (least squares) gives each
token ``v`` a coefficient vector ``w_v`` (``k`` numbers) and each position ``p`` one, ``u_p``; the truth has
``w_v = Σ_{p: v_p = v} u_p`` exactly (both carry ``c_p/σ_p``). A token at one position matches that position's
``u_p``; a repeated token, the sum of its positions'. ``order_tokens`` matches exact subsets, smallest first.
"""
from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Sequence

import torch

from .inputs import EmbeddingInputs
from .search import Pursuit, input_basis, subspace_residual

MATCH_TOL = 1e-3
"""A token's coefficients match a set of positions' when they differ by less than this share of their norm. The
coefficients of the truth agree to float32's rounding amplified by the least squares (about 1e-6 on MiniLM);
a wrong set misses by a share of order one."""
SUBSETS = 50_000
"""The most position subsets of one size ``order_tokens`` compares at a step: a budget in evaluations."""


def _without_positions(inputs: EmbeddingInputs, length: int) -> torch.Tensor:
    """Orthonormal columns (``d × (n + 1)``) spanning the positions' parts ``Γc̄_0 … Γc̄_{n−1}`` and ``β``."""
    return input_basis(torch.cat([inputs.positions[:length] * inputs.gamma, inputs.beta[None]]))


def fits(inputs: EmbeddingInputs, basis: torch.Tensor, length: int, sentences: int = 1) -> bool:
    """True when the width leaves room for the test: up to ``sentences·n`` tokens, ``n`` positions, ``β`` and
    the ``k`` span directions below ``d`` (beyond it any span lies in the tokens' and the positions' parts)."""
    return (sentences + 1) * length + 1 + basis.shape[0] < inputs.tokens.shape[1]


def tokens_in_span(basis: torch.Tensor, inputs: EmbeddingInputs, vocab: torch.Tensor, length: int,
                   known: Sequence[int], certified: float, sentences: int = 1) -> tuple[list[int], float]:
    """The distinct tokens of ``sentences`` sentences of up to ``length`` positions whose first-layer inputs
    contain the span ``basis``: ``known`` ones ([CLS] and [SEP]) first, then vocabulary tokens picked by the
    pursuit until what is left of the span is below ``certified`` (or there is one a position). Returns the
    tokens (``known`` first) and the squared norm of the span they leave unexplained."""
    fixed = _without_positions(inputs, length)

    def outside(rows: torch.Tensor) -> torch.Tensor:
        return rows - (rows @ fixed) @ fixed.mT

    pursuit = Pursuit(outside(basis), outside(inputs.tokens[vocab] * inputs.gamma))
    for token in known:
        pursuit.take(outside(inputs.tokens[token] * inputs.gamma))
    tokens = list(known)
    alive = torch.ones(len(vocab), dtype=torch.bool, device=vocab.device)
    alive[torch.isin(vocab, torch.as_tensor(list(known), device=vocab.device))] = False
    while len(tokens) < sentences * length and bool(alive.any()):
        score, explained = pursuit.scores(certified)
        if explained:
            break
        score[~alive] = -1.0
        j = int(torch.argmax(score))
        alive[j] = False
        tokens.append(int(vocab[j]))
        pursuit.take(pursuit.atoms[j])
    return tokens, pursuit.left()


def coefficients(basis: torch.Tensor, inputs: EmbeddingInputs, tokens: Sequence[int],
                 length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each span row written in the tokens' and positions' parts (least squares): ``w`` (``tokens × k``), one
    row per token, and ``u`` (``length × k``), one row per position (``β``'s coefficient is dropped).

    The parts can be linearly dependent: a freshly initialised LayerNorm (tiny-bert's) has ``β = 0``. The
    solution is the minimum-norm one, from the pseudo-inverse (an SVD, on any device), whose singular values
    below ``max(m, n)·eps`` of the largest count as zero (float64 rounding, the rank rule of ``lstsq`` itself):
    a zero ``β`` gets coefficient 0, and the tokens' and positions' coefficients are the unique ones. Not
    ``torch.linalg.lstsq``: its CPU default, LAPACK's gelsy, reads a pivot array that torch leaves uninitialised,
    so on a rank-deficient matrix its answer (often the zero solution) depended on stale memory, that is on the
    BLAS thread count and on the calls before (pytorch/pytorch#71222, #92537); its CUDA driver, gels, assumes
    full rank.
    """
    parts = torch.cat([inputs.tokens[torch.as_tensor(list(tokens), device=inputs.tokens.device)] * inputs.gamma,
                       inputs.positions[:length] * inputs.gamma, inputs.beta[None]])
    rtol = max(parts.shape) * torch.finfo(parts.dtype).eps
    solution = torch.linalg.pinv(parts.T, rtol=rtol) @ basis.T                   # (tokens + n + 1, k)
    return solution[:len(tokens)], solution[len(tokens):len(tokens) + length]


def order_tokens(w: torch.Tensor, u: torch.Tensor, tokens: Sequence[int], ends: dict[int, int]) -> list[int]:
    """Put ``tokens`` at the positions whose coefficients ``u`` sum to theirs (``w``): ``ends`` are known
    (position: token, [CLS] and [SEP]); then, repeatedly, the token and set of free positions (one position,
    then two, ...) that match best, taken when they match to ``MATCH_TOL``. Where nothing matches (rounding
    past the tolerance, a set that is not the sentence's) the closest single position is taken, so every
    position gets a token."""
    w, ids = w.clone(), [None] * len(u)
    index = {token: i for i, token in enumerate(tokens)}
    for p, token in ends.items():
        ids[p] = token
        w[index[token]] -= u[p]
    free = [p for p in range(len(u)) if ids[p] is None]
    scale = w.norm(dim=1).clamp(min=1e-30)
    while free:
        best = None
        for size in range(1, len(free) + 1):
            if comb(len(free), size) > SUBSETS:
                break
            subsets = torch.tensor(list(combinations(range(len(free)), size)), device=u.device)    # (S, size)
            sums = u[torch.as_tensor(free, device=u.device)][subsets].sum(1)                        # (S, k)
            error = torch.cdist(w, sums) / scale[:, None]                                           # (T, S)
            j = int(torch.argmin(error))
            if best is None or float(error.flatten()[j]) < best[0]:
                best = (float(error.flatten()[j]), j // len(subsets), subsets[j % len(subsets)].tolist())
            if best[0] < MATCH_TOL:
                break
        if best is None or best[0] >= MATCH_TOL:  # nothing matches: the closest single position
            error = torch.cdist(w, u[free]) / u[free].norm(dim=1).clamp(min=1e-30)
            j = int(torch.argmin(error))
            best = (float(error.flatten()[j]), j // len(free), [j % len(free)])
        _, t, chosen = best
        for p in [free[c] for c in chosen]:
            ids[p] = tokens[t]
            w[t] -= u[p]
        free = [p for i, p in enumerate(free) if i not in chosen]
    return ids


def sentence_from_span(basis: torch.Tensor, inputs: EmbeddingInputs, vocab: torch.Tensor, length: int,
                       special: tuple[int, int], certified: float) -> tuple[list[int], float] | None:
    """The sentence of ``length`` positions (with [CLS] and [SEP]) from its tokens and the coefficients,
    and its layer-0 residual; ``None`` when the width leaves no room (``fits``) or no set of at most
    ``length`` tokens explains the span (not this length, or a span too noisy to certify)."""
    if not fits(inputs, basis, length):
        return None
    tokens, left = tokens_in_span(basis, inputs, vocab, length, list(dict.fromkeys(special)), certified)
    if left >= certified:
        return None
    w, u = coefficients(basis, inputs, tokens, length)
    ids = order_tokens(w, u, tokens, {0: special[0], length - 1: special[1]})
    return ids, subspace_residual(basis, inputs.vectors(ids, list(range(length))))
