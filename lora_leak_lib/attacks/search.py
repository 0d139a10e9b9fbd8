"""The discrete search the text attacks share: a sentence's moves, the local-search step, the kicks, the projection
residual it descends on, and the cover assignment.

A *move* is ``(changed, places)``: the sentence (or batch) one step away and the places it touches, a place being a
position of a sentence or a ``(sentence, position)`` pair of a batch.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..arrays import to_numpy

Move = tuple[Any, set]
"""``(changed, places)``: a sentence or batch one step away, and the places where it differs."""


# --- moves -------------------------------------------------------------------------------------------------------

def swapped(sentence: Sequence[int], i: int, j: int) -> list[int]:
    """``sentence`` with the tokens at ``i`` and ``j`` exchanged (LAMP's discrete step)."""
    candidate = list(sentence)
    candidate[i], candidate[j] = candidate[j], candidate[i]
    return candidate


def swaps(sentence: Sequence[int]) -> list[list[int]]:
    """Every sentence one exchange of two different tokens away, pairs in order ``(0, 1), (0, 2), ...``."""
    n = len(sentence)
    return [swapped(sentence, i, j) for i in range(n) for j in range(i + 1, n) if sentence[i] != sentence[j]]


def substituted(sentence: Sequence[int], p: int, token: int) -> list[int]:
    """``sentence`` with ``token`` at position ``p`` (a substitution: the search's other step)."""
    candidate = list(sentence)
    candidate[p] = token
    return candidate


def substitution(sentence: Sequence[int], p: int, token: int) -> Move:
    """The move that puts ``token`` at position ``p``."""
    return substituted(sentence, p, token), {p}


def rearrangements_at(ids: Sequence[int], p: int, positions: Sequence[int],
                      window: int) -> Iterator[tuple[list[int], set[int]]]:
    """Orders one step away that take the token at ``p``: moved to each ``q`` of ``positions`` (the rest shift),
    and, for ``q > p``, exchanged with it; only ``q`` up to ``window`` away whose token differs.

    Each is ``(order, touched)``: ``order[k]`` is the index into ``ids`` of the token that lands at ``k``, and
    ``touched`` the positions that change.
    """
    for q in positions:
        if q == p or ids[p] == ids[q] or abs(p - q) > window:
            continue
        moved = list(range(len(ids)))
        moved.insert(q, moved.pop(p))
        yield moved, set(range(min(p, q), max(p, q) + 1))
        if p < q:
            yield swapped(range(len(ids)), p, q), {p, q}


# --- the local-search step ---------------------------------------------------------------------------------------

def combine(sentence: Sequence[int], moves: Sequence[Move]) -> list[int]:
    """Make several moves of ``sentence`` at once: each touched position takes the token its move put there
    (the moves should touch different positions; where two do, the later one wins)."""
    out = list(sentence)
    for changed, places in moves:
        for p in places:
            out[p] = changed[p]
    return out


def combine_batch(batch: Sequence[tuple[int, ...]], moves: Sequence[Move]) -> list[tuple[int, ...]]:
    """``combine`` for a batch of sentences, whose moves touch ``(sentence, position)`` places."""
    return [tuple(combine(sentence, [(changed[a], {p for b, p in places if b == a}) for changed, places in moves]))
            for a, sentence in enumerate(batch)]


def beside(places: set) -> set:
    """The places and their neighbours along the sentence: where a move would interfere with these."""
    return {(q[0], q[1] + k) if isinstance(q, tuple) else q + k for q in places for k in (-1, 0, 1)}


def disjoint_improvements(moves: Sequence[Move], values: torch.Tensor, order: Sequence[int],
                          threshold: float) -> list[Move]:
    """The moves scoring below ``threshold``, best first, each kept when it touches no place touched by, or next
    to, one kept before it: improvements far enough apart to be made together."""
    taken, blocked = [], set()
    for i in order:
        if float(values[i]) >= threshold:
            break
        if not moves[i][1] & blocked:
            taken.append(moves[i])
            blocked |= beside(moves[i][1])
    return taken


def descent_step(current: Any, moves: Sequence[Move], score: Callable[[list], torch.Tensor], threshold: float,
                 merge: Callable[[Any, Sequence[Move]], Any] = combine) -> tuple[Any, float] | None:
    """One step of the local search on ``score`` (lower is better; it scores a list of sentences or batches).

    Takes the best move, or the best move together with the other improving moves away from it (``merge``:
    ``combine``, or ``combine_batch`` for a batch; many repairs in one step on long sentences) when that scores
    lower. Returns the new sentence and its score, or ``None`` at a local minimum: no move scores below
    ``threshold``.
    """
    if not moves:
        return None
    values = score([changed for changed, _ in moves])
    order = torch.argsort(values).tolist()
    if float(values[order[0]]) >= threshold:
        return None
    taken = disjoint_improvements(moves, values, order, threshold)
    candidates = [moves[order[0]][0]] + ([merge(current, taken)] if len(taken) > 1 else [])
    trial = score(candidates)
    j = int(torch.argmin(trial))
    return candidates[j], float(trial[j])


def coordinate_sweeps(ids: Sequence[int], best: float, positions: Sequence[int],
                      at_position: Callable[[list[int], int], tuple[list[int], float]],
                      rearranged: Callable[[list[int]], tuple[list[int], float]],
                      sweeps: int) -> tuple[list[int], float]:
    """Local search by sweeps (lower is better; ``best`` is the score of ``ids``): each sweep visits ``positions``
    and keeps ``at_position(ids, p)``'s sentence when it scores lower, then keeps ``rearranged(ids)``'s (the
    best swap or move) while it scores lower. Stops after ``sweeps`` sweeps or a sweep that gained nothing."""
    ids = list(ids)
    for _ in range(sweeps):
        start = best
        for p in positions:
            candidate, value = at_position(ids, p)
            if value < best - 1e-12:
                ids, best = candidate, value
        while True:
            trial, value = rearranged(ids)
            if value >= best - 1e-12:
                break
            ids, best = trial, value
        if best >= start - 1e-12:
            break
    return ids, best


# --- kicks: iterated local search's jump away from a local minimum -----------------------------------------------
# Each search keeps the draws it always made (CPU generator, same calls, same order), so a seed gives the same
# sentence it gave before the kicks were shared.

def kicked(sentence: Sequence[int], moves: Sequence[Move]) -> list[int]:
    """``sentence`` after random ``moves`` made one after the other (a later one may undo part of an earlier one):
    where the descent starts again. The moves come from one of the ``random_*`` draws below."""
    out = list(sentence)
    for move in moves:
        out = combine(out, [move])
    return out


def random_moves(moves: Sequence[Move], size: int, generator: torch.Generator) -> list[Move]:
    """``size`` different moves of ``moves``, in the order of one random permutation (the later-layer search's kick)."""
    picks = torch.randperm(len(moves), generator=generator, device="cpu")[:size].tolist()
    return [moves[i] for i in picks]


def random_inner_substitutions(ids: Sequence[int], table: torch.Tensor, size: int,
                               generator: torch.Generator) -> list[Move]:
    """``size`` different inner positions (never the first or last: [CLS], [SEP]) each take a random token of their
    row of the candidate ``table``, drawn position after position (the span search's kick)."""
    positions = (torch.randperm(len(ids) - 2, generator=generator, device="cpu")[:size] + 1).tolist()
    return [substitution(ids, p, int(table[p, torch.randint(table.shape[1], (1,), generator=generator, device="cpu")]))
            for p in positions]


def random_substitutions(sentence: Sequence[int], table: torch.Tensor, size: int,
                         generator: torch.Generator) -> list[Move]:
    """``size`` random positions (one may come twice: the later draw wins) each take a random token of their row of
    ``table``; positions are drawn first, then tokens (DLG's kick)."""
    positions = torch.randint(len(sentence), (size,), generator=generator, device="cpu")
    picks = torch.randint(table.shape[1], (size,), generator=generator, device="cpu")
    return [substitution(sentence, p, int(table[p][k])) for p, k in zip(positions.tolist(), picks.tolist())]


# --- the projection residual the span searches descend on --------------------------------------------------------

def input_basis(inputs: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns ``U`` (``d × n``) spanning the inputs ``X`` (rows, ``n × d``; batched over leading
    dimensions), so that the projection onto their span is ``P_X = U Uᵀ``."""
    u, _ = torch.linalg.qr(inputs.mT)
    return u


def unexplained(basis: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``Q − Q·P_X``: each direction of the gradient span (a row of ``basis``) less its projection on the inputs'
    span (``u`` from ``input_basis``): what the inputs leave unexplained."""
    return basis - (basis @ u) @ u.mT


def subspace_residual(basis: torch.Tensor, inputs: torch.Tensor) -> float:
    """``‖Q − Q·P_X‖²_F``: how much of the gradient span lies outside the span of the chosen inputs ``X``
    (from the ``k × d`` matrix itself: exact to rounding near zero, where the certificate is read)."""
    return float(unexplained(basis, input_basis(inputs)).pow(2).sum())


def projection_residuals(basis: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``‖Q − Q·P_X‖²_F`` by Pythagoras, ``‖Q‖² − ‖Q·U‖²``, one value per candidate when ``u`` is batched
    (``N × d × n``): no ``k × d`` matrix per candidate, at the price of cancellation near zero."""
    return basis.pow(2).sum() - (basis @ u).pow(2).sum((-2, -1))


PIVOT = 1e-10
"""A Cholesky pivot of the inputs' Gram matrix below this share of its diagonal entry (squared: the input's
norm outside the span of the inputs before it, relative) marks inputs too close to dependent for the Gram
route, whose rounding error grows with that ratio's inverse times float64's 1e-16. Such a set (a sentence twice
in a batch, a shared prefix in a causal model) is scored by the SVD instead, its directions below ``√PIVOT`` of
the largest dropped: a QR would keep a direction made of rounding and let it explain part of the span."""


def gram_residuals(basis: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``‖Q − Q·P_X‖²_F`` of a batch of input sets ``X`` (``N × n × d``, float64), one value each, from their Gram
    matrices: ``‖Q‖² − ‖L⁻¹·X·Qᵀ‖²_F`` with ``L·Lᵀ = X·Xᵀ``.

    Batched matrix products and an ``n × n`` Cholesky factor per candidate, where ``input_basis`` runs a QR of a
    ``d × n`` matrix per candidate one after another (several times slower on a CPU, far more on a GPU). The same
    value as ``projection_residuals`` to float64 rounding for well-separated inputs; a set with nearly dependent
    inputs (``PIVOT``) is scored on the span of its numerically independent directions.
    """
    gram = inputs @ inputs.mT
    factor, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(factor, dim1=-2, dim2=-1).pow(2) / torch.diagonal(gram, dim1=-2, dim2=-1).clamp(min=1e-300)
    usable = (info == 0) & (pivots > PIVOT).all(-1)
    values = torch.empty(inputs.shape[:-2], dtype=inputs.dtype, device=inputs.device)
    if bool(usable.any()):
        solved = torch.linalg.solve_triangular(factor[usable], inputs[usable] @ basis.T, upper=False)
        values[usable] = basis.pow(2).sum() - solved.pow(2).sum((-2, -1))
    if not bool(usable.all()):
        u, sigma, _ = torch.linalg.svd(inputs[~usable].mT, full_matrices=False)      # (m, d, n), (m, n)
        independent = sigma > PIVOT ** 0.5 * sigma[..., :1]
        values[~usable] = projection_residuals(basis, u * independent[..., None, :])
    return values


# --- matching pursuit on a span ----------------------------------------------------------------------------------

SPANNED = 1e-9
"""An atom whose squared norm outside the picked atoms' span is below this share of its own is already in it
(the same input listed twice): a pursuit never picks it, whatever its 0/0 score."""


class Pursuit:
    """Rank-aware order-recursive matching pursuit: explain the span ``basis`` (``k × d`` orthonormal rows) by
    atoms (rows of ``atoms``) picked one at a time, each the one whose part outside the atoms picked so far
    explains most of what they leave of the span.

    ``take`` adds any vector to the picked span (an atom, or an input known in advance); ``scores`` rates every
    atom for the next pick. The caller decides which atoms it may still pick (positions full, atoms used).
    """

    def __init__(self, basis: torch.Tensor, atoms: torch.Tensor) -> None:
        self.atoms = atoms
        self.norm2 = atoms.pow(2).sum(1)
        self.outside = self.norm2.clone()        # squared norm of each atom outside the picked span
        self.picked: list[torch.Tensor] = []     # orthonormal directions of the picked span
        self.resid = basis.clone()               # the span's rows less their part in the picked span

    def take(self, vector: torch.Tensor) -> None:
        """Add ``vector`` to the picked span (Gram-Schmidt, twice for accuracy)."""
        for _ in range(2):
            for w in self.picked:
                vector = vector - (vector @ w) * w
        w = vector / vector.norm().clamp(min=1e-30)
        self.picked.append(w)
        self.outside = self.outside - (self.atoms @ w).pow(2)
        self.resid = self.resid - (self.resid @ w)[:, None] * w

    def scores(self, certified: float, tol: float = 1e-6) -> tuple[torch.Tensor, bool]:
        """Each atom's share of the unexplained span along its own outside part, and whether the picked span
        already explains the span (what is left below ``certified``: then every score is the atom's outside
        norm, for a caller that fills on). Atoms already in the picked span score ``-1``."""
        _, sigma, vh = torch.linalg.svd(self.resid, full_matrices=False)
        explained = float(sigma.pow(2).sum()) < certified
        directions = vh[sigma > tol * float(sigma[0])] if not explained else vh[:0]
        # resid ⟂ the picked span, so atom · direction equals its outside part · direction
        score = (self.atoms @ directions.T).pow(2).sum(1) / self.outside.clamp(min=1e-24) if len(directions) \
            else self.outside.clone()
        score[self.outside < SPANNED * self.norm2] = -1.0
        return score, explained

    def left(self) -> float:
        """``‖Q − Q·P‖²_F``: what the picked span leaves of the span."""
        return float(self.resid.pow(2).sum())


# --- the cover assignment ----------------------------------------------------------------------------------------

def cover_assignment(score: torch.Tensor | np.ndarray) -> list[tuple[int, int]]:
    """Rows to columns maximising the total ``score`` (rows × columns), every column used at least once while
    rows last and each row once (the Hungarian method; a column may serve several rows when rows outnumber it).

    Each column has one mandatory copy with a large bonus and ``rows − columns`` optional copies. Returns
    ``(row, column)`` pairs in row order.
    """
    rows, cols = score.shape
    spare = max(rows - cols, 0)
    bonus = 1e6  # added in the score's own dtype, as the attacks always have
    if torch.is_tensor(score):
        table = to_numpy((torch.cat([score + bonus] + [score] * spare, dim=1) if spare else score + bonus).double())
    else:
        table = np.concatenate([score + bonus] + [score] * spare, axis=1) if spare else score + bonus
    r, c = linear_sum_assignment(table, maximize=True)
    return [(int(i), int(j) % cols) for i, j in zip(r, c)]
