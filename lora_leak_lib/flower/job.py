"""The run's job: the Python objects ``run_flower`` pickles, and the server and client mains that read them."""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from .. import config, data, fl
from .clients import make_client_app, make_secagg_client_app
from .conversion import from_arrays
from .history import FlowerHistory
from .strategies import secagg_ranges, serve_fedavg, serve_secagg


@dataclass
class FlowerJob:
    """What ``run_flower`` hands the Flower processes besides the run config: the run's Python objects.

    Written with cloudpickle (a ``make_client`` defined in a notebook travels by value, as Ray ships it) to
    the file the run config's ``job`` names; the server and every client read it once per process.
    """

    setup: fl.FederatedSetup
    shards: list[list[data.Example]]
    evaluation: list[data.Example]
    seed: int
    make_client: Callable[..., fl.Client]


_JOBS: dict[str, FlowerJob] = {}
_CLIENT_APPS: dict[str, object] = {}


def _job(run_config: Mapping) -> FlowerJob:
    path = str(run_config["job"])
    if not path:
        raise ValueError("the run config names no job file: launch the app with flower.run_flower(...).")
    if path not in _JOBS:
        with open(path, "rb") as file:
            _JOBS[path] = pickle.load(file)
    return _JOBS[path]


def client_app_for(run_config: Mapping):
    """This run's ``ClientApp``, built once per process from its job: ``make_secagg_client_app`` under
    ``secure-aggregation``, ``make_client_app`` otherwise. The app's ``ClientApp`` hands every message to it."""
    path = str(run_config["job"])
    if path not in _CLIENT_APPS:
        job = _job(run_config)
        _CLIENT_APPS[path] = (
            make_secagg_client_app(job.setup, job.shards, job.seed, job.make_client,
                                   float(run_config["clipping-range"]))
            if run_config["secure-aggregation"] else make_client_app(job.setup, job.shards, job.seed, job.make_client))
    return _CLIENT_APPS[path]


def serve(grid, context) -> None:
    """The ``ServerApp``'s main: run the curious FedAvg (or SecAgg+) server on the job of ``context.run_config``
    and write the ``FlowerHistory`` it recorded to the run config's ``history`` (``torch.save``)."""
    run_config = context.run_config
    job = _job(run_config)
    n_clients, rounds = len(job.shards), int(run_config["num-server-rounds"])
    history = FlowerHistory(job.setup, secure=bool(run_config["secure-aggregation"]), shards=job.shards)
    config.quiet()
    config.set_seed(job.seed)
    model = job.setup.build_model()

    def evaluate(arrays) -> tuple[float, float]:
        from_arrays(model, arrays)
        loss, accuracy = fl.evaluate(model, job.evaluation, job.setup.model.tokenizer)
        history.loss.append(loss)
        history.accuracy.append(accuracy)
        return loss, accuracy

    if history.secure:
        weight = max(len(s) for s in job.shards)
        history.clipping_range, history.quantization_range = secagg_ranges(
            n_clients, float(run_config["clipping-range"]), int(run_config["quantization-range"]))
        history.quantization_step = 2 * history.clipping_range / history.quantization_range
        # Each client's integer is off by less than one step; the sum is divided by Σ n_i / max n.
        history.error_bound = history.quantization_step * n_clients / sum(len(s) / weight for s in job.shards)
        serve_secagg(grid, context, history, model, n_clients, rounds, evaluate, weight)
    else:
        serve_fedavg(grid, history, model, n_clients, rounds, evaluate)
    torch.save(history, str(run_config["history"]))
