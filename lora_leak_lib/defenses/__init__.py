"""Defences against gradient leakage: update transformations, DP-SGD with an accountant, secure aggregation."""
from .accountant import epsilon, rdp_gaussian
from .dp import clip_per_sample, dp_gradient, dp_sgd_train, per_sample_gradients, per_sample_norms
from .federated import DefendedClient, DefendedServer, DPClient, SecureAggregationClient
from .secure_aggregation import mask_update, secure_aggregate, secure_sum, subtract_own
from .sweep import Defence, Recipe, SettingResult, pareto_front, recommendations, run_setting, run_sweep, settings
from .update import add_noise, clip_update, quantisation_step, quantise, top_k, update_norm, without_head

__all__ = [
    "DPClient", "Defence", "DefendedClient", "DefendedServer", "Recipe", "SecureAggregationClient", "SettingResult",
    "pareto_front", "recommendations", "run_setting", "run_sweep", "settings", "add_noise", "clip_per_sample", "clip_update", "dp_gradient", "dp_sgd_train", "epsilon", "mask_update",
    "per_sample_gradients", "per_sample_norms", "quantisation_step", "quantise", "rdp_gaussian",
    "secure_aggregate", "secure_sum", "subtract_own", "top_k", "update_norm", "without_head",
]
