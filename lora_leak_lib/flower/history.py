"""What the curious Flower server recorded (``FlowerHistory``), and the attacks scored on it."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from .. import data, experiments, fl
from ..attacks import Knowledge
from ..message import LogEntry, SharedUpdate


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
