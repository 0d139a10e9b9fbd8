"""What the embedding gradients of full fine-tuning give away at once: the tokens used and the length."""
from __future__ import annotations

import time
from typing import Mapping

import torch

from .. import families
from .base import Callback, Knowledge, Reconstruction, SharedUpdate
from .registry import register

def embedding_name(family: families.Family, table: str = "word") -> str:
    """How a family's word (or ``"position"``) embedding table ends its name in an update."""
    path = family.word_embeddings if table == "word" else family.position_embeddings
    return f"{family.base}.{path}.weight"


def find_tensor(update: Mapping[str, torch.Tensor], table: str = "word") -> tuple[str, families.Family]:
    """The name in ``update`` of the word (or position) embedding table, and its model's family, or one clear
    error (the tables are only shared in full fine-tuning)."""
    for family in families.FAMILIES.values():
        names = [n for n in update if n.endswith(embedding_name(family, table))]
        if names:
            return names[0], family
    raise ValueError(f"the update holds no {table} embedding table: this leak needs full fine-tuning, where the "
                     "embeddings train (LoRA updates never share them).")


def nonzero_rows(tensor: torch.Tensor, tol: float = 0.0) -> list[int]:
    """Indices of the rows of a matrix with an entry larger than ``tol`` in absolute value."""
    return torch.nonzero(tensor.detach().abs().amax(dim=1) > tol).flatten().tolist()


def token_set(update: Mapping[str, torch.Tensor], tol: float = 0.0) -> list[int]:
    """Token ids the client's batch used: the non-zero rows of the word-embedding gradient.

    Row ``t`` of ``dL/dE`` is the sum of the gradients at every position holding token ``t``, so it is
    zero exactly for the tokens that do not occur (special tokens such as [CLS] and [SEP] included).
    """
    return nonzero_rows(update[find_tensor(update)[0]], tol)


def sequence_length(update: Mapping[str, torch.Tensor], tol: float = 0.0) -> int:
    """Positions used by the longest sentence, special tokens included: the non-zero position-embedding rows."""
    name, family = find_tensor(update, "position")
    rows = nonzero_rows(update[name], tol)
    return max(rows) + 1 - family.position_offset if rows else 0


@register("token-set", "the bag of tokens and the length from a full fine-tuning gradient's embedding rows",
          "none: read off in one step", lora=False)
class TokenSet:
    """``token_set`` as an ``Attack``: one text of the leaked tokens in vocabulary order (the words, not their
    order; special tokens left out)."""

    name = "token-set"

    def reconstruct(self, shared: SharedUpdate, knowledge: Knowledge = Knowledge(),
                    callback: Callback | None = None) -> Reconstruction:
        start = time.perf_counter()
        tokenizer = shared.setup.model.tokenizer
        special = set(tokenizer.all_special_ids)
        ids = [t for t in token_set(shared.update) if t not in special]
        return Reconstruction([ids], [tokenizer.decode(ids)], [], self.name, time.perf_counter() - start)
