"""A malicious server chooses the adapter it sends (a non-zero ``B`` in the "safe" first round), and the check
a client can run on what it received before it trains.

At round 0 an honest server sends ``B = 0``, so every ``dL/dA = s·Bᵀ·G`` is zero and the span attack has nothing
to read. A server that sends a random ``B`` instead, as small as an adapter after a few honest rounds, gets
``dL/dA`` rows spanning the client's first-layer inputs from the very first message, with all ``r`` directions
of each module equally strong (a trained ``B`` is nearly low-rank). The client's defence: at round 0 the honest
adapter is known exactly in kind (``B = 0``, ``A`` from peft's Kaiming-uniform initialisation, the public head),
so it can refuse anything else (``check_global_adapter``); in later rounds it cannot tell.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch

from . import config, fl
from .arrays import randn
from .message import FederatedSetup, State

CRAFTED_SCALE = 0.02
"""Standard deviation of the crafted ``lora_B`` entries: the size an honest adapter's ``B`` entries reach after
about 20 Adam steps at lr 1e-3, so the crafted adapter does not stand out by its magnitude once B ≠ 0 is allowed."""


def craft_adapter(state: dict[str, torch.Tensor], seed: int = 0, scale: float = CRAFTED_SCALE) -> State:
    """The global adapter with every ``lora_B`` replaced by Gaussian noise of std ``scale`` (``A`` and the head
    unchanged): what a malicious server sends to make the span attack work in any round, round 0 included."""
    if not scale > 0:
        raise ValueError(f"the crafted lora_B's scale must be positive, got {scale!r}: try {CRAFTED_SCALE}.")
    generator = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, t in state.items():
        if "lora_B" in name:
            t = scale * randn(t.shape, like=t, generator=generator, dtype=torch.float32).to(t.dtype)
        out[name] = t.detach().clone()
    return out


class MaliciousServer(fl.Server):
    """A server that sends ``craft_adapter`` of its global adapter every round (a fresh draw per round) and keeps
    what it sent, so ``captured`` hands attacks the adapter the client really trained on."""

    def __init__(self, setup: FederatedSetup, initial_state: dict[str, torch.Tensor],
                 scale: float = CRAFTED_SCALE) -> None:
        super().__init__(setup, initial_state)
        self.scale = scale

    def broadcast(self, round: int) -> State:
        self.global_state = craft_adapter(self.global_state, config.derive_seed(self.setup.model_seed, round),
                                          self.scale)
        return super().broadcast(round)


def check_global_adapter(state: dict[str, torch.Tensor], setup: FederatedSetup, round: int) -> list[str]:
    """What a cautious client can verify about the adapter it received, before it trains: the problems found
    (an empty list: nothing an honest server could not have sent).

    Every round: the tensors must be the set-up's adapter (names and shapes). Round 0: every ``lora_B`` must be
    zero (peft's initialisation, and the reason an honest first round leaks no ``dL/dA``), every ``lora_A``
    inside the Kaiming-uniform bound ``1/√fan_in``, and every other trainable tensor (the head) equal to the
    public model's. Past round 0 an honest ``B`` is non-zero and the client cannot tell a crafted one from it.
    """
    expected = OrderedDict((n, p) for n, p in setup.build_model().named_parameters() if p.requires_grad)
    problems = []
    if list(state) != list(expected):
        missing = sorted(set(expected) - set(state)) or sorted(set(state) - set(expected))
        return [f"the adapter's tensors are not the set-up's ({missing[0] if missing else 'another order'})."]
    for name, t in state.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            problems.append(f"{name} has shape {tuple(t.shape)}, the set-up's is {tuple(expected[name].shape)}.")
    if problems or round > 0:
        return problems
    for name, t in state.items():
        if "lora_B" in name:
            if bool((t != 0).any()):
                problems.append(f"{name} is not zero in round 0 (max |B| = {float(t.abs().max()):.2g}): an honest "
                                "first round sends B = 0, so this server can read dL/dA.")
        elif "lora_A" in name:
            bound = 1 / math.sqrt(t.shape[1])
            if float(t.abs().max()) > bound * (1 + 1e-6):
                problems.append(f"{name} leaves peft's initial range ±{bound:.3g} (max {float(t.abs().max()):.3g}).")
        elif not torch.equal(t.detach().to(expected[name].dtype), expected[name].detach()):
            problems.append(f"{name} differs from the public model's initial {name.rsplit('.', 1)[-1]}.")
    return problems
