"""The discrete-search pieces the text attacks share: neighbourhoods of a sentence and the cover assignment."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..arrays import to_numpy


def swapped(sentence: Sequence[int], i: int, j: int) -> list[int]:
    """``sentence`` with the tokens at ``i`` and ``j`` exchanged (LAMP's discrete step)."""
    candidate = list(sentence)
    candidate[i], candidate[j] = candidate[j], candidate[i]
    return candidate


def swaps(sentence: Sequence[int]) -> list[list[int]]:
    """Every sentence one exchange of two different tokens away, pairs in order ``(0, 1), (0, 2), ...``."""
    n = len(sentence)
    return [swapped(sentence, i, j) for i in range(n) for j in range(i + 1, n) if sentence[i] != sentence[j]]


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
