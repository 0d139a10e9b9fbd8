"""The Flower ``ClientApp``s: each node runs the course's ``fl.Client`` and replies with its adapter or its delta."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

import numpy as np
import torch
from peft import PeftModel

from .. import config, data, fl, gradients
from ..message import SharedUpdate
from .conversion import delta_arrays, from_arrays, peft_names, to_arrays

_MODELS: dict[fl.FederatedSetup, PeftModel] = {}


def _model(setup: fl.FederatedSetup) -> PeftModel:
    """One model per set-up and process (a Ray worker keeps it between rounds)."""
    if setup not in _MODELS:
        config.quiet()
        torch.set_num_threads(1)  # one node per CPU (client_resources): several BLAS threads each oversubscribe it
        _MODELS[setup] = setup.build_model()
    return _MODELS[setup]


def _local_update(setup: fl.FederatedSetup, shards: Sequence[Sequence[data.Example]], seed: int,
                  make_client: Callable[..., fl.Client], client_id: int, server_round: int,
                  arrays) -> tuple[PeftModel, OrderedDict[str, torch.Tensor], SharedUpdate]:
    """What every Flower node runs: load the global adapter Flower sent, run ``fl.Client`` ``client_id``
    for the round (Flower counts rounds from 1, the course from 0); return the model, that state and the reply."""
    model = _model(setup)
    global_state = from_arrays(model, arrays)
    client = make_client(client_id, shards[client_id], model, setup, seed)
    return model, global_state, client.client_update(global_state, server_round - 1)


def _reply_metrics(reply: SharedUpdate) -> dict[str, int]:
    """The plain-text metadata every reply carries: its aggregation weight, who sent it, its batch size."""
    return {"num-examples": reply.n_examples, "client-id": reply.client_id, "batch-size": reply.batch_size}


def make_client_app(setup: fl.FederatedSetup, shards: Sequence[Sequence[data.Example]], seed: int = 0,
                    make_client: Callable[..., fl.Client] = fl.Client):
    """A Flower ``ClientApp``: node ``partition-id`` i runs ``fl.Client`` i and replies with its new adapter."""
    from flwr.app import Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        model, global_state, reply = _local_update(
            setup, shards, seed, make_client, int(context.node_config["partition-id"]),
            int(message.content["config"]["server-round"]), message.content["arrays"])
        gradients.load_trainable_state(model, OrderedDict((n, global_state[n] + d) for n, d in reply.update.items()))
        return Message(RecordDict({"arrays": to_arrays(model), "metrics": MetricRecord(_reply_metrics(reply))}),
                       reply_to=message)

    return app


def make_secagg_client_app(setup: fl.FederatedSetup, shards: Sequence[Sequence[data.Example]], seed: int = 0,
                           make_client: Callable[..., fl.Client] = fl.Client, clipping_range: float = 1.0):
    """A Flower ``ClientApp`` for SecAgg+: a ``NumPyClient`` behind ``secaggplus_mod``.

    The client replies with its **delta** (new adapter minus the global one, in peft's order, as float64);
    the mod quantises and masks it, so its arrays never reach the server in the clear. The plain-text metrics
    say how many entries exceed ``clipping_range`` (SecAgg+ clips them), so a run can warn.
    """
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod

    class DeltaClient(NumPyClient):
        def __init__(self, client_id: int) -> None:
            self.client_id = client_id

        def fit(self, parameters, config):
            model, _, reply = _local_update(setup, shards, seed, make_client, self.client_id,
                                            int(config["server-round"]), parameters)
            delta = delta_arrays(reply.update, list(peft_names(model)))
            clipped = int(sum((np.abs(d) > clipping_range).sum() for d in delta))
            return delta, reply.n_examples, {**_reply_metrics(reply), "clipped": clipped}

    def client_fn(context):
        return DeltaClient(int(context.node_config["partition-id"])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
