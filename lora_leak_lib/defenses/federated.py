"""Defended parties for ``fl.run_federated``: clients that transform or privately train their update, and a
server that only ever sees the securely aggregated sum."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import torch

from .. import config, data, families, fl
from ..message import SharedUpdate
from .accountant import epsilon
from .dp import check_dp_knobs, dp_gradient, dp_noise_only, poisson_batch
from .secure_aggregation import decode_fixed_point, mask_update, secure_sum_encoded
from .update import add_noise

Update = OrderedDict[str, torch.Tensor]
UpdateDefence = Callable[[Update, int], Update]
"""A transformation of one message: ``(update, seed) -> defended update`` (the seed drives any randomness)."""


class DefendedClient(fl.Client):
    """A client whose message passes through ``defend`` (clip, noise, top-k, quantise, ...) before it leaves."""

    def __init__(self, client_id: int, examples: Sequence[data.Example], model, setup: fl.FederatedSetup,
                 seed: int = 0, *, defend: UpdateDefence) -> None:
        super().__init__(client_id, examples, model, setup, seed)
        self.defend = defend

    def client_update(self, global_state: dict[str, torch.Tensor], round: int = 0) -> SharedUpdate:
        message = super().client_update(global_state, round)
        seed = config.derive_seed(self.seed, self.client_id, round, 1)
        return replace(message, update=OrderedDict(self.defend(message.update, seed)))


class DPClient(fl.Client):
    """A DP-SGD client: every local step draws a Poisson batch, clips each sentence's gradient to ``max_norm``
    and adds ``N(0, (noise_multiplier · max_norm)²)`` before the step (FedSGD sends that gradient itself).

    The sampling rate is ``batch_size / len(examples)`` (1 when the batch holds every example).
    """

    def __init__(self, client_id: int, examples: Sequence[data.Example], model, setup: fl.FederatedSetup,
                 seed: int = 0, *, max_norm: float, noise_multiplier: float) -> None:
        super().__init__(client_id, examples, model, setup, seed)
        check_dp_knobs(max_norm, noise_multiplier)
        self.max_norm, self.noise_multiplier = max_norm, noise_multiplier

    @property
    def sample_rate(self) -> float:
        return min(1.0, self.setup.batch_size / len(self.examples))

    def step_gradient(self, round: int, step: int) -> tuple[Update, float]:
        """One DP-SGD gradient on a Poisson batch of the private examples (the loss is not released: NaN)."""
        generator = torch.Generator().manual_seed(config.derive_seed(self.seed, self.client_id, round, step, 2))
        batch = [self.examples[i] for i in poisson_batch(len(self.examples), self.sample_rate, generator)]
        self.last_batches.append(batch)
        expected = self.sample_rate * len(self.examples)
        noise_seed = config.derive_seed(self.seed, self.client_id, round, step, 3)
        if not batch:
            shapes = OrderedDict((n, p) for n, p in self.model.named_parameters() if p.requires_grad)
            return dp_noise_only(shapes, self.max_norm, self.noise_multiplier, expected, noise_seed), float("nan")
        encoded = data.encode(self.tokenizer, [e.text for e in batch], families.max_tokens(self.model))
        return dp_gradient(self.model, encoded["input_ids"], encoded["attention_mask"],
                           torch.tensor([e.label for e in batch], device=encoded["input_ids"].device), self.max_norm, self.noise_multiplier,
                           expected, noise_seed), float("nan")

    def aggregation_weight(self) -> int:
        """FedSGD: the expected Poisson batch, rounded (at least 1); FedAvg: the local dataset."""
        if self.setup.protocol == "fedsgd":
            return max(1, round_half(self.sample_rate * len(self.examples)))
        return len(self.examples)

    def epsilon(self, rounds: int, delta: float = 1e-5) -> float:
        """ε this client has spent after taking part in ``rounds`` rounds (RDP accountant, all its steps)."""
        steps = rounds * (1 if self.setup.protocol == "fedsgd" else self.setup.local_steps)
        return epsilon(self.noise_multiplier, self.sample_rate, steps, delta)[0]


def round_half(x: float) -> int:
    return int(np.floor(x + 0.5))


class SecureAggregationClient(fl.Client):
    """A client that sends ``n_examples · update`` masked with pairwise masks shared with the round's other clients."""

    def __init__(self, client_id: int, examples: Sequence[data.Example], model, setup: fl.FederatedSetup,
                 seed: int = 0, *, client_ids: Sequence[int]) -> None:
        super().__init__(client_id, examples, model, setup, seed)
        self.client_ids = list(client_ids)

    def client_update(self, global_state: dict[str, torch.Tensor], round: int = 0) -> SharedUpdate:
        message = super().client_update(global_state, round)
        weighted = OrderedDict((n, t * message.n_examples) for n, t in message.update.items())
        masked = mask_update(weighted, self.client_id, self.client_ids, config.derive_seed(self.seed, round, 4))
        return replace(message, update=masked)


class DefendedServer(fl.Server):
    """A server with three switches: ``secure`` (it receives only masked messages and learns only their weighted
    mean), ``adam_lr`` (FedAdam, Reddi et al. 2021: it steps Adam on the mean update instead of plain SGD,
    which lets FedSGD train a LoRA adapter in few rounds) and ``central_noise`` (central DP: Gaussian noise of
    that std on the mean before the step; the clients' messages arrive as they were sent)."""

    def __init__(self, setup: fl.FederatedSetup, initial_state: dict[str, torch.Tensor], *, secure: bool = False,
                 adam_lr: float | None = None, central_noise: float = 0.0, seed: int = 0) -> None:
        super().__init__(setup, initial_state)
        if adam_lr is not None and not adam_lr > 0:
            raise ValueError(f"the server's Adam learning rate must be positive, got {adam_lr!r}: try 1e-2.")
        if not central_noise >= 0:
            raise ValueError(f"the server's noise std must be zero or positive, got {central_noise!r}: try 1e-3.")
        self.secure, self.central_noise, self.seed = secure, float(central_noise), seed
        self.params = OrderedDict((n, torch.nn.Parameter(t.clone())) for n, t in self.global_state.items())
        self.optimizer = None if adam_lr is None else torch.optim.Adam(self.params.values(), lr=adam_lr)

    def round_mean(self, round: int) -> Update:
        """``Σ n_i u_i / Σ n_i`` of the round: in the clear, or (``secure``) from the masked messages' sum only."""
        messages = fl.round_messages(self.received, round)
        if not messages:
            raise ValueError(f"no client message arrived in round {round}: nothing to aggregate.")
        if not self.secure:
            return fl.weighted_mean([m.update for m in messages], [m.n_examples for m in messages])
        if len(messages) < 2:
            raise ValueError(f"secure aggregation needs at least 2 messages in round {round}, got {len(messages)}.")
        total = decode_fixed_point(self.encoded_sum(round))
        weight = float(sum(m.n_examples for m in messages))
        return OrderedDict((n, t / weight) for n, t in total.items())

    def encoded_sum(self, round: int) -> Update:
        """The sum of the round's masked messages modulo ``2^62``: exactly the sum of the weighted updates, encoded."""
        return secure_sum_encoded([m.update for m in fl.round_messages(self.received, round)])

    def aggregate(self, round: int) -> Update:
        mean = self.round_mean(round)
        if self.central_noise > 0:
            mean = add_noise(mean, self.central_noise, config.derive_seed(self.seed, round, 5))
        if self.optimizer is None:
            step = -self.setup.lr if self.setup.protocol == "fedsgd" else 1.0
            self.global_state = OrderedDict((n, t + step * mean[n]) for n, t in self.global_state.items())
            return self.global_state
        sign = 1.0 if self.setup.protocol == "fedsgd" else -1.0  # a delta points downhill: its negative is the gradient
        for name, p in self.params.items():
            p.grad = sign * mean[name]
        self.optimizer.step()
        self.global_state = OrderedDict((n, p.detach().clone()) for n, p in self.params.items())
        return self.global_state

    def captured_aggregate(self, round: int) -> SharedUpdate:
        """What the curious server can attack: the round's mean update, as one batch of every client's sentences."""
        messages = fl.round_messages(self.received, round)
        first = self.captured(messages[0].client_id, round)
        return replace(first, update=self.round_mean(round), client_id=-1,
                       batch_size=sum(m.batch_size for m in messages))
