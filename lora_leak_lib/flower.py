"""The course's federated clients on Flower: adapter-only messages, FedAvg, and a curious strategy.

Optional: needs ``pip install -e ".[flower]"``. The clients run the same ``fl.Client`` logic as the
in-process simulation; the curious strategy turns every reply into the ``SharedUpdate`` attacks consume.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from . import config, data, fl, gradients
from .attacks.base import SharedUpdate

INSTALL_HINT = 'Flower is not installed: run `pip install -e ".[flower]"` (flwr[simulation] 1.42).'


def flower_available() -> bool:
    """True when ``flwr`` can be imported."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def require_flower() -> None:
    """Raise one clear error, saying how to install the extra, when Flower is missing."""
    if not flower_available():
        raise ValueError(INSTALL_HINT)


def peft_names(model: PeftModel) -> OrderedDict[str, str]:
    """Map the trainable parameter names of the course to the keys of ``get_peft_model_state_dict``."""
    params = {p.data_ptr(): name for name, p in model.named_parameters() if p.requires_grad}
    mapping = OrderedDict((params[t.data_ptr()], key) for key, t in get_peft_model_state_dict(model).items()
                          if t.data_ptr() in params)
    if len(mapping) != len(params):
        raise ValueError("the peft adapter state does not cover every trainable parameter: check the LoRA set-up.")
    return mapping


def to_arrays(model: PeftModel):
    """The adapter state as it travels on Flower: an ``ArrayRecord`` of peft's keys, float32 arrays."""
    from flwr.app import ArrayRecord

    return ArrayRecord(OrderedDict((k, v.detach().cpu().float().clone())
                                   for k, v in get_peft_model_state_dict(model).items()))


def from_arrays(model: PeftModel, arrays) -> OrderedDict[str, torch.Tensor]:
    """Load a travelling ``ArrayRecord`` into ``model``; return it under the course's parameter names."""
    set_peft_model_state_dict(model, {k: torch.from_numpy(np.array(v.numpy())) for k, v in arrays.items()})
    return gradients.trainable_state(model)


_MODELS: dict[fl.FederatedSetup, PeftModel] = {}


def _model(setup: fl.FederatedSetup) -> PeftModel:
    """One model per set-up and process (a Ray worker keeps it between rounds)."""
    if setup not in _MODELS:
        config.quiet()
        _MODELS[setup] = setup.build_model()
    return _MODELS[setup]


def make_client_app(setup: fl.FederatedSetup, shards: Sequence[Sequence[data.Example]], seed: int = 0,
                    make_client: Callable[..., fl.Client] = fl.Client):
    """A Flower ``ClientApp``: node ``partition-id`` i runs ``fl.Client`` i and replies with its new adapter."""
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        client_id = int(context.node_config["partition-id"])
        round = int(message.content["config"]["server-round"]) - 1  # Flower counts rounds from 1
        model = _model(setup)
        global_state = from_arrays(model, message.content["arrays"])
        client = make_client(client_id, shards[client_id], model, setup, seed)
        reply = client.client_update(global_state, round)
        gradients.load_trainable_state(model, OrderedDict((n, global_state[n] + d) for n, d in reply.update.items()))
        metrics = MetricRecord({"num-examples": reply.n_examples, "client-id": client_id,
                                "batch-size": reply.batch_size})
        return Message(RecordDict({"arrays": to_arrays(model), "metrics": metrics}), reply_to=message)

    return app


@dataclass
class FlowerHistory:
    """A Flower run as the curious server recorded it: per-round evaluation, the message log, every update."""

    setup: fl.FederatedSetup
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    sent: dict[int, OrderedDict[str, torch.Tensor]] = field(default_factory=dict)
    received: dict[tuple[int, int], fl.ClientMessage] = field(default_factory=dict)
    log: list[fl.LogEntry] = field(default_factory=list)

    def captured(self, client_id: int, round: int) -> SharedUpdate:
        """The ``SharedUpdate`` of one client in one round, exactly as ``fl.Server.captured`` builds it."""
        server = fl.Server(self.setup, self.sent[round])
        server.sent, server.received = self.sent, self.received
        return server.captured(client_id, round)


def make_curious_fedavg(history: FlowerHistory, model: PeftModel, **kwargs):
    """Flower's ``FedAvg``, plus a record of the state sent each round and of every client's reply."""
    from flwr.serverapp.strategy import FedAvg

    class CuriousFedAvg(FedAvg):
        def configure_train(self, server_round, arrays, config, grid):
            history.sent[server_round - 1] = from_arrays(model, arrays)
            return super().configure_train(server_round, arrays, config, grid)

        def aggregate_train(self, server_round, replies):
            replies = list(replies)
            round, sent = server_round - 1, history.sent[server_round - 1]
            for reply in replies:
                if not reply.has_content():
                    raise RuntimeError(f"a Flower client failed in round {round}: {reply.error.reason}")
                metrics, arrays = reply.content["metrics"], reply.content["arrays"]
                new = from_arrays(model, arrays)
                delta = gradients.weight_delta(sent, new)
                message = fl.ClientMessage(int(metrics["client-id"]), round, "delta", delta,
                                           int(metrics["num-examples"]), int(metrics["batch-size"]))
                history.received[(message.client_id, round)] = message
                history.log.append(fl.LogEntry.of(message))
            return super().aggregate_train(server_round, replies)

    return CuriousFedAvg(**kwargs)


def run_flower(model_name: str = "tiny-bert", n_clients: int = 3, rounds: int = 2, *,
               source: str | Path | Sequence[data.Example] | None = None, limit: int | None = None,
               held_out: float = 0.25, rank: int = 8, alpha: float | None = None, lr: float = 3e-3,
               local_steps: int = 2, optimizer: str = "adam", batch_size: int = 8, seed: int = 0,
               make_client: Callable[..., fl.Client] = fl.Client, quiet: bool = True) -> FlowerHistory:
    """``fl.run_federated`` with protocol FedAvg, on Flower's simulation engine (Ray), one node per client.

    Same arguments, data split and seeds as the in-process run, so the captured updates agree with it.
    """
    require_flower()
    from flwr.app import MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    if quiet:
        logging.getLogger("flwr").setLevel(logging.WARNING)
    setup = fl.FederatedSetup(model_name, rank, alpha, protocol="fedavg", lr=lr, local_steps=local_steps,
                              optimizer=optimizer, batch_size=batch_size, model_seed=seed)
    shards, evaluation = fl.split_among_clients(fl.load_examples(source, limit, seed), n_clients, held_out, seed)
    config.set_seed(seed)
    model = setup.build_model()
    history = FlowerHistory(setup)

    def evaluate(round: int, arrays) -> MetricRecord:
        from_arrays(model, arrays)
        loss, accuracy = fl.evaluate(model, evaluation, model_name)
        history.loss.append(loss)
        history.accuracy.append(accuracy)
        return MetricRecord({"loss": loss, "accuracy": accuracy})

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context) -> None:
        strategy = make_curious_fedavg(history, model, fraction_train=1.0, fraction_evaluate=0.0,
                                       min_available_nodes=n_clients, min_train_nodes=n_clients)
        strategy.start(grid=grid, initial_arrays=to_arrays(model), num_rounds=rounds,
                       evaluate_fn=evaluate)

    run_simulation(server_app=server, client_app=make_client_app(setup, shards, seed, make_client),
                   num_supernodes=n_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                   verbose_logging=not quiet)
    if len(history.sent) != rounds or len(history.received) != rounds * n_clients:
        raise RuntimeError(f"the Flower run finished {len(history.sent)} of {rounds} rounds: see its log above.")
    return history
