"""Secure aggregation, simulated honestly: pairwise masks that cancel exactly, so the server sees only the sum.

Every pair of clients (i, j) shares a seed (in a real protocol, from a Diffie–Hellman key agreement);
client i adds the mask that seed generates and client j subtracts it. Updates are encoded as fixed-point
integers modulo ``2^FIELD_BITS`` so the masks cancel exactly in integer arithmetic; a masked message alone
is uniformly random. Client dropout, which real protocols recover from with secret sharing, is not simulated.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from ..arrays import integers
from .update import check_update

FIELD_BITS = 62
"""Messages live in the integers modulo ``2^62``; every sum is reduced at once, so int64 never overflows."""
SCALE_BITS = 40
"""Fixed-point precision: ``x`` is sent as ``round(x · 2^40)``: resolution ``1e-12``, range ``±2^21``.
Fine enough that a LoRA gradient keeps its exact low-rank structure (the span attack needs it)."""
MODULUS = 2**FIELD_BITS

Masked = OrderedDict[str, torch.Tensor]


def encode_fixed_point(update: dict[str, torch.Tensor]) -> Masked:
    """Each float as a fixed-point integer modulo ``2^62`` (int64 tensors)."""
    check_update(update)
    limit = 2.0 ** (FIELD_BITS - SCALE_BITS - 1)
    largest = max(float(t.abs().max()) for t in update.values())
    if largest >= limit:
        raise ValueError(f"an update entry of size {largest:.3g} exceeds the fixed-point range ±{limit:.3g}: "
                         "clip the update first.")
    return OrderedDict((n, torch.round(t.double() * 2**SCALE_BITS).long() % MODULUS) for n, t in update.items())


def decode_fixed_point(encoded: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Back to float32: residues above ``2^61`` are negative numbers."""
    out = OrderedDict()
    for name, t in encoded.items():
        t = t % MODULUS
        signed = torch.where(t >= MODULUS // 2, t - MODULUS, t)
        out[name] = (signed.double() / 2**SCALE_BITS).float()
    return out


def pair_mask(seed: int, i: int, j: int, like: dict[str, torch.Tensor]) -> Masked:
    """The mask clients ``i < j`` both derive from their shared seed: uniform integers modulo ``2^62``, one tensor
    shaped like (and on the device of) each tensor of ``like``."""
    rng = np.random.default_rng([seed, i, j])
    return OrderedDict((n, integers(rng, 0, MODULUS, t)) for n, t in like.items())


def check_clients(client_id: int, client_ids: Sequence[int]) -> None:
    """Raise one clear error unless ``client_id`` is one of at least two distinct ``client_ids``."""
    if len(set(client_ids)) != len(client_ids) or len(client_ids) < 2:
        raise ValueError(f"secure aggregation needs at least 2 distinct client ids, got {list(client_ids)}.")
    if client_id not in client_ids:
        raise ValueError(f"client {client_id} is not among the round's clients {list(client_ids)}.")


def mask_update(update: dict[str, torch.Tensor], client_id: int, client_ids: Sequence[int], seed: int = 0) -> Masked:
    """What client ``client_id`` sends: its fixed-point update plus ``+m_ij`` for ``j > i`` and ``-m_ji`` for ``j < i``."""
    check_clients(client_id, client_ids)
    masked = encode_fixed_point(update)
    for other in client_ids:
        if other == client_id:
            continue
        low, high = sorted((client_id, other))
        sign = 1 if client_id == low else -1
        for name, m in pair_mask(seed, low, high, masked).items():
            masked[name] = (masked[name] + sign * m) % MODULUS
    return masked


def secure_sum_encoded(masked_updates: Sequence[dict[str, torch.Tensor]]) -> Masked:
    """The sum of the masked messages modulo ``2^62``, in which every pairwise mask cancels exactly."""
    if len(masked_updates) < 2:
        raise ValueError("secure aggregation sums at least 2 masked updates: pass every client's message.")
    names = list(masked_updates[0])
    if any(list(m) != names for m in masked_updates):
        raise ValueError("masked updates hold different tensor names: every client must mask the same adapter.")
    total = OrderedDict((n, torch.zeros_like(t)) for n, t in masked_updates[0].items())
    for masked in masked_updates:
        for name in names:
            total[name] = (total[name] + masked[name] % MODULUS) % MODULUS
    return total


def secure_sum(masked_updates: Sequence[dict[str, torch.Tensor]]) -> OrderedDict[str, torch.Tensor]:
    """The server's only view: the plain sum of the clients' updates, decoded from the masked messages' sum."""
    return decode_fixed_point(secure_sum_encoded(masked_updates))


def secure_aggregate(updates: Sequence[dict[str, torch.Tensor]], seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Mask every client's update, sum the messages, and return the mean the server learns (and nothing else)."""
    ids = list(range(len(updates)))
    total = secure_sum([mask_update(u, i, ids, seed) for i, u in zip(ids, updates)])
    return OrderedDict((n, t / len(updates)) for n, t in total.items())


def subtract_own(encoded_sum: dict[str, torch.Tensor], own_update: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """With two clients, one of them learns the other's update: ``sum − own`` in the integers, exact to ``2^-40``."""
    if encoded_sum.keys() != own_update.keys():
        raise ValueError("the sum and the client's own update hold different tensor names.")
    own = encode_fixed_point(own_update)
    return decode_fixed_point(OrderedDict((n, (encoded_sum[n] - own[n]) % MODULUS) for n in encoded_sum))
