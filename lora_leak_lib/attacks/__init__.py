"""Attacks that rebuild private text from a shared update; each returns a ``Reconstruction``."""
from .base import Attack, Callback, Reconstruction, SharedUpdate
from .distances import DISTANCES, gradient_distance
from .dlg import (DLG, capture_full_update, classifier_gradients, deep_leakage, match_gradients,
                  matching_losses)
from .labels import infer_labels
from .linear import linear_leak
from .lora_attacks import LoRABest, attack_texts, get_attack, pooled_output
from .order import BigramPrior, assemble_batch, build_prior, default_prior, prior_swaps
from .span import SpanAttack, batch_span_attack, span_attack
from .token_set import sequence_length, token_set

__all__ = ["Attack", "Callback", "DISTANCES", "DLG", "Reconstruction", "SharedUpdate", "capture_full_update",
           "classifier_gradients", "deep_leakage", "gradient_distance", "infer_labels", "linear_leak",
           "match_gradients", "matching_losses", "sequence_length", "token_set",
           "BigramPrior", "LoRABest", "SpanAttack", "assemble_batch", "attack_texts", "batch_span_attack",
           "build_prior", "default_prior", "get_attack", "pooled_output", "prior_swaps", "span_attack"]
