"""The first round's span: what ``dL/dB`` shows when ``B = 0``, and at every round of FFA-LoRA.

For a LoRA module ``y = W x + s·B A x`` the gradient of ``B`` is ``dL/dB = s·Σ_t δ_t (A x_t)ᵀ``: its rows lie in
``S = span{A x_t}`` ⊂ R^r, whatever ``B`` is, and ``A`` is public (the server sent it, or FFA-LoRA froze it at
its public initialisation). When a message has fewer inputs than ``r``, ``S`` is a proper subspace of R^r, and
an input ``x`` can belong to the message only if ``A x ∈ S``: ``Wᵀ A x = 0`` for ``W`` the complement of ``S``.
Stacked over the first layer's modules these constraints cut the first layer's inputs down to a subspace that
holds every input of the message; the span test (``EmbeddingInputs.span_distances``) scores the whole vocabulary
against it, position by position, and the true token sits at rounding distance while every other is far.
A sentence is certified when, in every module, the chosen inputs' ``A x`` explain ``S`` and each lies in it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .base import Callback, Knowledge, Progress, Reconstruction, SharedUpdate
from .case import Case
from .order import assemble_batch, default_prior
from .registry import register
from .search import gram_residuals, subspace_residual
from .span import CERTIFIED, labels_for, length_candidates

B_TOL = 1e-7
"""Relative singular value of ``dL/dB`` below which a direction counts as rounding: float32 gradients leave a floor
of a few ``1e-8``; a real direction cut by mistake leaves the true inputs outside the row space, a floor direction
kept only removes one constraint."""
MEMBER = 1e-3
"""Relative distance to the constrained inputs below which a candidate counts as one of the message's inputs
(a batch's tokens at a position): the true tokens sit at rounding distance, the others orders of magnitude above."""


@dataclass(frozen=True)
class RowSpace:
    """One first-layer module's public ``A`` (``r × d``) and the orthonormal basis ``U`` (``k × r``) of its
    ``dL/dB`` row space ``S``; ``k < r`` when the message has fewer inputs than the rank."""

    a: torch.Tensor
    basis: torch.Tensor

    @property
    def constraints(self) -> torch.Tensor:
        """``Wᵀ A`` (``(r − k) × d``): every input ``x`` of the message has ``Wᵀ A x = 0``."""
        _, _, vh = torch.linalg.svd(self.basis, full_matrices=True)
        return vh[self.basis.shape[0]:] @ self.a


def row_spaces(shared: SharedUpdate, layer: int = 0, tol: float = B_TOL,
               noise: Callable[[Sequence[str]], float] | None = None) -> list[RowSpace]:
    """Each of ``layer``'s attention modules' public ``A`` (from the model the server shares this round) and the
    row space of its ``dL/dB`` in the message: the directions above float32 rounding (``tol``), or above a known
    defence's noise (``noise(names)``: its std per entry in those tensors); one clear error when that layer has no
    LoRA."""
    pattern = shared.setup.model.family.layer_rows_pattern(layer)
    a_of = {name: p.detach().double() for name, p in shared.public_model().named_parameters() if pattern.search(name)}
    spaces = []
    for name, a in a_of.items():
        b_name = name.replace("lora_A", "lora_B")
        grad_b = shared.update.get(b_name)
        if grad_b is None:
            continue
        std = noise([b_name]) if noise is not None else 0.0
        _, sigma, vh = torch.linalg.svd(grad_b.detach().double().to(a.device), full_matrices=False)
        floor = std * (grad_b.shape[0] ** 0.5 + grad_b.shape[1] ** 0.5) if std else tol * float(sigma[0])
        k = int((sigma > floor).sum()) if float(sigma[0]) > 0 else 0
        spaces.append(RowSpace(a, vh[:k]))
    if not spaces:
        raise ValueError(f"the update holds no lora_B of layer {layer}'s attention projections: the first-round "
                         f"attack needs LoRA on an attention projection of layer {layer}.")
    return spaces


def readable(spaces: list[RowSpace]) -> bool:
    """True when some module's row space is a proper subspace of R^r (the message has fewer inputs than ``r``)."""
    return any(0 < s.basis.shape[0] < s.a.shape[0] for s in spaces)


def member_basis(spaces: list[RowSpace]) -> torch.Tensor:
    """Orthonormal basis (``m × d``) of the inputs every module's constraints allow: the subspace that holds each
    input of the message."""
    rows = torch.cat([s.constraints for s in spaces if s.basis.shape[0] < s.a.shape[0]])
    _, sigma, vh = torch.linalg.svd(rows, full_matrices=True)
    rank = int((sigma > 1e-9 * sigma[0]).sum())
    return vh[rank:]


def certificate(spaces: list[RowSpace], x: torch.Tensor) -> float:
    """How far the chosen inputs ``x`` (``n × d``) are from explaining every module's ``S`` (0: certified)."""
    return sum(subspace_residual(s.basis, x @ s.a.T) for s in spaces if s.basis.shape[0] > 0)


def certificates(spaces: list[RowSpace], x: torch.Tensor) -> torch.Tensor:
    """``certificate`` of a batch of input sets (``N × n × d``), one value each (``search.gram_residuals``): how
    much of every module's ``S`` the projected inputs ``x·Aᵀ`` leave unexplained."""
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for s in spaces:
        if 0 < s.basis.shape[0] < s.a.shape[0]:
            total += gram_residuals(s.basis, x @ s.a.T)
    return total


def first_round_span(case: Case, callback: Callback | None = None) -> Reconstruction | None:
    """The message's sentences from the row spaces of its first-layer ``dL/dB``, or ``None`` when every module's
    row space fills R^r (as many inputs as the rank, or more: nothing to test against).

    One sentence: per candidate length (the known one, or where [SEP] fits best), each position's closest token;
    the least loss wins and a certified one stops the search. A batch: each position's tokens within ``MEMBER`` of
    the allowed inputs, threaded into sentences by the word-order prior. The loss is the certificate plus the
    chosen inputs' squared distances.
    """
    start = time.perf_counter()
    spaces = row_spaces(case.shared, noise=case.noise)
    if not readable(spaces):
        return None
    basis, inputs, vocab, special = member_basis(spaces), case.inputs, case.vocab, case.special
    limit = inputs.positions.shape[0]
    progress, best = Progress(callback), None
    sep_dist = inputs.span_distances(basis, limit, torch.tensor([special[1]], device=vocab.device))[:, 0]
    if case.knowledge.length is not None:
        lengths = [min(case.knowledge.length + 2, limit)]
    else:
        lengths = length_candidates(sep_dist)
    for n in lengths:
        dist = inputs.span_distances(basis, n, vocab)
        if case.sentences == 1:
            sentences = [vocab[dist[1:n - 1].argmin(1)].tolist()]
            pairs = [(p + 1, t) for p, t in enumerate(sentences[0])]
        else:
            sentences, pairs = _batch(case, dist, sep_dist, vocab, n)
        ids = [special[0], special[1]] + [t for _, t in pairs]
        positions = [0, n - 1] + [p for p, _ in pairs]
        x = inputs.vectors(ids, positions)
        far = inputs.span_distances(basis, n, torch.tensor(sorted(set(ids)), device=vocab.device))
        order = {t: i for i, t in enumerate(sorted(set(ids)))}
        loss = certificate(spaces, x) + sum(float(far[p, order[t]]) ** 2 for t, p in zip(ids, positions))
        texts = [case.tokenizer.decode(s) for s in sentences]
        progress.step(loss, texts)
        if best is None or loss < best[0]:
            best = (loss, sentences, texts)
        if loss < CERTIFIED:
            break
    loss, sentences, texts = best
    return Reconstruction(token_ids=sentences, texts=texts, labels=labels_for(case), attack="first-round",
                          seconds=time.perf_counter() - start, loss=loss, loss_history=progress.loss_history,
                          snapshots=progress.snapshots)


def _batch(case: Case, dist: torch.Tensor, sep_dist: torch.Tensor, vocab: torch.Tensor,
           n: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """A batch's sentences: at each position the tokens within ``MEMBER`` (at most one a sentence, the closest
    always) and [SEP] where it is within ``MEMBER``, threaded left to right by the word-order prior. Returns the
    sentences and every (position, token) they put in the message, [SEP]s of the shorter ones included."""
    size, sep = case.sentences, case.special[1]
    columns: list[list[int]] = []
    for p in range(1, n):
        order = torch.argsort(dist[p])[:size]
        column = [int(vocab[order[0]])] + [int(vocab[j]) for j in order[1:] if float(dist[p, j]) < MEMBER]
        columns.append(column + ([sep] if float(sep_dist[p]) < MEMBER else []))
    sentences = assemble_batch(columns, size, default_prior(case.model), sep)
    pairs = [(p + 1, t) for s in sentences for p, t in enumerate(s)]
    pairs += [(len(s) + 1, sep) for s in sentences if len(s) + 1 < n - 1]
    return sentences, list(dict.fromkeys(pairs))


@register("first-round", "the first round's span: the message's tokens from the row spaces of the first layer's "
          "dL/dB (fewer inputs than r; every round of FFA-LoRA)", "certificate of the dL/dB row spaces (0: certified)")
class FirstRoundSpan:
    """``first_round_span`` as an ``Attack``: exact where each module's ``dL/dB`` has fewer inputs than its rank,
    one clear error where it has as many or more (``lora-best`` then runs DLG)."""

    name = "first-round"

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        case = Case(shared, knowledge)
        found = first_round_span(case, callback)
        if found is None:
            if not any(s.basis.shape[0] for s in row_spaces(shared, noise=case.noise)):
                raise ValueError("no direction of the first layer's dL/dB stands above the known defence's noise: "
                                 "nothing to test; use 'lora-best' (DLG there).")
            raise ValueError("every first-layer dL/dB fills its rank: the message has at least r inputs, so the "
                             "first round's span holds nothing to test; use 'lora-best' (DLG there) or a higher rank.")
        return found
