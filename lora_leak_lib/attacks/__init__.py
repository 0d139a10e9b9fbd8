"""Attacks that rebuild private text from a shared update, all behind one interface and one registry.

Every attack takes ``reconstruct(shared, knowledge, callback)`` and returns a ``Reconstruction``; get one by
name with ``get_attack(name, **knobs)``; ``ATTACKS`` lists them with their descriptions and knobs.
"""
from .base import Attack, Callback, Knowledge, KnownDefence, Progress, Reconstruction, SharedUpdate
from .registry import ATTACKS, DEFAULT_ATTACK, AttackSpec, attack_names, check_attack_name, discover, get_attack, register

discover()  # every module registers its attacks when imported

from .dlg import DLG, classifier_gradients, deep_leakage, match_gradients, matching_losses  # noqa: E402
from .distances import DISTANCES, gradient_distance  # noqa: E402
from .embedding_leak import sequence_length, token_set  # noqa: E402
from .inputs import (SPAN_TOL, EmbeddingInputs, allowed_tokens, first_layer_rows, input_span,  # noqa: E402
                     lora_a_is_zero, public_inputs)
from .labels import head_bias_gradient, infer_labels  # noqa: E402
from .case import Case  # noqa: E402
from .later_layers import LayerResidual  # noqa: E402
from .linear import linear_leak, pooled_output  # noqa: E402
from .lora_best import LaterLayers, LoRABest  # noqa: E402
from .order import BigramPrior, assemble_batch, build_prior, default_prior  # noqa: E402
from .span import CERTIFIED, SpanAttack, batch_span_attack, span_attack  # noqa: E402
from .text_problem import TextProblem  # noqa: E402

__all__ = ["ATTACKS", "Attack", "DEFAULT_ATTACK", "AttackSpec", "BigramPrior", "CERTIFIED", "Callback", "Case", "DISTANCES", "DLG", "KnownDefence",
           "EmbeddingInputs", "Knowledge", "LaterLayers", "LayerResidual", "LoRABest", "Progress", "Reconstruction",
           "SPAN_TOL", "SharedUpdate", "SpanAttack", "TextProblem", "allowed_tokens", "assemble_batch",
           "attack_names", "batch_span_attack", "build_prior", "check_attack_name", "classifier_gradients",
           "deep_leakage", "default_prior", "discover", "first_layer_rows", "get_attack", "gradient_distance",
           "head_bias_gradient", "infer_labels", "input_span", "linear_leak", "lora_a_is_zero", "match_gradients",
           "matching_losses", "pooled_output", "public_inputs", "register", "sequence_length", "span_attack",
           "token_set"]
