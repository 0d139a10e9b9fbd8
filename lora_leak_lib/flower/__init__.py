"""The course's federated clients on Flower: adapter-only messages, FedAvg, and a curious strategy.

Optional: needs ``pip install -e ".[flower]"``. The clients run the same ``fl.Client`` logic as the
in-process simulation; the curious strategy turns every reply into the ``SharedUpdate`` attacks consume.
With ``run_flower(..., secure_aggregation=True)`` the same clients run Flower's SecAgg+ protocol
(``SecAggPlusWorkflow`` and ``secaggplus_mod``): the curious strategy then sees only each round's
aggregate, which ``FlowerHistory.captured_aggregate`` hands to the same attacks.
``run_flower`` runs them as a Flower App (``lora_leak_lib.flower_app``) with ``flwr run``, Flower's
supported way to run an app (its Python ``run_simulation`` is deprecated), and reads back what the server kept.

One job per module, each importing only those above it: ``gate`` (is Flower installed) → ``conversion``
(adapter ↔ Flower's arrays) → ``clients`` (the ``ClientApp``s) and ``history`` (what the server recorded) →
``strategies`` (the curious FedAvg and SecAgg+ servers) → ``job`` (the pickled run and the app's mains) →
``launch`` (``run_flower``, ``flwr run``).
"""
from .clients import make_client_app, make_secagg_client_app
from .conversion import delta_arrays, from_arrays, peft_names, peft_state, to_arrays, update_from_arrays
from .gate import INSTALL_HINT, flower_available, require_flower
from .history import FlowerHistory, Reply, attack_scores
from .job import FlowerJob, client_app_for, serve
from .launch import APP, flower_env, launch, run_flower
from .strategies import (default_quantization_range, make_curious_fedavg, make_curious_secagg_fedavg, secagg_quantized,
                         secagg_ranges)

__all__ = ["APP", "INSTALL_HINT", "FlowerHistory", "FlowerJob", "Reply", "attack_scores", "client_app_for",
           "default_quantization_range", "delta_arrays", "flower_available", "flower_env", "from_arrays", "launch",
           "make_client_app", "make_curious_fedavg", "make_curious_secagg_fedavg", "make_secagg_client_app",
           "peft_names", "peft_state", "require_flower", "run_flower", "secagg_quantized", "secagg_ranges", "serve",
           "to_arrays", "update_from_arrays"]
