"""The model families: how a kind of transformer (BERT, MPNet, GPT-2) is built and read.

A *family* says which class and config build a kind of transformer, where its embeddings are and how its first
layer's inputs are formed, which modules LoRA targets by default, which head trains beside the adapter, and what
loss a client minimises. Every other module asks the family instead of naming a BERT path.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import (BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel, MPNetConfig,
                          MPNetForSequenceClassification)

TASKS = ("classification", "causal-lm")
"""What a client trains for: a label per text (encoders) or every next token of its text (decoders)."""


@dataclass(frozen=True)
class Family:
    """How one kind of transformer is built and where an attacker finds its parts (paths below the base model).

    ``layer_inputs`` are the modules that read a layer's input: their ``lora_A`` rows share one span.
    ``input_norm`` is the LayerNorm that forms the first layer's input ``LN(E[v] + P[p] (+ T[0]))``;
    ``position_offset`` is the first position id a text uses (MPNet counts from its padding id + 1).
    """

    name: str
    task: str
    config_class: type
    model_class: type
    base: str
    lora_targets: tuple[str, ...]
    layer_inputs: tuple[str, ...]
    layer_prefix: str
    word_embeddings: str
    position_embeddings: str
    input_norm: str
    head: str | None = "classifier"
    head_linear: str | None = "classifier"
    token_type_embeddings: str | None = None
    position_offset: int = 0
    fan_in_fan_out: bool = False
    no_dropout: dict = field(default_factory=lambda: dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))

    @property
    def is_decoder(self) -> bool:
        """True for causal language models: no label, the loss is next-token prediction."""
        return self.task == "causal-lm"

    def layer_rows_pattern(self, layer: int) -> re.Pattern:
        """Matches the ``lora_A`` tensor names of ``layer``'s input-reading modules in an update."""
        modules = "|".join(re.escape(m) for m in self.layer_inputs)
        return re.compile(rf"(^|\.){re.escape(self.layer_prefix.format(layer))}(.*\.)?({modules})\.lora_A")

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, attention_mask: torch.Tensor | None = None
             ) -> torch.Tensor:
        """The client's mean loss: cross-entropy on its labels (``targets`` ``(N,)``) for a classifier; for a
        decoder, on every next token, ``targets`` being the token ids ``(N, T)`` (padding masked out) or a
        distribution over the vocabulary per position ``(N, T, V)`` (DLG's relaxed dummy text). Targets made
        on the CPU follow the logits to their device."""
        targets = targets.to(logits.device)
        if not self.is_decoder:
            if targets.dim() == 2 and targets.is_floating_point():  # a soft label per text
                return -(targets * logits.log_softmax(-1)).sum(-1).mean()
            return nn.functional.cross_entropy(logits, targets)
        log_p = logits[:, :-1].log_softmax(-1)
        if targets.is_floating_point():
            return -(targets[:, 1:] * log_p).sum(-1).mean()
        nll = -log_p.gather(-1, targets[:, 1:, None]).squeeze(-1)
        if attention_mask is None:
            return nll.mean()
        keep = attention_mask[:, 1:].to(nll.dtype)
        return (nll * keep).sum() / keep.sum()


FAMILIES: dict[str, Family] = {
    "bert": Family(
        "bert", "classification", BertConfig, BertForSequenceClassification, "bert", ("query", "value"),
        ("query", "key", "value"), "encoder.layer.{}.", "embeddings.word_embeddings",
        "embeddings.position_embeddings", "embeddings.LayerNorm",
        token_type_embeddings="embeddings.token_type_embeddings",
    ),
    "mpnet": Family(
        "mpnet", "classification", MPNetConfig, MPNetForSequenceClassification, "mpnet", ("q", "v"),
        ("q", "k", "v"), "encoder.layer.{}.", "embeddings.word_embeddings", "embeddings.position_embeddings",
        "embeddings.LayerNorm", head_linear="classifier.out_proj", position_offset=2,
    ),
    "gpt2": Family(
        "gpt2", "causal-lm", GPT2Config, GPT2LMHeadModel, "transformer", ("c_attn",), ("c_attn",), "h.{}.",
        "wte", "wpe", "h.0.ln_1", head=None, head_linear=None, fan_in_fan_out=True,
        no_dropout=dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    ),
}
"""The model families by ``config.model_type``: one entry per kind of transformer the course can attack."""


def family_of(model: nn.Module) -> Family:
    """The family of a model (peft-wrapped or not: a ``PeftModel`` passes ``config`` through), from its config's
    ``model_type``."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in FAMILIES:
        raise ValueError(f"model type {kind!r} is not a family the course knows: use one of {', '.join(FAMILIES)}.")
    return FAMILIES[kind]


def max_tokens(model: nn.Module) -> int:
    """The longest input (special tokens included) that the model's position embeddings allow."""
    return int(model.config.max_position_embeddings) - family_of(model).position_offset


def base_of(model: nn.Module) -> nn.Module:
    """The transformer inside a (peft-wrapped) model: ``model.bert``, ``model.mpnet`` or ``model.transformer``."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, family_of(inner).base)


@dataclass(frozen=True)
class InputTables:
    """What forms the first layer's inputs ``x = LN(E[v] + P[p])``: word table ``E`` (V, d), position table ``P``
    (positions from 0, token type 0 folded in), both in float64, and the LayerNorm."""

    words: torch.Tensor
    positions: torch.Tensor
    norm: nn.LayerNorm


def input_tables(model: nn.Module) -> InputTables:
    """The public tables of the first layer's inputs of a (peft-wrapped) model, whatever its family."""
    base, kind = base_of(model), family_of(model)
    words = base.get_submodule(kind.word_embeddings).weight.detach().double()
    positions = base.get_submodule(kind.position_embeddings).weight.detach().double()[kind.position_offset:]
    if kind.token_type_embeddings is not None:
        positions = positions + base.get_submodule(kind.token_type_embeddings).weight.detach().double()[0]
    return InputTables(words, positions, base.get_submodule(kind.input_norm))
