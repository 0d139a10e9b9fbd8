"""A word-order prior: bigram counts over WordPiece tokens of public text we ship, to order and repair guesses.

The prior is built from ``data/public_text.txt`` (plain English written for the course) and the course's
own sentences, never from Rotten Tomatoes, which only benchmarks. Tokens that the text never shows fall
back to a Zipf prior over the tokenizer's vocabulary, whose word ids run roughly from frequent to rare.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from .. import data, models
from .search import cover_assignment

PUBLIC_TEXT = data.DATA_DIR / "public_text.txt"
FIRST_WORD = "the"
"""In BERT's uncased vocabulary (and MPNet's, shifted by 4) whole words start at 'the', roughly by frequency."""


def public_texts() -> list[str]:
    """The sentences the prior learns from: ``data/public_text.txt`` and the course sentences."""
    if not PUBLIC_TEXT.exists():
        raise ValueError(f"{PUBLIC_TEXT} is missing: install the course from its repository (`pip install -e .`).")
    lines = [line.strip() for line in PUBLIC_TEXT.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")] + [e.text for e in data.course_sentences()]


@dataclass
class BigramPrior:
    """``log p(token | previous)``: interpolated bigram counts with a unigram backoff (``weight`` on bigrams)."""

    unigram: torch.Tensor              # (V,) log-probabilities
    bigrams: Counter                   # (previous, token) -> count
    contexts: Counter                  # previous -> count
    weight: float = 0.6
    cls_id: int = 101
    sep_id: int = 102

    def log_prob(self, previous: int, token: int) -> float:
        """Log-probability of ``token`` right after ``previous``."""
        unigram = float(self.unigram[token].exp())
        context = self.contexts.get(previous, 0)
        bigram = self.bigrams.get((previous, token), 0) / context if context else 0.0
        return float(np.log(self.weight * bigram + (1 - self.weight) * unigram))

    def score(self, ids: Sequence[int]) -> float:
        """Log-probability of a sentence (token ids without [CLS]/[SEP]); [CLS] and [SEP] frame it."""
        tokens = [self.cls_id, *ids, self.sep_id]
        return sum(self.log_prob(a, b) for a, b in zip(tokens, tokens[1:]))


def zipf_unigram(vocab_size: int, counts: Counter, smoothing: float = 0.5, first_word: int = 1996) -> torch.Tensor:
    """Unigram log-probabilities: counted tokens by their counts, the rest by Zipf's law on the vocabulary id
    (from ``first_word`` on; the ids below it are characters, pieces and ``[unused]`` tokens). A CPU table:
    the prior scores sentences one Python float at a time."""
    rank = torch.clamp(torch.arange(vocab_size, device="cpu") - first_word + 2, min=1).double()
    zipf = 1.0 / (rank + 50.0)
    zipf[:first_word] *= 0.05                   # characters, pieces and [unused] tokens are rare alone
    zipf /= zipf.sum()
    counted = torch.zeros(vocab_size, dtype=torch.double, device="cpu")
    for token, count in counts.items():
        counted[token] = count
    counted /= max(float(counted.sum()), 1.0)
    return torch.log(smoothing * zipf + (1 - smoothing) * counted)


def build_prior(texts: Sequence[str] | None = None, model: models.PublicModel = models.TINY_BERT,
                weight: float = 0.6) -> BigramPrior:
    """Count bigrams of WordPiece tokens (with [CLS]/[SEP] around each sentence) over ``texts``."""
    texts = public_texts() if texts is None else list(texts)
    if not texts:
        raise ValueError("the prior needs at least one sentence of text to count.")
    tokenizer = model.tokenizer
    bigrams, contexts, unigrams = Counter(), Counter(), Counter()
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        unigrams.update(ids)
        contexts.update(ids[:-1])
        bigrams.update(zip(ids, ids[1:]))
    first = tokenizer.convert_tokens_to_ids(FIRST_WORD)
    first = first if first != tokenizer.unk_token_id else 0
    return BigramPrior(zipf_unigram(len(tokenizer), unigrams, first_word=first), bigrams, contexts, weight,
                       tokenizer.cls_token_id, tokenizer.sep_token_id)


@lru_cache(maxsize=4)
def default_prior(model: models.PublicModel = models.TINY_BERT) -> BigramPrior:
    """The prior from the text the course ships, in a model's token ids (built once per model)."""
    return build_prior(model=model)


def assemble_batch(columns: Sequence[Sequence[int]], batch_size: int, prior: BigramPrior,
                   sep_id: int | None = None) -> list[list[int]]:
    """Thread the candidate tokens of each position into ``batch_size`` sentences, left to right, by the bigram prior.

    ``columns[i]`` holds the tokens found at position ``i + 1`` (after [CLS]). At each position the open
    sentences take the column's tokens by a maximum-likelihood assignment in which every token is used at
    least once (a token may be shared when the column has fewer tokens than open sentences); a sentence
    that takes [SEP] is finished. Returns token ids without [CLS]/[SEP].
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}.")
    sep_id = prior.sep_id if sep_id is None else sep_id
    sentences: list[list[int]] = [[] for _ in range(batch_size)]
    last = [prior.cls_id] * batch_size
    open_ = list(range(batch_size))
    for column in columns:
        tokens = list(dict.fromkeys(column))
        if not open_ or not tokens:
            continue
        score = np.array([[prior.log_prob(last[s], t) for t in tokens] for s in open_])
        for s_row, t_col in cover_assignment(score):
            sentence, token = open_[s_row], tokens[t_col]
            last[sentence] = token
            if token != sep_id:
                sentences[sentence].append(token)
        open_ = [s for s in open_ if last[s] != sep_id]
    return sentences
