"""What the embedding gradients of full fine-tuning give away at once: the tokens used and the length."""
from __future__ import annotations

from typing import Mapping

import torch

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
POSITION_EMBEDDINGS = "embeddings.position_embeddings.weight"


def find_tensor(update: Mapping[str, torch.Tensor], suffix: str) -> str:
    """The name in ``update`` that ends with ``suffix``, or one clear error (it is only shared in full fine-tuning)."""
    names = [n for n in update if n.endswith(suffix)]
    if not names:
        raise ValueError(
            f"the update holds no {suffix!r}: this leak needs full fine-tuning, where the embeddings train "
            "(LoRA updates never share them)."
        )
    return names[0]


def nonzero_rows(tensor: torch.Tensor, tol: float = 0.0) -> list[int]:
    """Indices of the rows of a matrix with an entry larger than ``tol`` in absolute value."""
    return torch.nonzero(tensor.detach().abs().amax(dim=1) > tol).flatten().tolist()


def token_set(update: Mapping[str, torch.Tensor], tol: float = 0.0) -> list[int]:
    """Token ids the client's batch used: the non-zero rows of the word-embedding gradient.

    Row ``t`` of ``dL/dE`` is the sum of the gradients at every position holding token ``t``, so it is
    zero exactly for the tokens that do not occur (special tokens such as [CLS] and [SEP] included).
    """
    return nonzero_rows(update[find_tensor(update, WORD_EMBEDDINGS)], tol)


def sequence_length(update: Mapping[str, torch.Tensor], tol: float = 0.0) -> int:
    """Positions used by the longest sentence, special tokens included: the non-zero position-embedding rows."""
    rows = nonzero_rows(update[find_tensor(update, POSITION_EMBEDDINGS)], tol)
    return max(rows) + 1 if rows else 0
