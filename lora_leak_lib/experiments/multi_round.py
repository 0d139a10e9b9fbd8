"""A server that watches one client over one round or several: simulate its R messages (FedSGD gradients or FedAvg
deltas, the same batch or one drawn afresh each round, from an honest or a malicious server) and attack them;
``attack_texts`` is the one-batch case every front end runs.

Why several rounds help: every first-layer ``lora_A`` gradient of round ``t`` is ``s·B_tᵀ·G`` with ``G = Σ δ x_tᵀ``,
so its rows lie in the span of the same inputs whatever the round; each round's ``B_t`` (and ``δ``) mixes them
differently, and R rounds stack ``R·2r`` directions of the span instead of ``2r``. A FedAvg delta of ``A`` after
E local SGD steps is ``−lr·Σ_e dL/dA_e``, a sum of E gradients of the same inputs: still in their span. Adam's
delta divides element by element and leaves that span; a batch drawn afresh each round mixes the inputs of every
sentence the client drew.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from .. import config, data, fl, malicious, models
from ..attacks import Case, Knowledge, get_attack
from ..checks import SERVERS, check_int, check_positive_int
from ..message import FederatedSetup, SharedUpdate, check_protocol
from .core import DEFAULT_TRAINED_STEPS, SentenceResult, check_trained_steps, longest, result_rows

"""What the server sends: the honest global adapter, or one it crafted (``malicious.craft_adapter``)."""


@dataclass(frozen=True)
class Watch:
    """How the server watches the client: ``observed_rounds`` consecutive rounds of ``protocol`` (FedAvg: the
    client's ``local_steps`` steps of ``optimizer`` at ``lr``) from an honest or malicious ``server``.

    ``batch_size`` ``None``: the client sends all its sentences each round (the same batch R times); smaller
    than the client's set: each local step draws a new batch from it (``fl.Client.batch``).
    """

    observed_rounds: int = 1
    protocol: str = "fedsgd"
    local_steps: int = 1
    optimizer: str = "sgd"
    lr: float = 0.05
    batch_size: int | None = None
    server: str = "honest"

    def __post_init__(self) -> None:
        check_positive_int(self.observed_rounds, "observed_rounds", "the rounds the server watches this client")
        check_protocol(self.protocol)
        check_positive_int(self.local_steps, "local_steps")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        if self.server not in SERVERS:
            raise ValueError(f"unknown server {self.server!r}: choose one of {', '.join(SERVERS)}.")

    def label(self) -> str:
        protocol = "FedSGD" if self.protocol == "fedsgd" else f"FedAvg E={self.local_steps} {self.optimizer}"
        drawn = "" if self.batch_size is None else f", batch {self.batch_size} drawn each round"
        return f"R={self.observed_rounds}, {protocol}{drawn}{', malicious server' if self.server != 'honest' else ''}"


def watched_messages(texts: Sequence[str], labels: Sequence[int], model: models.PublicModel = models.TINY_BERT, *,
                     rank: int = 8, trained_steps: int = DEFAULT_TRAINED_STEPS, watch: Watch = Watch(), seed: int = 0,
                     train_head: bool = True) -> tuple[list[SharedUpdate], list[list[str]]]:
    """The client's messages in rounds ``trained_steps .. trained_steps + R − 1`` (the global adapter trained that
    many steps before each) and the sentences each one was computed on.

    ``texts`` are the client's private sentences: one batch (``watch.batch_size`` ``None``) or the local set it
    draws batches from. A malicious server sends ``malicious.craft_adapter`` of each round's global adapter.
    """
    fl.check_labels(texts, labels)
    check_trained_steps(trained_steps + watch.observed_rounds - 1)
    public = [e for e in data.course_sentences() if e.text not in texts]  # the other clients' data
    config.set_seed(seed)
    batch = watch.batch_size or len(texts)
    setup = FederatedSetup(model=model, rank=rank, train_head=train_head, model_seed=seed, protocol=watch.protocol,
                           lr=watch.lr, local_steps=watch.local_steps, optimizer=watch.optimizer, batch_size=batch)
    model = setup.build_model()
    states = fl.trained_adapters(setup, public, trained_steps, watch.observed_rounds, seed)
    client = fl.Client(0, [data.Example(t, int(y)) for t, y in zip(texts, labels)], model, setup, seed)
    messages, seen = [], []
    for r, state in enumerate(states):
        round = trained_steps + r
        sent = malicious.craft_adapter(state, config.derive_seed(seed, round)) if watch.server == "malicious" else state
        messages.append(client.client_update(sent, round))
        seen.append(list(dict.fromkeys(e.text for b in client.last_batches for e in b)))
    return messages, seen


def attack_watched(texts: Sequence[str], labels: Sequence[int] | None = None,
                   model: models.PublicModel = models.TINY_BERT, *,
                   rank: int = 8, trained_steps: int = DEFAULT_TRAINED_STEPS, watch: Watch = Watch(),
                   attack: str = "lora-best", seed: int = 0, train_head: bool = True, know_length: bool = True,
                   time_span_test: bool = False, **knobs) -> list[SentenceResult]:
    """Simulate the watched rounds, attack the first message with the others known, score every sentence.

    With the same batch every round the attack looks for that batch. With a batch drawn afresh each round the
    stacked rows span the inputs of every sentence the client drew, so the attack is told that many sentences
    (a batch attack on the union) and scored against all of them. One ``SentenceResult`` per sentence;
    ``time_span_test`` also times the span test alone (``span_test_seconds``, for the cost benchmark).
    """
    method = get_attack(attack, **knobs)
    labels = list(labels) if labels is not None else [0] * len(texts)
    messages, seen = watched_messages(texts, labels, model, rank=rank, trained_steps=trained_steps, watch=watch,
                                      seed=seed, train_head=train_head)
    drawn = list(dict.fromkeys(t for s in seen for t in s))
    references = seen[0] if watch.batch_size is None else drawn
    length = longest(references, model.tokenizer) if know_length else None
    knowledge = Knowledge(length=length, batch_size=len(references), other_rounds=tuple(messages[1:]))
    rebuilt = method.reconstruct(messages[0], knowledge)
    test_seconds = span_test_seconds(messages[0], knowledge) if time_span_test else None
    return result_rows(references, rebuilt, messages[0], knowledge, attack, server=watch.server,
                       resampled=watch.batch_size is not None, span_test_seconds=test_seconds)


def span_test_seconds(shared: SharedUpdate, knowledge: Knowledge) -> float | None:
    """Seconds of the span test alone on this message (the stacked rows' basis, then one product of the whole
    vocabulary at every position with it), the part of an attack that is not search; ``None`` at round 0."""
    case = Case(shared, knowledge)
    if case.first_round or knowledge.length is None:
        return None
    start = time.perf_counter()
    case.inputs.span_distances(case.basis, knowledge.length + 2, case.vocab)
    return time.perf_counter() - start


def attack_texts(texts: Sequence[str], labels: Sequence[int] | None = None,
                 model: models.PublicModel = models.TINY_BERT, *,
                 rank: int = 8, trained_steps: int = DEFAULT_TRAINED_STEPS, attack: str = "lora-best", seed: int = 0,
                 train_head: bool = True, know_length: bool = True, observed_rounds: int = 1,
                 server: str = "honest", **knobs) -> list[SentenceResult]:
    """Simulate one client's LoRA update on ``texts`` (one batch), attack it, and score every sentence.

    Returns one ``SentenceResult`` per sentence: ``original``, ``reconstruction``, ``token_accuracy``, ROUGE,
    ``seconds`` (attack time per sentence) and the set-up. The global adapter first trains ``trained_steps``
    steps on other clients' sentences (0: the first round, ``B = 0``). With ``know_length`` the server is told
    the longest sentence's length (``Knowledge.length``), as DLG needs. With ``observed_rounds`` R > 1 the client
    sends the same batch in R consecutive rounds (the global adapter trained ``trained_steps``,
    ``trained_steps + 1``, ... steps) and the server attacks the first with the others known
    (``Knowledge.other_rounds``). ``server="malicious"`` sends a crafted adapter (``malicious.craft_adapter``:
    a random ``B``, so even round 0 leaks). Other variants (FedAvg, batches drawn afresh): ``attack_watched``.
    """
    check_trained_steps(trained_steps)
    check_int(observed_rounds, "observed_rounds", hint="it counts the rounds the server watches this client")
    check_trained_steps(trained_steps + observed_rounds - 1)
    return attack_watched(list(texts), labels, model, rank=rank, trained_steps=trained_steps,
                          watch=Watch(observed_rounds=observed_rounds, server=server), attack=attack, seed=seed,
                          train_head=train_head, know_length=know_length, **knobs)
