"""Token recovery from Adam deltas: each first-layer ``lora_A`` row is the sign pattern of a vector in the inputs' span.

A client that trains with Adam sends ``−lr·m̂/(√v̂ + ε)``; after one local step that is ``−lr·g/(|g| + ε)``, so
every element of ``dL/dA = s·Bᵀ G`` (``G = Σ_t δ_t x_tᵀ``) is replaced by its sign (``|g| ≫ ε = 1e-8`` for all
but about 1% of the elements, and those keep their sign too). Row ``i`` of the first layer is then
``S_i = sign(Σ_t c_it x_t)``: the span test of ``span.py`` no longer applies, since ``sign`` leaves the span
(Bussgang: ``sign(y) = α·y + e``, and ``e`` holds a third of the energy, spread over directions the sentence
does not have).

What survives is a 1-bit certificate. Read the ``d`` coordinates of the inputs as ``d`` points ``X[:, j]`` in
``R^n`` (``n`` inputs) with labels ``S_ij``: for the true inputs every row is *linearly separable* (the
coefficients ``c_i`` separate them), and ``d = 384`` random labels on ``n ≈ 18`` points are not (Cover: the
chance falls off once ``d > 2n``). So a candidate sentence is scored by the squared-hinge loss of the best
``c_i`` of each row (an L2-SVM without bias, fitted by Newton's method): about 0 for the true inputs, and
clearly larger when a token that the rows lean on is wrong. The search mirrors ``span.recover_sentence``:
matching pursuit on the SVM's *working residual* (the loss's gradient in the coordinates, which a true input
that is still missing correlates with: a score test), then token substitutions from a shortlist, each judged by
the exact certificate. Several watched rounds add rows, each with its own ``c_i``. After several local steps
a few signs flip (the loss is then small, not 0) and nothing beyond the sign is used.

Research, not a registered attack: ``benchmarks/adam_delta.py`` scores it against ``lora-best`` and writes
``benchmarks/results/adam_delta.json``; no product path uses it.
"""
from __future__ import annotations

import time

import torch

from lora_leak_lib.attacks.base import Callback, Knowledge, Progress, Reconstruction, SharedUpdate
from lora_leak_lib.attacks.lora_best import LoRABest
from lora_leak_lib.attacks.inputs import EmbeddingInputs, allowed_tokens, first_layer_rows, lora_a_is_zero, public_inputs
from lora_leak_lib.attacks.search import coordinate_sweeps, input_basis, rearrangements_at
from lora_leak_lib.attacks.case import Case
from lora_leak_lib.attacks.span import labels_for

RIDGE = 1e-9
"""L2 penalty of the per-row SVM, relative to the mean diagonal of ``XXᵀ``: keeps Newton's system solvable
without pulling a separable row's loss off 0 (its coefficients may need to be large: margins are small)."""


def sign_rows(shared: SharedUpdate, knowledge: Knowledge = Knowledge()) -> torch.Tensor:
    """The signs (±1, 0 where an element is exactly 0) of every watched round's first-layer ``lora_A`` rows,
    stacked (``m × d``): what an Adam delta keeps of the input span."""
    rows = [first_layer_rows(u.update) for u in knowledge.rounds_watched(shared) if not lora_a_is_zero(u.update)]
    if not rows:
        raise ValueError("every first-layer lora_A delta is zero (round 0: B = 0): the sign attack needs a later round.")
    return torch.sign(torch.cat(rows))


def _objective(c: torch.Tensor, x: torch.Tensor, signs: torch.Tensor, live: torch.Tensor, ridge: float) -> torch.Tensor:
    slack = (1 - signs * (c @ x)).clamp(min=0) * live
    return slack.pow(2).sum(-1) + ridge * c.pow(2).sum(-1)


def fit_rows(x: torch.Tensor, signs: torch.Tensor, steps: int = 30, ridge: float = RIDGE) -> torch.Tensor:
    """Each row's coefficients ``c_i = argmin Σ_j max(0, 1 − S_ij (c_iᵀX)_j)² + λ‖c_i‖²`` (``B × m × n``).

    ``x`` is a batch of candidate inputs (``B × n × d``). Newton's method on the primal L2-SVM: the normal
    equations of the coordinates still inside the margin, then the best step of ``2, 1, 1/2, ... 2^-14`` along it
    (without that line search the active set can cycle).
    """
    signs = signs.to(device=x.device, dtype=x.dtype)
    live = (signs != 0).to(x.dtype)
    n = x.shape[1]
    lam = ridge * float(x.pow(2).sum((1, 2)).mean()) / n
    eye = lam * torch.eye(n, dtype=x.dtype, device=x.device)
    c = torch.zeros(x.shape[0], signs.shape[0], n, dtype=x.dtype, device=x.device)
    sizes = 2.0 ** torch.arange(1, -15, -1, dtype=x.dtype, device=x.device)
    value = _objective(c, x, signs, live, lam)
    for _ in range(steps):
        active = (1 - signs * (c @ x) > 0).to(x.dtype) * live                  # (B, m, d)
        hessian = torch.einsum("bnd,bmd,bkd->bmnk", x, active, x) + eye
        newton = torch.linalg.solve(hessian, torch.einsum("bnd,bmd->bmn", x, active * signs)[..., None])[..., 0]
        trials = c[None] + sizes[:, None, None, None] * (newton - c)[None]     # (16, B, m, n)
        values = _objective(trials, x[None], signs, live, lam)
        best = values.argmin(0)
        better = values.gather(0, best[None])[0] < value
        c = torch.where(better[..., None], trials.gather(0, best[None, ..., None].expand(1, *c.shape))[0], c)
        value = torch.minimum(value, values.min(0).values)
    return c


def separability(x: torch.Tensor, signs: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """Per-row squared-hinge loss of the best separating coefficients, ``mean_j max(0, 1 − S_ij (c_iᵀX)_j)²``.

    ``x`` holds the candidate inputs (``n × d``, or a batch ``B × n × d``), ``signs`` the rows (``m × d``).
    Returns ``m`` losses (``B × m`` for a batch); 0 means the row is explained by these inputs.
    """
    if x.shape[-1] != signs.shape[-1]:
        raise ValueError(f"the inputs have {x.shape[-1]} coordinates but the sign rows {signs.shape[-1]}.")
    batch = x if x.dim() == 3 else x[None]
    signs = signs.to(device=batch.device, dtype=batch.dtype)
    live = (signs != 0).to(batch.dtype)
    c = fit_rows(batch, signs, steps)
    loss = ((1 - signs * (c @ batch)).clamp(min=0) * live).pow(2).sum(-1) / live.sum(-1).clamp(min=1)
    return loss if x.dim() == 3 else loss[0]


def certificate(x: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """The mean ``separability`` over the rows (``B`` values for a batch): what the search descends on."""
    return separability(x, signs).mean(-1)


def working_residual(x: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """``S_ij·max(0, 1 − S_ij ŷ_ij)`` at the rows' best fit ``ŷ_i = c_iᵀX`` (``m × d``): the part of each sign row
    the inputs ``x`` (``n × d``) do not explain, which a missing true input correlates with."""
    signs = signs.to(device=x.device, dtype=x.dtype)
    c = fit_rows(x[None], signs)[0]
    return signs * (1 - signs * (c @ x)).clamp(min=0) * (signs != 0)


def addition_scores(inputs: EmbeddingInputs, residual: torch.Tensor, chosen: torch.Tensor, positions: list[int],
                    vocab: torch.Tensor, directions: int = 32) -> torch.Tensor:
    """Score test of adding each (position, token) input: ``Σ_i (r_i·x)² / ‖x outside the chosen inputs‖²``
    (``len(positions) × V``), the residual rows ``r_i`` cut to their ``directions`` strongest singular directions."""
    _, sigma, vh = torch.linalg.svd(residual, full_matrices=False)
    weighted = (sigma[:directions, None] * vh[:directions]).T                # (d, k)
    basis = input_basis(chosen)                                               # (d, n)
    scores = []
    for p in positions:
        x = inputs.vectors(vocab, p)
        outside = x.pow(2).sum(1) - (x @ basis).pow(2).sum(1)
        scores.append((x @ weighted).pow(2).sum(1) / outside.clamp(min=1e-12 * float(x.pow(2).sum(1).max())))
    return torch.stack(scores)


def token_pool(inputs: EmbeddingInputs, signs: torch.Tensor, vocab: torch.Tensor, length: int,
               special: tuple[int, int], size: int = 4096) -> torch.Tensor:
    """The ``size`` tokens the score test ranks highest at any inner position with only [CLS] and [SEP] chosen:
    the candidates the search draws from (the full vocabulary at every step would cost a minute a sentence)."""
    x = inputs.vectors(list(special), [0, length - 1])
    scores = addition_scores(inputs, working_residual(x, signs), x, list(range(1, length - 1)), vocab)
    return vocab[torch.argsort(scores.max(0).values, descending=True)[:size]]


def greedy_sentence(inputs: EmbeddingInputs, signs: torch.Tensor, pool: torch.Tensor, length: int,
                    special: tuple[int, int]) -> list[int]:
    """One token per inner position, picked one input at a time by ``addition_scores`` (matching pursuit on the
    SVM's working residual), [CLS] and [SEP] fixed at the ends."""
    picked = {0: special[0], length - 1: special[1]}
    while len(picked) < length:
        places = sorted(picked)
        free = [p for p in range(length) if p not in picked]
        x = inputs.vectors([picked[p] for p in places], places)
        j = int(torch.argmax(addition_scores(inputs, working_residual(x, signs), x, free, pool)))
        picked[free[j // len(pool)]] = int(pool[j % len(pool)])
    return [picked[p] for p in range(length)]


def _certificates(inputs: EmbeddingInputs, signs: torch.Tensor, trials: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``certificate`` of each sentence of ``trials`` (``N × n`` ids), ``chunk`` at a time. ``vectors`` normalises
    over the last axis of a flat list only, so each chunk is built flat and then reshaped."""
    n = trials.shape[1]
    positions = torch.arange(n, device=trials.device).repeat(len(trials))
    flat = inputs.vectors(trials.reshape(-1), positions).reshape(len(trials), n, -1)
    return torch.cat([certificate(flat[i:i + chunk], signs) for i in range(0, len(trials), chunk)])


def best_rearrangement(inputs: EmbeddingInputs, signs: torch.Tensor, ids: list[int],
                       window: int = 4) -> tuple[list[int], float]:
    """The swap or move of inner tokens (up to ``window`` places) with the least certificate, and that value:
    the score test finds the right words before their places, since a position embedding is a small part of x."""
    inner = list(range(1, len(ids) - 1))
    orders = [order for p in inner for order, _ in rearrangements_at(ids, p, inner, window)]
    trials = torch.tensor([[ids[i] for i in order] for order in orders], device=inputs.tokens.device)
    values = _certificates(inputs, signs, trials)
    j = int(torch.argmin(values))
    return trials[j].tolist(), float(values[j])


def refine_signs(inputs: EmbeddingInputs, signs: torch.Tensor, vocab: torch.Tensor, ids: list[int],
                 shortlist: int = 16, sweeps: int = 4, window: int = 4) -> tuple[list[int], float]:
    """Local search on ``certificate``: at each inner position the ``shortlist`` tokens of ``vocab`` the score test
    ranks first (the others held) are tried exactly and the best kept; then swaps and moves while they help.
    Returns the ids and their certificate."""
    positions = list(range(len(ids)))

    def at_position(current: list[int], p: int) -> tuple[list[int], float]:
        others = [q for q in positions if q != p]
        x = inputs.vectors([current[q] for q in others], others)
        scores = addition_scores(inputs, working_residual(x, signs), x, [p], vocab)[0]
        tokens = vocab[torch.argsort(scores, descending=True)[:shortlist]]
        trials = torch.tensor(current, device=tokens.device).repeat(len(tokens), 1)
        trials[:, p] = tokens
        values = _certificates(inputs, signs, trials)
        j = int(torch.argmin(values))
        return trials[j].tolist(), float(values[j])

    return coordinate_sweeps(ids, float(certificate(inputs.vectors(list(ids), positions), signs)), positions[1:-1],
                             at_position, lambda current: best_rearrangement(inputs, signs, current, window), sweeps)


def sign_span_attack(shared: SharedUpdate, knowledge: Knowledge = Knowledge(), shortlist: int = 16,
                     sweeps: int = 4, pursuit: bool = False, callback: Callback | None = None) -> Reconstruction:
    """Recover one sentence from the signs of its first-layer ``lora_A`` deltas (an Adam client), told its length.

    ``lora-best`` on the sign rows (their span still leans towards the inputs', by Bussgang) gives the start, and
    ``refine_signs`` descends on the 1-bit certificate from it; with ``pursuit`` a second start, matching pursuit
    on the sign rows' working residual, is refined too and the lower certificate wins. One step a start; its loss
    is that start's certificate after the search (about 0: every row separable).
    """
    start = time.perf_counter()
    if knowledge.length is None:
        raise ValueError("the sign attack needs the sentence length: pass Knowledge(length=...).")
    if knowledge.sentences(shared) != 1:
        raise ValueError("the sign attack recovers one sentence: the update holds a batch of "
                         f"{knowledge.sentences(shared)}.")
    tokenizer = shared.setup.model.tokenizer
    inputs = public_inputs(shared.setup.model, shared.setup.model_seed)
    signs = sign_rows(shared, knowledge).to(inputs.tokens)
    if signs.shape[1] != inputs.tokens.shape[1]:
        raise ValueError(f"the update's first-layer rows have {signs.shape[1]} columns but {shared.setup.model.name}'s "
                         f"inputs have {inputs.tokens.shape[1]}: attack it with the model the client trained.")
    length = knowledge.length + 2
    if length > inputs.positions.shape[0]:
        raise ValueError(f"the known length counts the tokens without [CLS]/[SEP]: 1 to "
                         f"{inputs.positions.shape[0] - 2}, got {knowledge.length}.")
    vocab = allowed_tokens(tokenizer).to(inputs.tokens.device)
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id)
    starts = [[special[0], *LoRABest().reconstruct(shared, knowledge).token_ids[0], special[1]]]
    if pursuit:
        starts.append(greedy_sentence(inputs, signs, token_pool(inputs, signs, vocab, length, special), length, special))
    progress = Progress(callback)
    best: tuple[list[int], float] | None = None
    for ids in starts:
        ids, loss = refine_signs(inputs, signs, vocab, ids, shortlist, sweeps)
        progress.step(loss, [tokenizer.decode(ids[1:-1])])
        if best is None or loss < best[1]:
            best = (ids, loss)
    ids, loss = best
    body = ids[1:-1]
    return Reconstruction(token_ids=[body], texts=[tokenizer.decode(body)], labels=labels_for(Case(shared, knowledge)),
                          attack="sign", seconds=time.perf_counter() - start, loss=loss,
                          loss_history=progress.loss_history, snapshots=progress.snapshots)
