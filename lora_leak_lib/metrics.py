"""How close a reconstruction is to the private text: token accuracy, token sets, ROUGE, batch matching."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")
"""The ROUGE variants reported everywhere in the course (F1 scores, as in LAMP and DAGER)."""


def _check_ids(ids: Sequence[int], what: str) -> list[int]:
    if isinstance(ids, str):
        raise ValueError(f"{what} must be a list of token ids, not a string: tokenise it first.")
    return [int(i) for i in ids]


def token_accuracy(reference_ids: Sequence[int], recovered_ids: Sequence[int]) -> float:
    """Fraction of reference positions whose token was recovered at the same position.

    Missing positions count as wrong and extra recovered tokens are ignored, so the score is between
    0 and 1 and is 1 only when the reference is a prefix of the reconstruction.
    """
    reference = _check_ids(reference_ids, "reference_ids")
    recovered = _check_ids(recovered_ids, "recovered_ids")
    if not reference:
        raise ValueError("the reference holds no tokens: token accuracy needs at least one.")
    hits = sum(a == b for a, b in zip(reference, recovered))
    return hits / len(reference)


def token_set_scores(reference_ids: Sequence[int], recovered_ids: Sequence[int]) -> dict[str, float]:
    """Precision and recall of the *set* of distinct tokens, whatever their order or count."""
    reference = set(_check_ids(reference_ids, "reference_ids"))
    recovered = set(_check_ids(recovered_ids, "recovered_ids"))
    common = len(reference & recovered)
    precision = common / len(recovered) if recovered else 0.0
    recall = common / len(reference) if reference else 0.0
    return {"precision": precision, "recall": recall}


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)


def rouge(reference_text: str, recovered_text: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 of one reconstruction (Google's ``rouge-score``, works offline).

    Words are lower-cased and punctuation is dropped by the scorer, as in the published attacks.
    """
    if not isinstance(reference_text, str) or not isinstance(recovered_text, str):
        raise ValueError("rouge compares two strings: decode token ids to text first.")
    scores = _rouge_scorer().score(reference_text, recovered_text)
    return {key: float(scores[key].fmeasure) for key in ROUGE_KEYS}


def exact_match(reference: str | Sequence[int], recovered: str | Sequence[int]) -> bool:
    """True when the reconstruction equals the reference (texts compared after stripping spaces)."""
    if isinstance(reference, str) and isinstance(recovered, str):
        return reference.strip() == recovered.strip()
    if isinstance(reference, str) or isinstance(recovered, str):
        raise ValueError("exact_match compares two texts or two lists of token ids, not one of each.")
    return [int(i) for i in reference] == [int(i) for i in recovered]


def sentence_scores(reference_text: str, recovered_text: str, reference_ids: Sequence[int] | None = None,
                    recovered_ids: Sequence[int] | None = None) -> dict[str, float]:
    """Every metric of one sentence as one row: ROUGE and exact match, plus token scores when ids are given."""
    row = rouge(reference_text, recovered_text)
    if reference_ids is not None and recovered_ids is not None:
        row["token_accuracy"] = token_accuracy(reference_ids, recovered_ids)
        row.update(token_set_scores(reference_ids, recovered_ids))
        row["exact_match"] = float(exact_match(reference_ids, recovered_ids))
    else:
        row["exact_match"] = float(exact_match(reference_text, recovered_text))
    return row


def match_batch(references: Sequence[str], reconstructions: Sequence[str]) -> list[int]:
    """Pair each reference with one reconstruction by the Hungarian assignment on ROUGE-1 (LAMP, DAGER).

    Returns ``order`` with ``order[i]`` the index of the reconstruction matched to reference ``i``, or
    ``-1`` when there are fewer reconstructions than references. Each reconstruction is used at most once.
    """
    if not references:
        raise ValueError("no references to match: give at least one reference text.")
    order = [-1] * len(references)
    if not reconstructions:
        return order
    score = np.array([[rouge(ref, rec)["rouge1"] for rec in reconstructions] for ref in references])
    rows, cols = linear_sum_assignment(score, maximize=True)
    for i, j in zip(rows, cols):
        order[int(i)] = int(j)
    return order


def score_batch(reference_texts: Sequence[str], recovered_texts: Sequence[str],
                reference_ids: Sequence[Sequence[int]] | None = None,
                recovered_ids: Sequence[Sequence[int]] | None = None) -> list[dict[str, float]]:
    """One row of ``sentence_scores`` per reference, after matching reconstructions by ``match_batch``.

    Each row also holds ``original`` (the reference) and ``reconstruction`` (the text matched to it), so no
    caller matches again. A reference left without a reconstruction scores as if the empty text had been
    recovered.
    """
    if recovered_ids is not None and len(recovered_ids) != len(recovered_texts):
        raise ValueError("give one list of recovered ids per recovered text.")
    if reference_ids is not None and len(reference_ids) != len(reference_texts):
        raise ValueError("give one list of reference ids per reference text.")
    order = match_batch(reference_texts, recovered_texts)
    rows = []
    for i, j in enumerate(order):
        text = recovered_texts[j] if j >= 0 else ""
        ids = None
        if reference_ids is not None and recovered_ids is not None:
            ids = (reference_ids[i], recovered_ids[j] if j >= 0 else [])
        rows.append({**sentence_scores(reference_texts[i], text, *(ids or (None, None))),
                     "original": reference_texts[i], "reconstruction": text})
    return rows


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation and count of every numeric metric over many sentences.

    ``summarize([{"rouge1": 1.0}, {"rouge1": 0.5}])["rouge1"] == {"mean": 0.75, "std": 0.25, "n": 2}``;
    non-numeric fields (texts, names) are skipped.
    """
    if not rows:
        raise ValueError("no rows to summarize: score at least one sentence first.")
    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float, bool, np.number))]
    summary = {}
    for key in keys:
        values = np.array([float(row[key]) for row in rows if key in row], dtype=float)
        values = values[~np.isnan(values)]
        mean = float(values.mean()) if values.size else math.nan
        std = float(values.std()) if values.size else math.nan
        summary[key] = {"mean": mean, "std": std, "n": int(values.size)}
    return summary
