"""Checkers for notebooks 01 and 02: LoRA's gradients, the rank bound, what a client sends and what the server
averages."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

from .feedback import Feedback, _integer, _rank_answers, check_state, check_tensor


def check_lora_gradient_B(yours: object, A: torch.Tensor, G: torch.Tensor, alpha: float, r: int) -> Feedback:
    """Check ``dL/dB = (alpha/r)·G·Aᵀ``; ``G`` (d_out, d_in) is ``dL/dW``, ``A`` (r, d_in)."""
    s = alpha / r
    expected = s * G @ A.T
    return check_tensor("dL/dB", yours, expected, {"is off by the factor alpha/r": G @ A.T,
                                                   "is scaled by r/alpha instead of alpha/r": G @ A.T / s})


def check_lora_gradient_A(yours: object, B: torch.Tensor, G: torch.Tensor, alpha: float, r: int) -> Feedback:
    """Check ``dL/dA = (alpha/r)·Bᵀ·G``; ``B`` (d_out, r)."""
    s = alpha / r
    expected = s * B.T @ G
    return check_tensor("dL/dA", yours, expected, {"is off by the factor alpha/r": B.T @ G,
                                                   "is scaled by r/alpha instead of alpha/r": B.T @ G / s})


def _adapter_parts(update: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Bytes of the head and of the adapters, the adapter layers and targets, and the full weights they adapt."""
    a_names = [n for n in update if "lora_A" in n]
    adapter = sum(update[n].numel() * update[n].element_size() for n in update if "lora_" in n)
    head = sum(update[n].numel() * update[n].element_size() for n in update if "classifier" in n)
    bias = sum(update[n].numel() * update[n].element_size() for n in update if "classifier" in n and n.endswith("bias"))
    layers = {m.group(1) for n in a_names if (m := re.search(r"layer\.(\d+)\.", n))}
    targets = {m.group(1) for n in a_names if (m := re.search(r"\.(\w+)\.lora_A", n))}
    full = sum(update[n].shape[1] * update[n.replace("lora_A", "lora_B")].shape[0] * update[n].element_size()
               for n in a_names if n.replace("lora_A", "lora_B") in update)
    return dict(adapter=adapter, head=head, bias=bias, layers=max(len(layers), 1), targets=max(len(targets), 1),
                full=full)


def check_update_bytes(yours: object, update: Mapping[str, torch.Tensor]) -> Feedback:
    """Check the bytes a client sends for ``update``; name the part a wrong count left out or counted twice."""
    count = _integer(yours)
    if count is None:
        return Feedback(False, f"the byte count should be an int, got {type(yours).__name__}.")
    truth = sum(t.numel() * t.element_size() for t in update.values())
    if count == truth:
        return Feedback(True, f"the byte count is right: {truth:,} bytes.")
    numbers = sum(t.numel() for t in update.values())
    p = _adapter_parts(update)
    mistakes = [
        (numbers, f"you counted numbers, not bytes: each float32 number takes {truth // numbers} bytes"),
        (8 * truth, "you counted bits, not bytes"),
        (truth - p["head"], "you left out the classifier head (its weight and bias travel too)"),
        (truth - p["bias"], "you left out the classifier's bias"),
        (p["head"] + p["adapter"] // 2, "you counted half the adapter: did you count both A (r × d_in) and "
                                        "B (d_out × r), in every layer and every target?"),
        (p["head"] + p["adapter"] // p["layers"], f"you counted one layer's adapters, but there are {p['layers']}"),
        (p["head"] + p["adapter"] // p["targets"], f"you counted one target's adapters, but LoRA adapts "
                                                   f"{p['targets']} projections per layer"),
        (p["head"] + p["full"], "you counted the full d_out × d_in weights: LoRA sends r·d_in + d_out·r numbers per "
                                "adapted projection, not d_out·d_in"),
    ]
    for value, hint in mistakes:
        if count == value:
            return Feedback(False, f"{count:,} bytes is not it: {hint}.")
    return Feedback(False, f"{count:,} bytes is {'too many' if count > truth else 'too few'}: add up, for every "
                           "tensor sent, its numbers × 4 bytes (A, B of each adapted projection, and the head).")


def check_rank_bound(yours: object, n_tokens: int | Sequence[int], rank: int) -> Feedback:
    """Check the predicted rank ``min(n, r)`` of a LoRA gradient, for one token count ``n`` or a list of them."""
    ns, given = _rank_answers(yours, n_tokens)
    if isinstance(given, Feedback):
        return given
    truth = [min(n, rank) for n in ns]
    if given == truth:
        return Feedback(True, f"the rank bound is right: min(n, r) with r = {rank}.")
    if given == ns:
        return Feedback(False, "that is n, the number of tokens: multiplying G by A or B cannot raise the rank "
                               f"above r = {rank}.")
    if given == [rank] * len(ns):
        return Feedback(False, "that is r: a sentence of n < r tokens gives G = Σ_t δ_t x_tᵀ a rank of at most n.")
    if given == [max(n, rank) for n in ns]:
        return Feedback(False, "you took the larger of n and r: the rank is bounded by both, so it is the smaller.")
    first = next(i for i, (g, t) in enumerate(zip(given, truth)) if g != t)
    return Feedback(False, f"for n = {ns[first]} tokens and r = {rank} you said {given[first]}, but the "
                           "gradient's rank is at most the number of tokens and at most r.")


def check_weighted_mean(yours: object, updates: Sequence[Mapping[str, torch.Tensor]],
                        weights: Sequence[float]) -> Feedback:
    """Check FedAvg's aggregate ``Σ_k w_k u_k / Σ_k w_k``, computed tensor by tensor."""
    if not updates or len(updates) != len(weights):
        raise ValueError("give one weight per update and at least one update.")
    names, total = list(updates[0]), float(sum(weights))

    def combine(factors: Sequence[float], divisor: float) -> dict[str, torch.Tensor]:
        return {n: sum(f * u[n].double() for f, u in zip(factors, updates)) / divisor for n in names}

    expected = combine(weights, total)
    ones = [1.0] * len(updates)
    mistakes = {"is the plain mean: weight each client by its number of examples": combine(ones, len(updates)),
                "is the weighted sum: divide by the total weight Σ w_k": combine(weights, 1.0),
                "divides by the number of clients: divide by the total weight Σ w_k": combine(weights, len(updates)),
                "is the plain sum: weight by examples and divide by Σ w_k": combine(ones, 1.0)}
    return check_state("the aggregate", yours, expected, mistakes)


def check_gradient_from_delta(yours: object, delta: Mapping[str, torch.Tensor], lr: float) -> Feedback:
    """Check the gradient a server recovers from a one-SGD-step delta: ``δ = −lr·g``, so ``g = −δ/lr``."""
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr!r}.")

    def scaled(factor: float) -> dict[str, torch.Tensor]:
        return {n: factor * d.double() for n, d in delta.items()}

    return check_state("the gradient", yours, scaled(-1 / lr), {
        "is not divided by lr: δ = −lr·g, so g = −δ/lr": scaled(-1.0),
        "is multiplied by lr instead of divided by it: g = −δ/lr": scaled(-lr),
        "has the wrong sign: SGD steps against the gradient, δ = −lr·g": scaled(1 / lr),
        "is the delta itself: undo the step, g = −δ/lr": scaled(1.0),
    })
