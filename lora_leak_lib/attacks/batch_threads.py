"""Thread a batch's tokens into sentences with layer 1: the first layer gives the tokens at each position, not
which sentence each belongs to; the second layer's inputs are hidden states of whole sentences, and only the
right threading explains that layer's ``lora_A`` span.

Layer 0's span cannot tell threadings apart: every threading uses the same (token, position) inputs. Layer 1's
inputs depend on every token of a sentence, so a candidate batch's hidden states explain the layer-1 span of
each watched round (computed under that round's adapter) only when every sentence is right. ``thread_batch``
is a local search on that residual: exchange two sentences' tokens at one position, or give a sentence another
token of the same position's column.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import SharedUpdate
from .case import Case
from .layer_residual import LayerResidual
from .search import combine_batch, descent_step
from .span import CERTIFIED

THREAD_SWEEPS = 30
"""Rounds of the threading search (each scores every one-token change of the batch): a budget in steps."""
THREAD_ROUNDS = 1
"""Watched rounds whose layer-1 spans the threading residual sums (each costs one layer-0 pass per sentence)."""


class BatchResidual:
    """``Σ_rounds ‖Q₁ − Q₁·P_H‖²`` of candidate batches, ``H`` the layer-1 inputs of all their sentences under
    that round's adapter; each sentence's hidden states are computed once and kept."""

    def __init__(self, messages: Sequence[SharedUpdate]) -> None:
        self.layers = [LayerResidual(m, (1,)) for m in messages]
        self.cache: list[dict[tuple[int, ...], torch.Tensor]] = [{} for _ in self.layers]

    @torch.no_grad()
    def hidden(self, index: int, sentences: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
        layer, cache = self.layers[index], self.cache[index]
        todo = [s for s in dict.fromkeys(sentences) if s not in cache]
        for length in sorted({len(s) for s in todo}):
            same = [s for s in todo if len(s) == length]
            for part in range(0, len(same), 256):
                states = layer.layer_inputs(torch.tensor(same[part:part + 256], device=layer.device), (1,))[1]
                for s, h in zip(same[part:part + 256], states.double()):
                    cache[s] = h
        return [cache[s] for s in sentences]

    def __call__(self, batches: Sequence[Sequence[tuple[int, ...]]]) -> torch.Tensor:
        """The residual of every candidate batch: the new sentences of all of them go through the model in one
        pass, then the batches with as many inputs are scored together (``search.gram_residuals``)."""
        total = torch.zeros(len(batches), dtype=torch.float64, device=self.layers[0].device)
        for index, layer in enumerate(self.layers):
            self.hidden(index, [s for batch in batches for s in batch])
            stacked = [torch.cat(self.hidden(index, list(batch))) for batch in batches]
            for size in sorted({len(h) for h in stacked}):
                same = [b for b, h in enumerate(stacked) if len(h) == size]
                total[same] += layer.residuals(1, torch.stack([stacked[b] for b in same]))
        return total.clamp(min=0.0)


def moves(batch: list[tuple[int, ...]], columns: dict[int, list[int]]) -> list[tuple[list[tuple[int, ...]], set]]:
    """Every batch one change away, with the (sentence, position) pairs it touches: two sentences exchange their
    tokens at one position or everything from one position on, or one sentence takes another token of that
    position's column. [CLS] and [SEP] stay."""
    out = []
    for p, column in columns.items():
        holders = [i for i, s in enumerate(batch) if p < len(s) - 1]
        for a in holders:
            for b in holders:
                if a < b and batch[a][p] != batch[b][p]:
                    new = list(batch)
                    new[a] = batch[a][:p] + (batch[b][p],) + batch[a][p + 1:]
                    new[b] = batch[b][:p] + (batch[a][p],) + batch[b][p + 1:]
                    out.append((new, {(a, p), (b, p)}))
                    if p > 1 and len(batch[a]) == len(batch[b]):  # exchange the two sentences' ends from p on
                        new = list(batch)
                        new[a], new[b] = batch[a][:p] + batch[b][p:], batch[b][:p] + batch[a][p:]
                        out.append((new, {(x, q) for x in (a, b) for q in range(p, len(batch[a]) - 1)}))
            for token in column:
                if token != batch[a][p]:
                    new = list(batch)
                    new[a] = batch[a][:p] + (token,) + batch[a][p + 1:]
                    out.append((new, {(a, p)}))
    return out


def thread_batch(case: Case, sentences: Sequence[Sequence[int]], sweeps: int = THREAD_SWEEPS,
                 rounds: int = THREAD_ROUNDS) -> tuple[list[list[int]], float]:
    """Re-thread ``sentences`` (ids without [CLS]/[SEP]) by a descent on the layer-1 residual of the first
    ``rounds`` live watched rounds; returns the sentences and the residual. Stops at a local minimum, at a
    certified batch, or after ``sweeps`` steps."""
    messages = (case.live_rounds or case.watched)[:rounds]  # the first round: its dL/dB row spaces
    cls_id, sep_id = case.special
    try:
        score = BatchResidual(messages)
    except ValueError:  # no layer-1 attention LoRA: nothing to thread by
        return [list(s) for s in sentences], float("nan")
    batch = [(cls_id, *s, sep_id) for s in sentences]
    columns: dict[int, list[int]] = {}
    for s in batch:
        for p in range(1, len(s) - 1):
            columns.setdefault(p, [])
            if s[p] not in columns[p]:
                columns[p].append(s[p])
    best = float(score([batch])[0])
    for _ in range(sweeps):
        if best < CERTIFIED:
            break
        step = descent_step(batch, moves(batch, columns), score, best - 1e-12, combine_batch)
        if step is None:  # a local minimum (or nothing to change)
            break
        batch, best = step
        for cache in score.cache:  # keep memory bounded: only the current batch's sentences stay
            for key in [k for k in cache if k not in batch]:
                del cache[key]
    return [list(s[1:-1]) for s in batch], best
