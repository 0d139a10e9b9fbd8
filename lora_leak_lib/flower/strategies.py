"""The curious server's strategies: FedAvg that records every reply, FedAvg under SecAgg+, and their ranges."""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Mapping

import torch
from peft import PeftModel

from .. import gradients
from ..message import LogEntry, SharedUpdate
from .conversion import delta_arrays, from_arrays, peft_names, peft_state, to_arrays, update_from_arrays
from .gate import require_flower
from .history import FlowerHistory, Reply


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
                message = SharedUpdate(delta, sent, history.setup, int(metrics["client-id"]), round,
                                       int(metrics["num-examples"]), int(metrics["batch-size"]))
                history.received[(message.client_id, round)] = message
                history.log.append(LogEntry.of(message))
            return super().aggregate_train(server_round, replies)

    return CuriousFedAvg(**kwargs)


def make_curious_secagg_fedavg(history: FlowerHistory, model: PeftModel, **kwargs):
    """Flower's legacy ``FedAvg`` for the SecAgg+ workflow, recording all a curious server sees there.

    ``SecAggPlusWorkflow`` hands ``aggregate_fit`` one ``FitRes`` per client whose parameters are all the
    dequantised weighted mean of the clients' deltas: the strategy records it, what each reply said in the
    clear, and how many distinct payloads it got; it applies the mean to the global adapter.
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    names = list(peft_names(model))  # the order the clients send their deltas in

    class CuriousSecAggFedAvg(FedAvg):
        def configure_fit(self, server_round, parameters, client_manager):
            history.sent[server_round - 1] = from_arrays(model, parameters_to_ndarrays(parameters))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round, results, failures):
            round, sent = server_round - 1, history.sent[server_round - 1]
            if failures or not results:
                raise RuntimeError(f"SecAgg+ round {round} failed: {failures[0] if failures else 'no results'}")
            history.distinct_payloads[round] = len({b"".join(res.parameters.tensors) for _, res in results})
            mean = dict(zip(names, parameters_to_ndarrays(results[0][1].parameters)))
            history.aggregates[round] = update_from_arrays([mean[n] for n in sent], sent, torch.float64)
            for _, res in results:
                reply = Reply(int(res.metrics["client-id"]), round, res.num_examples, int(res.metrics["batch-size"]),
                              int(res.metrics["clipped"]))
                history.replies[(reply.client_id, round)] = reply
            gradients.load_trainable_state(model, OrderedDict((n, (t + history.aggregates[round][n]).float())
                                                              for n, t in sent.items()))
            return ndarrays_to_parameters(peft_state(model)), {}

    return CuriousSecAggFedAvg(**kwargs)


def default_quantization_range(n_clients: int) -> int:
    """The finest SecAgg+ quantisation that cannot overflow: a power of two ``L ≤ 2^30`` with ``n·L < 2^32``
    (the clients' integers are summed modulo ``2^32``, Flower's largest modulus)."""
    return 2 ** min(30, ((2**32 - 1) // n_clients).bit_length() - 1)


def serve_fedavg(grid, history: FlowerHistory, model: PeftModel, n_clients: int, rounds: int,
                  evaluate: Callable[[object], tuple[float, float]]) -> None:
    """A plain run's server: the curious Message-API ``FedAvg`` sees every client's new adapter."""
    from flwr.app import MetricRecord

    strategy = make_curious_fedavg(history, model, fraction_train=1.0, fraction_evaluate=0.0,
                                   min_available_nodes=n_clients, min_train_nodes=n_clients)
    strategy.start(grid=grid, initial_arrays=to_arrays(model), num_rounds=rounds,
                   evaluate_fn=lambda round, arrays: MetricRecord(dict(zip(("loss", "accuracy"), evaluate(arrays)))))


def serve_secagg(grid, context, history: FlowerHistory, model: PeftModel, n_clients: int, rounds: int,
                  evaluate: Callable[[object], tuple[float, float]], max_weight: int) -> None:
    """A SecAgg+ run's server: ``DefaultWorkflow`` with ``SecAggPlusWorkflow`` as its fit step (every client
    holds a share of every other's key, 2 of them rebuild one) around the curious legacy ``FedAvg``."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    def legacy_evaluate(server_round, arrays, config):
        loss, accuracy = evaluate(arrays)
        return loss, {"accuracy": accuracy}

    strategy = make_curious_secagg_fedavg(
        history, model, fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n_clients,
        min_available_clients=n_clients, initial_parameters=ndarrays_to_parameters(peft_state(model)),
        on_fit_config_fn=lambda server_round: {"server-round": server_round},
        evaluate_fn=legacy_evaluate)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=1.0, reconstruction_threshold=2 / 3, max_weight=float(max_weight),
        clipping_range=history.clipping_range, quantization_range=history.quantization_range))
    workflow(grid, LegacyContext(context, config=ServerConfig(num_rounds=rounds), strategy=strategy))


def secagg_ranges(n_clients: int, clipping_range: float, quantization_range: int | None) -> tuple[float, int]:
    """Check a SecAgg+ set-up; return its clipping range and its number of levels (``None`` or 0: the finest
    that cannot overflow)."""
    if n_clients < 2:
        raise ValueError(f"SecAgg+ hides each update in a sum of at least 2 clients, got n_clients={n_clients}.")
    finest = default_quantization_range(n_clients)
    quantization_range = quantization_range or finest
    if not clipping_range > 0 or not 0 < quantization_range <= finest:
        raise ValueError(f"need clipping_range > 0 and 0 < quantization_range <= {finest} for {n_clients} "
                         f"clients (no overflow), got {clipping_range!r} and {quantization_range!r}.")
    return float(clipping_range), int(quantization_range)


def secagg_quantized(update: Mapping[str, torch.Tensor], clipping_range: float,
                     quantization_range: int) -> OrderedDict[str, torch.Tensor]:
    """One update clipped, quantised and dequantised exactly as a SecAgg+ client does (without masks).

    The control experiment: attacking it shows what quantisation alone does, apart from aggregation.
    """
    require_flower()
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    arrays = delta_arrays(update, list(update))
    return update_from_arrays(dequantize(quantize(arrays, clipping_range, quantization_range), clipping_range,
                                         quantization_range), update)
