"""Defences against gradient leakage: update transformations, DP-SGD with an accountant, secure aggregation.

``DEFENCES`` is the one registry of them; the privacy-utility sweep that measures them is ``experiments.sweep``.
"""
from .accountant import epsilon, rdp_gaussian
from .dp import clip_per_sample, dp_gradient, dp_sgd_train, per_sample_gradients, per_sample_norms
from .federated import DefendedClient, DefendedServer, DPClient, SecureAggregationClient
from .registry import BASELINE, DEFENCES, DP_CLIP, DefenceSpec, check_defence, defend_message, lab_defences
from .secure_aggregation import (decode_fixed_point, encode_fixed_point, mask_update, secure_aggregate, secure_sum,
                                 subtract_own)
from .update import add_noise, clip_update, quantisation_step, quantise, top_k, update_norm

__all__ = [
    "BASELINE", "DEFENCES", "DPClient", "DP_CLIP", "DefenceSpec", "DefendedClient", "DefendedServer",
    "SecureAggregationClient", "add_noise", "check_defence", "clip_per_sample", "clip_update", "decode_fixed_point",
    "defend_message", "dp_gradient", "dp_sgd_train", "encode_fixed_point", "epsilon", "lab_defences", "mask_update",
    "per_sample_gradients", "per_sample_norms", "quantisation_step", "quantise", "rdp_gaussian",
    "secure_aggregate", "secure_sum", "subtract_own", "top_k", "update_norm",
]
