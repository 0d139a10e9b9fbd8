"""Attack an update, score what came back against the private sentences (matching once), and both in one call."""
from __future__ import annotations

from typing import Sequence

from transformers import PreTrainedTokenizerBase

from .. import metrics
from ..checks import DEFAULT_ROUNDS, MAX_ROUNDS, check_rounds  # noqa: F401 (re-exported)
from ..attacks import Attack, Knowledge, Reconstruction, SharedUpdate, get_attack

def reference_ids(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """The token ids of each private sentence without special tokens: what a perfect attack returns."""
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def longest(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest sentence's length in tokens without special tokens: what a strong attacker is told."""
    return max(len(ids) for ids in reference_ids(texts, tokenizer))


def score(references: Sequence[str], reconstruction: Reconstruction,
          tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """One row per private sentence: ROUGE and token accuracy against its Hungarian-matched reconstruction,
    with ``original``, ``reconstruction`` and ``seconds`` (the attack's time per sentence)."""
    rows = metrics.score_batch(list(references), reconstruction.texts, reference_ids(references, tokenizer),
                               reconstruction.token_ids)
    for row in rows:
        row["seconds"] = reconstruction.seconds / len(references)
    return rows


def attack_update(shared: SharedUpdate, references: Sequence[str], attack: str | Attack = "lora-best",
                  knowledge: Knowledge | None = None, **knobs) -> list[dict]:
    """Attack an update one already holds and score it against the sentences it was computed on.

    ``attack`` is a registry name (with ``knobs``) or any object with ``reconstruct(shared, knowledge)``:
    bring your own. ``knowledge=None`` tells the attacker the longest sentence's length, the strong
    attacker of LAMP and DAGER; pass ``Knowledge()`` for an attacker who knows nothing more.
    """
    if not references:
        raise ValueError("give the private sentences the update was computed on, to score the attack against.")
    method = get_attack(attack, **knobs) if isinstance(attack, str) else attack
    if knowledge is None:
        knowledge = Knowledge(length=longest(references, shared.setup.model.tokenizer))
    return score(references, method.reconstruct(shared, knowledge), shared.setup.model.tokenizer)
