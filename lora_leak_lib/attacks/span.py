"""Exact token recovery from first-layer ``lora_A`` gradients: their rows lie in the span of the layer's inputs.

For a LoRA module ``y = W x + s·B A x`` the gradient is ``dL/dA = s·Bᵀ G`` with ``G = Σ_t δ_t x_tᵀ``, so
every row of ``dL/dA`` is a combination of the inputs ``x_t``. In the first layer those inputs are the
embedding-layer outputs ``x = LN(E[v] + P[p] + T[0])``, one per (token ``v``, position ``p``), which the
server can compute for the whole vocabulary. When the stacked first-layer rows (``r`` per module: query
and value share their inputs) span all the ``x_t``, a token is in the sentence exactly when its vector lies
in that span (DAGER's test, here on LoRA gradients). Beyond that rank, the span is a strict subspace of
the inputs' span: matching pursuit picks (token, position) inputs one by one and a local search (token
substitutions, LAMP-style swaps, moves) drives the part of the span outside the chosen inputs to zero,
which only the true sentence achieves (a certificate).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .base import Callback, Knowledge, Progress, Reconstruction, SharedUpdate
from .case import Case
from .inputs import SPAN_TOL, EmbeddingInputs
from .labels import infer_labels
from .order import assemble_batch, default_prior
from .registry import register
from .span_tokens import fits, sentence_from_span, tokens_in_span
from .search import (Pursuit, coordinate_sweeps, input_basis, kicked, random_inner_substitutions, rearrangements_at,
                     subspace_residual, substituted, unexplained)

CERTIFIED = 1e-4
"""A residual this small (sum of squares over an orthonormal basis) means the inputs explain the whole span."""

FAR_PAST_RANK = 2
"""Inputs (with [CLS] and [SEP]) past this many times the span's rows: the span attack reads the sentence's tokens from
the span first (``span_tokens``). Nearer the rank the per-position pursuit and its repairs usually certify
faster, and the span's tokens only follow a repair that did not certify."""

def length_candidates(sep_distances: torch.Tensor, count: int = 3) -> list[int]:
    """Likely sentence lengths (with [CLS] and [SEP]): where [SEP] lies closest to the span, best first."""
    order = torch.argsort(sep_distances[2:]) + 3
    return order[:count].tolist()


def _residual(basis: torch.Tensor, inputs: EmbeddingInputs, ids: list[int]) -> float:
    return subspace_residual(basis, inputs.vectors(ids, list(range(len(ids)))))


def substitute(basis: torch.Tensor, inputs: EmbeddingInputs, ids: list[int], p: int,
               candidates: torch.Tensor) -> tuple[int, float]:
    """The candidate token for position ``p`` that leaves the least residual, the others held, and that residual."""
    n = len(ids)
    others = [q for q in range(n) if q != p]
    x_other = inputs.vectors([ids[q] for q in others], others)
    u = input_basis(x_other)                                            # (d, n-1)
    resid = unexplained(basis, u)                                       # (k, d)
    cand = inputs.vectors(candidates, p)  # (K, d)
    outside = cand.pow(2).sum(1) - (cand @ u).pow(2).sum(1)
    gain = (cand @ resid.T).pow(2).sum(1) / torch.clamp(outside, min=1e-12)
    j = int(torch.argmax(gain))
    return int(candidates[j]), float(resid.pow(2).sum() - gain[j])


def permutation_residuals(basis: torch.Tensor, inputs: EmbeddingInputs, ids: list[int],
                          orders: torch.Tensor) -> torch.Tensor:
    """Residuals of many re-orderings of ``ids`` (``orders[i, p]`` = which token of ``ids`` sits at ``p``).

    Every re-ordering uses the same tokens, so the inner products of the (token, position) inputs the trials
    use are computed once (only those: a move within a window uses a band of the ``n²`` pairs); each trial then
    costs one small ``n × n`` Cholesky solve: ``k − tr(QX (XᵀX)⁻¹ XᵀQᵀ)``.
    """
    n = len(ids)
    pairs = orders * n + torch.arange(n, device=orders.device)         # (m, n): token i at position p is i·n + p
    used, index = torch.unique(pairs, return_inverse=True)             # the pairs any trial uses, and where
    x = inputs.vectors(torch.as_tensor(ids, device=used.device)[used // n], used % n)
    gram, proj = x @ x.T, x @ basis.T                                   # (u, u), (u, k)
    g = gram[index[:, :, None], index[:, None, :]]                      # (m, n, n)
    qx = proj[index]                                                    # (m, n, k)
    chol = torch.linalg.cholesky(g + 1e-12 * torch.eye(n, dtype=g.dtype, device=g.device))
    solved = torch.cholesky_solve(qx, chol)
    return (basis.shape[0] - (qx * solved).sum((1, 2))).clamp(min=0.0)


def best_move(basis: torch.Tensor, inputs: EmbeddingInputs, ids: list[int],
              fixed: tuple[int, ...], window: int = 8) -> tuple[list[int], float]:
    """The exchange of two tokens, or the move of one token to another place, that lowers the residual most.

    Swaps are LAMP's discrete move; moves (take a token out, shift the rest, put it back elsewhere) repair a
    sentence whose words are right but off by a few places. Only places up to ``window`` apart are tried.
    """
    free = [p for p in range(len(ids)) if p not in fixed]
    trials = [list(range(len(ids)))]
    for p in free:
        trials += [order for order, _ in rearrangements_at(ids, p, free, window)]
    values = permutation_residuals(basis, inputs, ids, torch.tensor(trials, device=basis.device))
    j = int(torch.argmin(values))
    return [ids[i] for i in trials[j]], float(values[j])


def greedy_atoms(basis: torch.Tensor, inputs: EmbeddingInputs, table: torch.Tensor, known: list[tuple[int, int]],
                 capacity: int = 1, fill: bool = True, tol: float = 1e-6) -> list[tuple[int, int]]:
    """Pick (position, token) inputs one at a time, each time the one that explains most of the gradient
    span still outside the chosen inputs (rank-aware order-recursive matching pursuit).

    ``table`` holds ``K`` candidate ids per position (row ``p`` for position ``p``); ``known`` are inputs
    fixed in advance ([CLS], [SEP]); a position takes at most ``capacity`` inputs (the batch size). With
    ``fill`` every free position is filled; otherwise picking stops once the span is explained.
    """
    k = table.shape[1]
    count = torch.zeros(table.shape[0], dtype=torch.long, device=table.device)
    for p, _ in known:
        count[p] = capacity
    free = [p for p in range(table.shape[0]) if count[p] < capacity]
    pursuit = Pursuit(basis, inputs.vectors(table[free].reshape(-1), [p for p in free for _ in range(k)]))  # F·K
    chosen = list(known)
    for p, token in known:
        pursuit.take(inputs.vectors([token], [p])[0])
    alive = torch.ones(len(pursuit.atoms), dtype=torch.bool, device=table.device)
    while bool(alive.any()):
        score, explained = pursuit.scores(CERTIFIED, tol)
        if explained and not fill:
            break
        score[~alive] = -1.0
        j = int(torch.argmax(score))
        row = j // k
        position = free[row]
        chosen.append((position, int(table[position, j % k])))
        alive[j] = False
        count[position] += 1
        if count[position] >= capacity:
            alive[row * k:(row + 1) * k] = False
        pursuit.take(pursuit.atoms[j])
    return chosen


def greedy_sequence(basis: torch.Tensor, inputs: EmbeddingInputs, length: int, table: torch.Tensor,
                    known: dict[int, int]) -> list[int]:
    """One token per position by ``greedy_atoms``: the matching-pursuit start of ``refine``."""
    atoms = dict(greedy_atoms(basis, inputs, table[:length], list(known.items())))
    return [atoms[p] for p in range(length)]


def refine(basis: torch.Tensor, inputs: EmbeddingInputs, ids: list[int], shortlist: torch.Tensor,
           sweeps: int = 4, fixed: tuple[int, ...] = ()) -> tuple[list[int], float]:
    """Local search on ``subspace_residual``: substitute shortlisted tokens and swap positions.

    ``shortlist`` is ``length × K`` token ids per position. Beyond the stacked rank only the true sequence
    leaves no residual (one wrong token moves the span of ``X`` off the gradient span), so the search
    repairs what the per-position test got wrong. Returns the ids and the final residual.
    """
    def at_position(current: list[int], p: int) -> tuple[list[int], float]:
        token, value = substitute(basis, inputs, current, p, shortlist[p])
        return substituted(current, p, token), value

    return coordinate_sweeps(ids, _residual(basis, inputs, list(ids)), [p for p in range(len(ids)) if p not in fixed],
                             at_position, lambda current: best_move(basis, inputs, current, fixed), sweeps)


def candidate_table(dist: torch.Tensor, vocab: torch.Tensor, special: tuple[int, int],
                    shortlist: int) -> torch.Tensor:
    """``length × K`` candidate ids: each position's closest tokens, plus the tokens closest anywhere.

    Beyond the stacked rank a token's own position is not always its best one, so the pool of tokens near
    the span at any position joins every position's list. [CLS] and [SEP] fill the first and last rows.
    """
    inner = dist[1:-1]
    own = torch.argsort(inner, dim=1)[:, :shortlist]
    pool = torch.argsort(inner.min(0).values)[: 4 * dist.shape[0]]
    table = vocab[torch.cat([own, pool.expand(len(inner), -1)], dim=1)]
    first, last = torch.full_like(table[:1], special[0]), torch.full_like(table[:1], special[1])
    return torch.cat([first, table, last])


@dataclass
class SpanResult:
    """One sentence found by the span check: ids with [CLS]/[SEP], the residual left, and the span's rank."""

    ids: list[int]
    residual: float
    rank: int

    @property
    def certified(self) -> bool:
        """True when the chosen inputs explain the gradient span (the sentence is then, generically, exact)."""
        return self.residual < CERTIFIED


def recover_sentence(basis: torch.Tensor, inputs: EmbeddingInputs, vocab: torch.Tensor, length: int,
                     special: tuple[int, int], shortlist: int = 64, sweeps: int = 6,
                     restarts: int = 4, span_tokens: bool = True) -> SpanResult:
    """The sentence of ``length`` positions whose first-layer inputs best contain the span ``basis``.

    Within the stacked rank each position's closest token is exact. Beyond it, matching pursuit picks
    (token, position) pairs one by one and ``refine`` repairs the rest, restarted from random kicks; with
    ``span_tokens`` the sentence's tokens and then their order come from the span directly (``sentence_from_span``,
    taken when certified): first when the inputs outnumber twice the span's rows (``FAR_PAST_RANK``, where the
    repairs rarely certify), otherwise after the first repair, before the restarts.
    """
    dist = inputs.span_distances(basis, length, vocab)
    ids = [special[0]] + vocab[torch.argmin(dist[1:-1], dim=1)].tolist() + [special[1]]
    residual = _residual(basis, inputs, ids)
    far = length > FAR_PAST_RANK * basis.shape[0]

    def from_span_tokens() -> SpanResult | None:
        found = sentence_from_span(basis, inputs, vocab, length, special, CERTIFIED) if span_tokens else None
        return SpanResult(found[0], found[1], basis.shape[0]) if found is not None and found[1] < CERTIFIED else None

    if residual >= CERTIFIED and far and (found := from_span_tokens()) is not None:
        return found
    if residual >= CERTIFIED and sweeps > 0:
        table = candidate_table(dist, vocab, special, shortlist)
        ids = greedy_sequence(basis, inputs, length, table, {0: special[0], length - 1: special[1]})
        ids, residual = refine(basis, inputs, ids, table, sweeps, fixed=(0, length - 1))
        if residual >= CERTIFIED and not far and (found := from_span_tokens()) is not None:
            return found
        generator = torch.Generator().manual_seed(0)
        for _ in range(restarts):
            if residual < CERTIFIED:
                break
            start = kicked(ids, random_inner_substitutions(ids, table, 3, generator))
            trial, value = refine(basis, inputs, start, table, sweeps, fixed=(0, length - 1))
            if value < residual:
                ids, residual = trial, value
    return SpanResult(ids, residual, basis.shape[0])


def stacked_span(shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                 tol: float = SPAN_TOL) -> tuple[EmbeddingInputs, torch.Tensor]:
    """The public first-layer inputs and the orthonormal basis of every watched round's stacked first-layer
    ``lora_A`` rows: what the span test scores the vocabulary against."""
    case = Case(shared, knowledge, tol)
    return case.inputs, case.basis


def _lengths(knowledge: Knowledge, inputs: EmbeddingInputs, basis: torch.Tensor, sep_id: int) -> list[int]:
    """Sequence lengths to try, [CLS] and [SEP] included: the known one, or where [SEP] fits best."""
    limit = inputs.positions.shape[0]
    if knowledge.length is not None:
        if not knowledge.length <= limit - 2:
            raise ValueError(f"the known length counts the tokens without [CLS]/[SEP]: 1 to {limit - 2}, "
                             f"got {knowledge.length}.")
        return [knowledge.length + 2]
    return length_candidates(inputs.span_distances(basis, limit, torch.tensor([sep_id]))[:, 0])


def span_attack(shared: SharedUpdate, knowledge: Knowledge = Knowledge(), shortlist: int = 64, sweeps: int = 6,
                restarts: int = 4, tol: float = SPAN_TOL, callback: Callback | None = None,
                span_tokens: bool = True) -> Reconstruction:
    """Recover the tokens of an update from its first-layer ``lora_A`` gradients: one sentence
    (``one_sentence``) or, for a batch, each position's tokens (``batch_tokens``)."""
    case = Case(shared, knowledge, tol)
    if case.sentences != 1:
        return batch_tokens(case, shortlist, callback, span_tokens)
    return one_sentence(case, shortlist, sweeps, restarts, callback, span_tokens)


def one_sentence(case: Case, shortlist: int = 64, sweeps: int = 6, restarts: int = 4,
                 callback: Callback | None = None, span_tokens: bool = True) -> Reconstruction:
    """The sentence of a batch-1 update whose first-layer inputs best contain the span (``recover_sentence``).

    With the length unknown, the three positions where [SEP] fits the span best are tried and the
    sentence that leaves the least residual wins (a certified sentence stops the search). Each length
    tried is one step; its loss is the residual left by the sentence found for it.
    """
    start = time.perf_counter()
    inputs, basis = case.inputs, case.basis
    best: SpanResult | None = None
    progress = Progress(callback)
    for n in _lengths(case.knowledge, inputs, basis, case.special[1]):
        result = recover_sentence(basis, inputs, case.vocab, n, case.special, shortlist, sweeps, restarts, span_tokens)
        progress.step(result.residual, [case.tokenizer.decode(result.ids[1:-1])])
        if best is None or result.residual < best.residual:
            best = result
        if best.certified:
            break
    body = best.ids[1:-1]
    return Reconstruction(token_ids=[body], texts=[case.tokenizer.decode(body)], labels=labels_for(case),
                          attack="span", seconds=time.perf_counter() - start, loss=best.residual,
                          loss_history=progress.loss_history, snapshots=progress.snapshots)


def batch_span_attack(shared: SharedUpdate, knowledge: Knowledge = Knowledge(), shortlist: int = 64,
                      tol: float = SPAN_TOL, callback: Callback | None = None,
                      span_tokens: bool = True) -> Reconstruction:
    """Several sentences from one update (``batch_tokens``)."""
    return batch_tokens(Case(shared, knowledge, tol), shortlist, callback, span_tokens)


def batch_tokens(case: Case, shortlist: int = 64, callback: Callback | None = None,
                 span_tokens: bool = True) -> Reconstruction:
    """Several sentences from one update: the union of their first-layer inputs contains the span.

    Matching pursuit picks up to ``batch_size`` tokens per position ([SEP] allowed anywhere, since the
    sentences end at different places) until the span is explained; the word-order prior then threads
    the tokens of each position into sentences (``order.assemble_batch``). With ``span_tokens``, when the
    union of the sentences' tokens explains the span (``span_tokens.tokens_in_span``) every position's
    candidates are that union. One step, its loss the residual.
    """
    start = time.perf_counter()
    size, special, vocab = case.sentences, case.special, case.vocab
    inputs, basis = case.inputs, case.basis
    n = max(_lengths(case.knowledge, inputs, basis, special[1]))
    dist = inputs.span_distances(basis, n, vocab)
    table = candidate_table(dist, vocab, special, shortlist)
    if span_tokens and fits(inputs, basis, n, size):
        known = list(dict.fromkeys(special))
        union, left = tokens_in_span(basis, inputs, vocab, n, known, CERTIFIED, size)
        if left < CERTIFIED:
            table = torch.tensor(union[len(known):], device=table.device).expand(n, -1)
    table = torch.cat([table, torch.full((n, 1), special[1], device=table.device)], dim=1)
    atoms = greedy_atoms(basis, inputs, table, [(0, special[0])], capacity=size, fill=False)
    columns: list[list[int]] = [[] for _ in range(n)]
    for p, token in sorted(atoms):
        columns[p].append(token)
    sentences = assemble_batch(columns[1:], size, default_prior(case.model), special[1])
    residual = subspace_residual(basis, inputs.vectors([t for _, t in atoms], [p for p, _ in atoms]))
    texts = [case.tokenizer.decode(s) for s in sentences]
    progress = Progress(callback)
    progress.step(residual, texts)
    return Reconstruction(token_ids=sentences, texts=texts, labels=labels_for(case), attack="span",
                          seconds=time.perf_counter() - start, loss=residual, loss_history=progress.loss_history,
                          snapshots=progress.snapshots)


def labels_for(case: Case) -> list[int]:
    """The labels an attack reports: the known ones, else read from the head bias when the head is shared
    (iDLG), else none (the tokens do not need them)."""
    shared, knowledge = case.shared, case.knowledge
    if knowledge.labels is not None:
        return list(knowledge.labels)
    if not shared.setup.train_head or shared.setup.model.family.head is None:
        return []
    return infer_labels(shared.update, case.sentences, shared.kind)


@register("span", "exact token recovery from the first layer's lora_A gradients (needs B ≠ 0: rounds > 0)",
          "residual of the gradient span left by the sentence (0: certified)")
class SpanAttack:
    """The span check as an ``Attack``: one sentence exactly, or a batch threaded by the word-order prior."""

    name = "span"

    def __init__(self, shortlist: int = 64, sweeps: int = 6, restarts: int = 4, span_tokens: bool = True) -> None:
        self.shortlist, self.sweeps, self.restarts, self.span_tokens = shortlist, sweeps, restarts, span_tokens

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        return span_attack(shared, knowledge, self.shortlist, self.sweeps, self.restarts, callback=callback,
                           span_tokens=self.span_tokens)
