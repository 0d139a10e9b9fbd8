"""The course's federated clients on Flower: adapter-only messages, FedAvg, and a curious strategy.

Optional: needs ``pip install -e ".[flower]"``. The clients run the same ``fl.Client`` logic as the
in-process simulation; the curious strategy turns every reply into the ``SharedUpdate`` attacks consume.
With ``run_flower(..., secure_aggregation=True)`` the same clients run Flower's SecAgg+ protocol
(``SecAggPlusWorkflow`` and ``secaggplus_mod``): the curious strategy then sees only each round's
aggregate, which ``FlowerHistory.captured_aggregate`` hands to the same attacks.
``run_flower`` runs them as a Flower App (``lora_leak_lib.flower_app``) with ``flwr run``, Flower's
supported way to run an app (its Python ``run_simulation`` is deprecated), and reads back what the server kept.
"""
from __future__ import annotations

import os
import pickle
import site
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from peft import PeftModel, get_peft_model_state_dict, set_peft_model_state_dict

from . import config, data, experiments, fl, gradients
from .arrays import from_numpy, to_numpy
from .attacks import Knowledge
from .message import LogEntry, SharedUpdate

INSTALL_HINT = 'Flower is not installed: run `pip install -e ".[flower]"` (flwr[simulation] 1.42).'


def flower_available() -> bool:
    """True when ``flwr`` can be imported."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        return False
    return True


def require_flower() -> None:
    """Raise one clear error, saying how to install the extra, when Flower is missing; switch its telemetry off.

    Flower reports each run (event type, number of nodes, a random id kept in ``~/.flwr/source``) to its
    makers unless ``FLWR_TELEMETRY_ENABLED=0``; a privacy course sends nothing, so its runs set that.
    """
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    if not flower_available():
        raise ValueError(INSTALL_HINT)
    import flwr.supercore.telemetry as telemetry

    telemetry.FLWR_TELEMETRY_ENABLED = "0"  # read once at import: also when flwr came in before this call


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


def peft_state(model: PeftModel) -> list[np.ndarray]:
    """The adapter state as the legacy (``NumPyClient``) API sends it: float32 arrays in peft's key order."""
    return [to_numpy(v.float()).copy() for v in get_peft_model_state_dict(model).values()]


def from_arrays(model: PeftModel, arrays) -> OrderedDict[str, torch.Tensor]:
    """Load a travelling ``ArrayRecord`` (or a list of arrays in peft's key order) into ``model``; return it
    under the course's parameter names."""
    if not isinstance(arrays, Mapping):
        keys = list(get_peft_model_state_dict(model))
        if len(keys) != len(arrays):
            raise ValueError(f"got {len(arrays)} arrays for an adapter of {len(keys)} tensors: a different set-up?")
        arrays = dict(zip(keys, arrays))
    state = get_peft_model_state_dict(model)
    set_peft_model_state_dict(model, {k: from_numpy(to_numpy(v), like=state[k]) for k, v in arrays.items()})
    return gradients.trainable_state(model)


def delta_arrays(update: Mapping[str, torch.Tensor], names: Sequence[str]) -> list[np.ndarray]:
    """An update as SecAgg+ carries it: float64 arrays in ``names``' order. The mod scales and quantises in the
    arrays' dtype, and float32 would round (Δ + clipping_range) to 2^-24, far coarser than the 2^30 levels
    SecAgg+ can carry."""
    return [to_numpy(update[n].double()) for n in names]


def update_from_arrays(arrays: Sequence, like: Mapping[str, torch.Tensor],
                       dtype: torch.dtype | None = None) -> OrderedDict[str, torch.Tensor]:
    """Arrays in ``like``'s key order back as an update on ``like``'s device (in ``dtype``, default ``like``'s)."""
    return OrderedDict((n, from_numpy(a, like=t, dtype=dtype)) for (n, t), a in zip(like.items(), arrays))


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


@dataclass(frozen=True)
class Reply:
    """What a SecAgg+ server learns about one reply in the clear: who sent it and its weights, no tensor."""

    client_id: int
    round: int
    n_examples: int
    batch_size: int
    clipped: int  # entries the client reports beyond the clipping range (SecAgg+ clipped them)


@dataclass
class FlowerHistory:
    """A Flower run as the curious server recorded it: per-round evaluation, the message log, every update.

    Under SecAgg+ (``secure``) ``received`` and ``log`` stay empty: the server records each round's
    dequantised aggregate in ``aggregates``, what every reply said in the clear in ``replies``, and in
    ``distinct_payloads`` how many different parameter payloads its strategy was handed (1: only the
    aggregate). ``shards`` are the clients' private data, kept only to score attacks (``private_texts``).
    The Flower server writes it with ``torch.save``; ``run_flower`` loads it and adds ``flower_log``.
    """

    setup: fl.FederatedSetup
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    sent: dict[int, OrderedDict[str, torch.Tensor]] = field(default_factory=dict)
    received: dict[tuple[int, int], SharedUpdate] = field(default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    secure: bool = False
    aggregates: dict[int, OrderedDict[str, torch.Tensor]] = field(default_factory=dict)
    replies: dict[tuple[int, int], Reply] = field(default_factory=dict)
    distinct_payloads: dict[int, int] = field(default_factory=dict)
    clipping_range: float | None = None
    quantization_range: int | None = None
    quantization_step: float | None = None  # 2·clipping_range / quantization_range, per weighted entry
    error_bound: float | None = None  # the most quantisation can move an entry of the aggregate
    shards: list[list[data.Example]] = field(default_factory=list, repr=False)
    flower_log: str = field(default="", repr=False)  # what Flower's processes printed (run_flower)

    def captured(self, client_id: int, round: int) -> SharedUpdate:
        """The ``SharedUpdate`` of one client in one round, exactly as ``fl.Server.captured`` builds it."""
        if self.secure:
            raise ValueError("under SecAgg+ the server never sees one client's update: "
                             "use history.captured_aggregate(round).")
        server = fl.Server(self.setup, self.sent[round])
        server.sent, server.received = self.sent, self.received
        return server.captured(client_id, round)

    def aggregate(self, round: int) -> OrderedDict[str, torch.Tensor]:
        """The round's FedAvg update ``Σ n_i Δ_i / Σ n_i``: as SecAgg+ revealed it (float64, dequantised), or
        computed from the replies."""
        if round in self.aggregates:
            return self.aggregates[round]
        messages = fl.round_messages(self.received, round)
        if not messages:
            raise ValueError(f"no aggregate for round {round}: the run has rounds 0 to {len(self.sent) - 1}.")
        return fl.weighted_mean([m.update for m in messages], [m.n_examples for m in messages])

    def captured_aggregate(self, round: int) -> SharedUpdate:
        """The round's aggregate as one ``SharedUpdate``: one batch of every client's sentences (``client_id=-1``)."""
        replies = fl.round_messages({**self.received, **self.replies}, round)
        update = OrderedDict((n, t.float()) for n, t in self.aggregate(round).items())
        return SharedUpdate(update, self.sent[round], self.setup, -1, round, sum(m.n_examples for m in replies),
                            sum(m.batch_size for m in replies)).copy()

    def private_texts(self, round: int, client_id: int | None = None) -> list[str]:
        """The sentences client ``client_id`` (``None``: every client) trained on in ``round``.

        Ground truth for scoring attacks, rebuilt from the private shards; no server ever holds it.
        """
        ids = range(len(self.shards)) if client_id is None else [client_id]
        texts: list[str] = []
        for i in ids:
            client = fl.Client(i, self.shards[i], None, self.setup, self.setup.model_seed)  # run_flower: one seed
            for step in range(self.setup.local_steps):
                texts += [e.text for e in client.batch(round, step) if e.text not in texts]
        return texts


def attack_scores(history: FlowerHistory, round: int, client_id: int | None = None, attack: str = "lora-best",
                  transform: Callable[[OrderedDict[str, torch.Tensor]], OrderedDict[str, torch.Tensor]] | None = None
                  ) -> list[dict]:
    """Attack one client's update (``client_id=None``: the round's aggregate) and score each private sentence.

    The attacker is told nothing but the message (``Knowledge()``); reconstructions are paired with the
    sentences by the Hungarian assignment on ROUGE-1 (``experiments.score``), each row holding the scores plus
    ``original`` and ``reconstruction``.
    ``transform`` changes the update before the attack (e.g. ``secagg_quantized``, for a control).
    """
    shared = history.captured_aggregate(round) if client_id is None else history.captured(client_id, round)
    if transform is not None:
        shared = replace(shared, update=transform(shared.update))
    texts = history.private_texts(round, client_id)
    return experiments.attack_update(shared, texts, attack, Knowledge())


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


def _serve_fedavg(grid, history: FlowerHistory, model: PeftModel, n_clients: int, rounds: int,
                  evaluate: Callable[[object], tuple[float, float]]) -> None:
    """A plain run's server: the curious Message-API ``FedAvg`` sees every client's new adapter."""
    from flwr.app import MetricRecord

    strategy = make_curious_fedavg(history, model, fraction_train=1.0, fraction_evaluate=0.0,
                                   min_available_nodes=n_clients, min_train_nodes=n_clients)
    strategy.start(grid=grid, initial_arrays=to_arrays(model), num_rounds=rounds,
                   evaluate_fn=lambda round, arrays: MetricRecord(dict(zip(("loss", "accuracy"), evaluate(arrays)))))


def _serve_secagg(grid, context, history: FlowerHistory, model: PeftModel, n_clients: int, rounds: int,
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
        loss, accuracy = fl.evaluate(model, job.evaluation, job.setup.model_name)
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
        _serve_secagg(grid, context, history, model, n_clients, rounds, evaluate, weight)
    else:
        _serve_fedavg(grid, history, model, n_clients, rounds, evaluate)
    torch.save(history, str(run_config["history"]))


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


def run_flower(model_name: str = "tiny-bert", n_clients: int = 3, rounds: int = 2, *,
               source: str | Path | Sequence[data.Example] | None = None, limit: int | None = None,
               held_out: float = 0.25, rank: int = 8, alpha: float | None = None, lr: float = 3e-3,
               local_steps: int = 2, optimizer: str = "adam", batch_size: int = 8, seed: int = 0,
               make_client: Callable[..., fl.Client] = fl.Client, secure_aggregation: bool = False,
               clipping_range: float = 1.0, quantization_range: int | None = None,
               quiet: bool = True) -> FlowerHistory:
    """``fl.run_federated`` with protocol FedAvg, on Flower's simulation runtime (Ray), one node per client.

    Same arguments, data split and seeds as the in-process run, so the captured updates agree with it.
    The run is a Flower App (``lora_leak_lib/flower_app``) started with ``flwr run`` on a SuperLink of its
    own (see ``launch``); ``quiet=False`` prints Flower's log as it runs, and ``history.flower_log`` keeps it.
    With ``secure_aggregation`` the clients send their deltas through Flower's SecAgg+ protocol: each clips
    ``(n_i / max n) · Δ_i`` to ``±clipping_range`` and quantises it to ``quantization_range`` levels
    (default: the finest that cannot overflow, ``2^30`` for 3 clients), and the server learns only the
    weighted mean, to within ``history.error_bound``. LoRA deltas are small (about ``1e-3`` in ``lora_A``,
    at most ``0.25`` in the head at ``lr=0.5``): the default range 1 keeps the step near ``2e-9``.
    """
    require_flower()
    if secure_aggregation:
        clipping_range, quantization_range = secagg_ranges(n_clients, clipping_range, quantization_range)
    setup = fl.FederatedSetup(model_name, rank, alpha, protocol="fedavg", lr=lr, local_steps=local_steps,
                              optimizer=optimizer, batch_size=batch_size, model_seed=seed)
    shards, evaluation = fl.split_among_clients(fl.load_examples(source, limit, seed), n_clients, held_out, seed)
    from ray import cloudpickle

    with tempfile.TemporaryDirectory(prefix="lora-leak-flower-") as folder:
        run = Path(folder)
        with open(run / "job.pkl", "wb") as file:
            cloudpickle.dump(FlowerJob(setup, shards, evaluation, seed, make_client), file)
        log = launch(run, n_clients, {
            "job": str(run / "job.pkl"), "history": str(run / "history.pt"), "num-server-rounds": rounds,
            "secure-aggregation": secure_aggregation, "clipping-range": float(clipping_range),
            "quantization-range": int(quantization_range or 0)}, quiet)
        if not (run / "history.pt").exists():
            raise RuntimeError("the Flower run ended without a history; its log ends with:\n"
                               + "\n".join(log.splitlines()[-60:]))
        # Flower's processes chose their own device: the history comes back to this process's.
        history = torch.load(run / "history.pt", weights_only=False, map_location=config.device())
    history.flower_log = log
    done = len(history.aggregates) if secure_aggregation else len(history.received) // n_clients
    if len(history.sent) != rounds or done != rounds:
        raise RuntimeError(f"the Flower run finished {done} of {rounds} rounds: see history.flower_log.")
    clipped = sum(r.clipped for r in history.replies.values())
    if clipped:
        warnings.warn(f"SecAgg+ clipped {clipped} update entries at ±{clipping_range}: raise clipping_range.",
                      stacklevel=2)
    return history


APP = Path(__file__).parent / "flower_app"  # the Flower App that run_flower launches


def flower_env(run: Path) -> dict[str, str]:
    """The environment of every Flower process of a run in folder ``run``.

    Flower's telemetry, Flower's update check and Ray's usage stats off (nothing leaves the machine),
    Flower's home (installed app, connection config, telemetry id) inside ``run``, this interpreter's
    scripts first on ``PATH`` (the SuperLink starts ``flower-superexec`` and ``flwr-simulation`` by name) and,
    from a checkout, this copy of the library first on ``PYTHONPATH``.
    """
    env = dict(os.environ, FLWR_TELEMETRY_ENABLED="0", FLWR_DISABLE_UPDATE_CHECK="1", RAY_USAGE_STATS_ENABLED="0",
               FLWR_HOME=str(run / "home"))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    root = str(Path(__file__).parents[1])
    if root not in {*site.getsitepackages(), site.getusersitepackages()}:  # a checkout: the same code everywhere
        env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


def launch(run: Path, n_clients: int, run_config: Mapping[str, object], quiet: bool = True) -> str:
    """Run the course's Flower App the way Flower 1.42 runs an app: ``flwr run`` against a SuperLink.

    The SuperLink is this run's own (``flower-superlink --simulation`` on a free local port, its state in
    memory, no runtime dependency installation) and stops when the run ends; it starts the simulation
    runtime (``flwr-simulation``: the ``ServerApp`` in a thread, one Ray actor per ``num_cpus=1`` share
    running the ``ClientApp`` of ``n_clients`` simulated SuperNodes). ``run_config`` overrides the app's
    ``[tool.flwr.app.config]``. Return Flower's log: the SuperLink's, then the run's log stream."""
    import psutil
    import tomli_w

    env = flower_env(run)
    home = Path(env["FLWR_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (home / "config.toml").write_text(tomli_w.dumps(
        {"superlink": {"default": "course", "course": {"address": f"127.0.0.1:{port}", "insecure": True}}}))
    (run / "run-config.toml").write_text(tomli_w.dumps(dict(run_config)))
    superlink_log = run / "superlink.log"
    with open(superlink_log, "w") as out:
        superlink = subprocess.Popen(
            ["flower-superlink", "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port),
             "--disable-runtime-dependency-installation"], env=env, stdout=out, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        while not _serving(port):
            if superlink.poll() is not None:
                raise RuntimeError(f"the Flower SuperLink exited with code {superlink.returncode}:\n"
                                   + superlink_log.read_text())
            time.sleep(0.2)
        federation = (f"num-supernodes={n_clients} client-resources-num-cpus=1 client-resources-num-gpus=0.0 "
                      f"verbose={str(not quiet).lower()}")
        with subprocess.Popen(["flwr", "run", str(APP), "course", "--run-config", str(run / "run-config.toml"),
                               "--federation-config", federation, "--stream"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as stream:
            for line in stream.stdout:
                lines.append(line)
                if not quiet:
                    print(line, end="", flush=True)
    finally:
        try:
            runtime = psutil.Process(superlink.pid).children(recursive=True)  # SuperExec, simulation, Ray
        except psutil.Error:
            runtime = []
        superlink.terminate()
        try:
            superlink.wait(timeout=60)
        except subprocess.TimeoutExpired:
            superlink.kill()
        for process in psutil.wait_procs(runtime, timeout=60)[1]:
            process.kill()
    return f"--- the SuperLink's log ---\n{superlink_log.read_text()}--- the run's log ---\n{''.join(lines)}"


def _serving(port: int) -> bool:
    """True once the SuperLink on ``port`` answers its health check."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
