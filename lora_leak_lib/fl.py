"""Federated LoRA fine-tuning in one process: clients, a server, and what the curious server captures."""
from __future__ import annotations

import random
from numbers import Integral
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from torch import nn
from transformers import PreTrainedTokenizerBase

from . import config, data, families, gradients, models, training
from .checks import check_int
from .message import PROTOCOLS, FederatedSetup, LogEntry, SharedUpdate, State, check_protocol, round_messages

__all__ = ["PROTOCOLS", "Client", "FederatedHistory", "FederatedSetup", "LogEntry", "Server", "SharedUpdate",
           "capture_full_update", "capture_update", "check_protocol", "cosine_similarity", "evaluate",
           "flatten", "load_examples", "round_messages", "run_federated", "split_among_clients", "trained_adapter",
           "trained_adapters", "weighted_mean"]


class Client:
    """One participant: private examples that never leave it, and the local update it runs on the global adapter.

    In this in-process simulation several clients may share one ``model`` object: each update starts by
    loading the global state the server sent, so nothing of one client remains for the next.
    """

    def __init__(self, client_id: int, examples: Sequence[data.Example], model: PeftModel,
                 setup: FederatedSetup, seed: int = 0) -> None:
        if not examples:
            raise ValueError(f"client {client_id} has no examples: give every client at least one sentence.")
        self.client_id, self.examples, self.model, self.setup, self.seed = client_id, list(examples), model, setup, seed
        self.tokenizer = setup.model.tokenizer
        self.last_batches: list[list[data.Example]] = []  # kept for checking attacks; never sent

    def batch(self, round: int, step: int = 0) -> list[data.Example]:
        """The private batch of one local step: all examples when they fit, else a draw fixed by
        (seed, client, round, step), so that a re-run sends the same update."""
        if self.setup.batch_size >= len(self.examples):
            return list(self.examples)
        generator = torch.Generator().manual_seed(config.derive_seed(self.seed, self.client_id, round, step))
        index = torch.randperm(len(self.examples), generator=generator, device="cpu")[: self.setup.batch_size]
        return [self.examples[i] for i in sorted(index.tolist())]

    def step_gradient(self, round: int, step: int) -> tuple[State, float]:
        """The gradient of one local step on its private batch (a DP client clips and noises it)."""
        batch = self.batch(round, step)
        self.last_batches.append(batch)
        return training.batch_gradient(self.model, self.tokenizer, batch)

    def aggregation_weight(self) -> int:
        """``n_examples`` of the message: the batch in FedSGD, the local dataset in FedAvg (as Flower sends it)."""
        return len(self.last_batches[0]) if self.setup.protocol == "fedsgd" else len(self.examples)

    def client_update(self, global_state: dict[str, torch.Tensor], round: int = 0) -> SharedUpdate:
        """Load the global adapter, run the protocol on private data, and return only the trainable tensors.

        FedSGD sends the gradient of one batch; FedAvg runs E local steps (``training.local_training``)
        and sends ``θ_after − θ_global``.
        """
        gradients.load_trainable_state(self.model, global_state)
        self.model.eval()  # dropout is 0 anyway; eval keeps every run deterministic
        self.last_batches = []
        if self.setup.protocol == "fedsgd":
            update = self.step_gradient(round, 0)[0]
        else:
            training.local_training(self.model, self.setup.local_steps, lambda step: self.step_gradient(round, step),
                                    self.setup.optimizer, self.setup.lr)
            before = OrderedDict((n, global_state[n]) for n in gradients.trainable_names(self.model))
            update = gradients.weight_delta(before, gradients.trainable_state(self.model))
        return SharedUpdate(OrderedDict(update), OrderedDict(global_state), self.setup, self.client_id, round,
                            self.aggregation_weight(), len(self.last_batches[0]))


def weighted_mean(updates: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]) -> State:
    """``Σ w_i u_i / Σ w_i`` tensor by tensor: each ``A`` and each ``B`` is averaged on its own."""
    if not updates or len(updates) != len(weights):
        raise ValueError("give one weight per update and at least one update.")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {list(weights)}.")
    names = list(updates[0])
    if any(list(u) != names for u in updates):
        raise ValueError("the updates hold different tensor names: every client must send the same adapter.")
    total = float(sum(weights))
    return OrderedDict((n, sum(w * u[n] for w, u in zip(weights, updates)) / total) for n in names)


class Server:
    """The aggregator: sends the global adapter, averages what comes back, and logs and keeps every message.

    Being honest-but-curious, it can hand any client's update, with the state it sent that round, to an
    attack: ``server.captured(client_id, round)`` returns the ``SharedUpdate`` every attack consumes.
    """

    def __init__(self, setup: FederatedSetup, initial_state: dict[str, torch.Tensor]) -> None:
        self.setup = setup
        self.global_state: State = OrderedDict((n, t.detach().clone()) for n, t in initial_state.items())
        self.sent: dict[int, State] = {}  # round -> global state sent that round
        self.received: dict[tuple[int, int], SharedUpdate] = {}  # (client, round) -> message
        self.log: list[LogEntry] = []

    def broadcast(self, round: int) -> State:
        """The global adapter state for ``round`` (a copy per round is kept: the attacker hook needs it)."""
        self.sent[round] = OrderedDict((n, t.clone()) for n, t in self.global_state.items())
        return OrderedDict((n, t.clone()) for n, t in self.global_state.items())

    def receive(self, message: SharedUpdate) -> LogEntry:
        """Log and keep one client message; refuse tensors that are not the adapter the server sent."""
        if list(message.update) != list(self.global_state):
            raise ValueError(f"client {message.client_id} sent tensors other than the trainable adapter.")
        entry = LogEntry.of(message)
        self.received[(message.client_id, message.round)] = message
        self.log.append(entry)
        return entry

    def aggregate(self, round: int) -> State:
        """FedAvg of this round's messages weighted by examples, applied to the global state; returns it."""
        messages = round_messages(self.received, round)
        if not messages:
            raise ValueError(f"no client message arrived in round {round}: nothing to aggregate.")
        mean = weighted_mean([m.update for m in messages], [m.n_examples for m in messages])
        step = -self.setup.lr if self.setup.protocol == "fedsgd" else 1.0
        self.global_state = OrderedDict((n, t + step * mean[n]) for n, t in self.global_state.items())
        return self.global_state

    def captured(self, client_id: int, round: int) -> SharedUpdate:
        """What the curious server hands an attack: one client's update and the global state it was computed on."""
        if (client_id, round) not in self.received:
            raise ValueError(f"no message from client {client_id} in round {round}: see server.log for what arrived.")
        return replace(self.received[(client_id, round)], global_state=self.sent[round]).copy()


def flatten(update: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every tensor of an update in one float64 vector, in the order the client sent them."""
    return torch.cat([t.detach().double().flatten() for t in update.values()])


def cosine_similarity(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Cosine of the angle between two updates seen as single vectors (1: same direction)."""
    if list(a) != list(b):
        raise ValueError("the two updates hold different tensor names: compare updates of the same adapter.")
    x, y = flatten(a), flatten(b)
    return float(x @ y / (x.norm() * y.norm()).clamp_min(1e-300))


def split_among_clients(examples: Sequence[data.Example], n_clients: int, held_out: float = 0.25,
                        seed: int = 0) -> tuple[list[list[data.Example]], list[data.Example]]:
    """Shuffle, keep a label-balanced held-out share for evaluation, and deal the rest round-robin to clients."""
    check_int(n_clients, "n_clients", hint="try 4")
    if not 0 <= held_out < 1:
        raise ValueError(f"held_out is the share kept for evaluation, in [0, 1), got {held_out!r}.")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    by_label = [[e for e in shuffled if e.label == label] for label in sorted({e.label for e in shuffled})]
    evaluation = [e for group in by_label for e in group[: round(held_out * len(group))]]
    chosen = set(map(id, evaluation))
    training = [e for e in shuffled if id(e) not in chosen]
    if n_clients > len(training):
        raise ValueError(f"{n_clients} clients but only {len(training)} training sentences: "
                         f"use at most {len(training)} clients or more data.")
    return [training[i::n_clients] for i in range(n_clients)], evaluation


@torch.no_grad()
def evaluate(model: PeftModel, examples: Sequence[data.Example], tokenizer: PreTrainedTokenizerBase,
             batch_size: int = 64) -> tuple[float, float]:
    """Mean loss and accuracy of the model on held-out examples: of the label for a classifier, of every
    next token for a decoder."""
    if not examples:
        raise ValueError("no held-out examples to evaluate on: set held_out > 0.")
    kind, total_loss, correct, count = families.family_of(model), 0.0, 0, 0
    model.eval()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        encoded = data.encode(tokenizer, [e.text for e in chunk], families.max_tokens(model))
        logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits
        if kind.is_decoder:
            keep = encoded["attention_mask"][:, 1:].bool()
            targets = encoded["input_ids"][:, 1:]
            n = int(keep.sum())
            total_loss += float(kind.loss(logits, encoded["input_ids"], encoded["attention_mask"])) * n
            correct += int(((logits[:, :-1].argmax(-1) == targets) & keep).sum())
            count += n
        else:
            labels = torch.tensor([e.label for e in chunk], device=logits.device)
            total_loss += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
            count += len(chunk)
    return total_loss / count, correct / count


@dataclass
class FederatedHistory:
    """A federated run: held-out loss and accuracy before round 0 (index 0) and after each round, and the log."""

    setup: FederatedSetup
    loss: list[float]
    accuracy: list[float]
    server: Server
    clients: list[Client]
    held_out: list[data.Example]
    model: PeftModel = field(repr=False)

    @property
    def log(self) -> list[LogEntry]:
        """Every message the server received, in arrival order."""
        return self.server.log

    def client_update(self, client_id: int, round: int, **changes) -> SharedUpdate:
        """Re-run one client from the global state of ``round`` with a changed set-up (e.g. ``local_steps=4``).

        Nothing is logged or aggregated: this is the course asking "what would this client have sent?".
        """
        if not 0 <= client_id < len(self.clients) or round not in self.server.sent:
            raise ValueError(f"no client {client_id} in round {round}: clients 0 to {len(self.clients) - 1}, "
                             f"rounds 0 to {len(self.server.sent) - 1}.")
        original = self.clients[client_id]
        client = Client(client_id, original.examples, self.model, replace(self.setup, **changes), original.seed)
        try:
            return client.client_update(self.server.sent[round], round)
        finally:
            gradients.load_trainable_state(self.model, self.server.global_state)

    def bytes_per_round(self) -> list[int]:
        """Bytes uploaded by all clients together, round by round."""
        totals: dict[int, int] = {}
        for entry in self.log:
            totals[entry.round] = totals.get(entry.round, 0) + entry.bytes
        return [totals[r] for r in sorted(totals)]


def load_examples(source: str | Path | Sequence[data.Example] | None, limit: int | None = None,
                  seed: int = 0) -> list[data.Example]:
    """The pool of labelled sentences: the course sentences (``None``), a Rotten Tomatoes folder, or a list."""
    if source is None:
        return data.course_sentences()
    if isinstance(source, (str, Path)):
        return data.rotten_tomatoes(source, limit=limit, seed=seed)
    return list(source)


def run_federated(model: models.PublicModel = models.TINY_BERT, n_clients: int = 4, rounds: int = 10, protocol: str = "fedavg",
                  *, source: str | Path | Sequence[data.Example] | None = None, limit: int | None = None,
                  held_out: float = 0.25, rank: int = 8, alpha: float | None = None,
                  targets: Sequence[str] = (), train_head: bool = True, lr: float = 3e-3,
                  local_steps: int = 2, optimizer: str = "adam", batch_size: int = 8, seed: int = 0,
                  freeze_a: bool = False, frozen_layers: int = 0, progress: bool = True, make_client: Callable[..., Client] = Client,
                  make_server: Callable[..., Server] = Server) -> FederatedHistory:
    """Federated LoRA fine-tuning of a sentiment classifier: ``rounds`` rounds of ``n_clients`` clients.

    ``source`` is ``None`` for the course sentences, a folder with ``rt-polarity.pos/.neg`` for Rotten
    Tomatoes (``limit`` sentences), or a list of ``Example``. Every client takes part in every round.
    ``make_client(client_id, examples, model, setup, seed)`` and ``make_server(setup, initial_state)``
    build the parties; ``lora_leak_lib.defenses`` passes defended ones. The defaults (FedAvg, 2 local
    Adam steps at ``lr=3e-3``) learn on ``minilm``; FedSGD wants ``lr≈0.5``.
    """
    check_protocol(protocol)
    check_int(rounds, "rounds", 0)
    setup = FederatedSetup(model=model, rank=rank, alpha=alpha, targets=tuple(targets), train_head=train_head,
                           model_seed=seed, protocol=protocol, lr=lr, local_steps=local_steps, optimizer=optimizer,
                           batch_size=batch_size, freeze_a=freeze_a, frozen_layers=frozen_layers)
    shards, evaluation = split_among_clients(load_examples(source, limit, seed), n_clients, held_out, seed)
    config.set_seed(seed)
    shared = setup.build_model()
    server = make_server(setup, gradients.trainable_state(shared))
    clients = [make_client(i, shard, shared, setup, seed) for i, shard in enumerate(shards)]
    loss, accuracy = evaluate(shared, evaluation, model.tokenizer)
    history = FederatedHistory(setup, [loss], [accuracy], server, clients, evaluation, shared)
    for r in tqdm(range(rounds), desc=f"{protocol} rounds", disable=not progress):
        state = server.broadcast(r)
        for client in clients:
            server.receive(client.client_update(state, r))
        gradients.load_trainable_state(shared, server.aggregate(r))
        loss, accuracy = evaluate(shared, evaluation, model.tokenizer)
        history.loss.append(loss)
        history.accuracy.append(accuracy)
    return history


def capture_update(texts: Sequence[str], labels: Sequence[int], model: models.PublicModel = models.TINY_BERT, *,
                   rank: int = 8, alpha: float | None = None, targets: Sequence[str] = (),
                   train_head: bool = True, trained_steps: int = 0, seed: int = 0,
                   freeze_a: bool = False) -> SharedUpdate:
    """One client's FedSGD gradient on ``texts`` (one batch) as the server captures it.

    ``trained_steps`` > 0 first trains the global adapter for that many steps on the course sentences (other
    clients' data, not ``texts``), so that ``B ≠ 0`` as after some federated rounds; ``trained_steps=0`` is the
    first round, where ``B = 0`` and every ``dL/dA`` is zero. ``freeze_a`` is FFA-LoRA (``A`` frozen, ``B`` sent).
    """
    check_labels(texts, labels)
    check_int(trained_steps, "trained_steps", 0, hint="it counts the adapter's training steps before this round, 0 or more")
    config.set_seed(seed)
    setup = FederatedSetup(model=model, rank=rank, alpha=alpha, targets=tuple(targets), train_head=train_head,
                           model_seed=seed, protocol="fedsgd", batch_size=len(texts), freeze_a=freeze_a)
    public = [e for e in data.course_sentences() if e.text not in texts]
    return _one_message(setup, trained_adapter(setup, public, trained_steps, seed), texts, labels, trained_steps, seed)


_TRAINED: dict[tuple, State] = {}
"""Global adapter states trained in this process, by (set-up, steps, seed, public texts, device): a benchmark
that captures many sentences under one set-up trains the adapter once. At most ``_TRAINED_KEPT`` are kept."""
_TRAINED_KEPT = 32


def trained_adapters(setup: FederatedSetup, public: Sequence[data.Example], first: int, count: int = 1,
                     seed: int = 0) -> list[State]:
    """The global adapter after ``first``, ``first + 1``, ... ``first + count − 1`` Adam steps on ``public`` (the
    other clients' data): the rounds a server watches, from one training run (``B ≠ 0`` after step 0).

    The training draws only from its own seeded generator, so a cached state is exactly what a fresh training
    to that step gives.
    """
    texts = tuple(e.text for e in public)
    keys = [(setup, first + i, seed, texts, str(config.device())) for i in range(count)]
    if all(key in _TRAINED for key in keys):
        return [_TRAINED[key] for key in keys]
    model, states = setup.build_model(), {}

    def keep(step: int) -> None:
        if step >= first:
            states[step] = gradients.trainable_state(model)

    training.train_adapter(model, setup.model.tokenizer, public, first + count - 1, seed=seed, on_step=keep)
    states[first + count - 1] = gradients.trainable_state(model)
    for key in keys:
        if len(_TRAINED) >= _TRAINED_KEPT:
            _TRAINED.pop(next(iter(_TRAINED)))
        _TRAINED[key] = states[key[1]]
    return [states[key[1]] for key in keys]


def trained_adapter(setup: FederatedSetup, public: Sequence[data.Example], trained_steps: int, seed: int) -> nn.Module:
    """The public model with its global adapter trained ``trained_steps`` Adam steps on ``public`` (``trained_adapters``)."""
    model = setup.build_model()
    gradients.load_trainable_state(model, trained_adapters(setup, public, trained_steps, 1, seed)[0])
    return model.eval()


def capture_full_update(texts: Sequence[str], labels: Sequence[int],
                        model: models.PublicModel = models.TINY_BERT, seed: int = 0) -> SharedUpdate:
    """One client's FedSGD gradient under FULL fine-tuning (no LoRA): every parameter trains and is shared."""
    check_labels(texts, labels)
    config.set_seed(seed)
    setup = FederatedSetup(model=model, model_seed=seed, protocol="fedsgd", batch_size=len(texts),
                           full_finetune=True)
    return _one_message(setup, setup.build_model(), texts, labels, 0, seed)


def check_labels(texts: Sequence[str], labels: Sequence[int], num_labels: int = 2) -> None:
    """One clear error unless there is at least one text and one class index in ``0..num_labels-1`` per text."""
    if not texts or len(texts) != len(labels):
        raise ValueError(f"give at least one text and one label per text, got {len(texts)} texts and "
                         f"{len(labels)} labels.")
    bad = [y for y in labels if isinstance(y, bool) or not isinstance(y, Integral) or not 0 <= y < num_labels]
    if bad:
        raise ValueError(f"label {bad[0]!r} is not a class of this {num_labels}-class task: use 0 to {num_labels - 1}.")


def _one_message(setup: FederatedSetup, model: nn.Module, texts: Sequence[str], labels: Sequence[int],
                 round: int, seed: int) -> SharedUpdate:
    server = Server(setup, gradients.trainable_state(model))
    client = Client(0, [data.Example(t, int(y)) for t, y in zip(texts, labels)], model, setup, seed)
    server.receive(client.client_update(server.broadcast(round), round))
    return server.captured(0, round)
