"""The case an attack works on, built once: one message, what the attacker knows besides it, and what follows.

Every attack reads the same few things off a ``SharedUpdate``: the public model, its first-layer inputs for any
(token, position), the vocabulary a sentence may use, the first and last special tokens, the rounds it watched and
which of them carry first-layer ``lora_A`` rows (none at the first round, where ``B = 0``), and the span of those
rows. A ``Case`` computes each once, when first asked, and the strategies of a composite attack pass it along
(breaching's word for the same object).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import torch

from .. import models
from .base import Knowledge, SharedUpdate
from .inputs import (SPAN_TOL, EmbeddingInputs, allowed_tokens, first_layer_names, first_layer_rows, input_span,
                     lora_a_is_zero, noisy_span, public_inputs)


@dataclass(frozen=True, eq=False)
class Case:
    """One message under attack (``shared``), what the attacker knows (``knowledge``), and the relative cut
    ``tol`` below which a direction of the stacked first-layer rows counts as rounding."""

    shared: SharedUpdate
    knowledge: Knowledge = field(default_factory=Knowledge)
    tol: float = SPAN_TOL

    @property
    def model(self) -> models.PublicModel:
        """The public model the client trained (the set-up's)."""
        return self.shared.setup.model

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @cached_property
    def special(self) -> tuple[int, int]:
        """The ids of the first and the last special token every text is framed by ([CLS] and [SEP])."""
        return self.tokenizer.cls_token_id, self.tokenizer.sep_token_id

    @cached_property
    def vocab(self) -> torch.Tensor:
        """The ids a sentence may hold inside its frame: the vocabulary less special and unused tokens."""
        return allowed_tokens(self.tokenizer)

    @cached_property
    def inputs(self) -> EmbeddingInputs:
        """The public first-layer input of any (token, position): frozen, the same in every round."""
        setup = self.shared.setup
        return public_inputs(setup.model, setup.model_seed)

    @cached_property
    def sentences(self) -> int:
        """How many sentences the attacker looks for in the message."""
        return self.knowledge.sentences(self.shared)

    @cached_property
    def watched(self) -> list[SharedUpdate]:
        """The message under attack first, then the same client's messages from the other watched rounds."""
        return self.knowledge.rounds_watched(self.shared)

    @cached_property
    def live_rounds(self) -> list[SharedUpdate]:
        """The watched messages whose first-layer ``lora_A`` carries a span, in watched order: not all zero, and
        with a direction above a known defence's noise (a first round's ``lora_A`` under noise is noise only)."""
        return [u for u in self.watched if not lora_a_is_zero(u.update) and self._above_noise(u)]

    def _above_noise(self, message: SharedUpdate) -> bool:
        names = first_layer_names(message.update)
        noise = self.noise(names)
        if not noise or not names:
            return True
        rows = first_layer_rows(message.update)
        return float(torch.linalg.matrix_norm(rows, ord=2)) > noise * (rows.shape[0] ** 0.5 + rows.shape[1] ** 0.5)

    @property
    def drowned(self) -> bool:
        """True when a watched ``lora_A`` carries a gradient but a known defence's noise drowns every direction of it
        (no live round): not a first round, a message the noise hides from the span test."""
        return not self.live_rounds and any(not lora_a_is_zero(u.update) for u in self.watched)

    @property
    def first_round(self) -> bool:
        """True when every watched round is a first round (``B = 0``, so every ``dL/dA`` is zero)."""
        return not self.live_rounds

    def noise(self, names: Sequence[str]) -> float:
        """The std per entry of the noise a known defence left in the tensors ``names`` (0 when none is known)."""
        defence = self.knowledge.defence
        return defence.noise_of(names) if defence is not None else 0.0

    @cached_property
    def basis(self) -> torch.Tensor:
        """The orthonormal basis of the stacked first-layer ``lora_A`` rows of every live round (``k × d``): the
        directions above float32 rounding (``tol``), or above a known defence's noise (``noise``); one clear error
        when there are none or they do not fit the model's inputs."""
        rows = [first_layer_rows(u.update) for u in self.live_rounds]
        stacked = torch.cat(rows) if rows else first_layer_rows(self.shared.update)
        noise = self.noise(first_layer_names(self.shared.update))
        basis = noisy_span(stacked, noise) if noise else input_span(stacked, self.tol)
        width = self.inputs.tokens.shape[1]
        if basis.shape[1] != width:
            raise ValueError(f"the update's first-layer rows have {basis.shape[1]} columns but {self.model.name}'s "
                             f"inputs have {width}: attack it with the model the client trained.")
        return basis
