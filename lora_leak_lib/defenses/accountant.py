"""The privacy accountant of DP-SGD: Rényi DP of the (sampled) Gaussian mechanism, converted to (ε, δ)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import special

from ..checks import check_int

DEFAULT_ORDERS: tuple[float, ...] = tuple([1 + x / 10 for x in range(1, 100)] + list(range(12, 64)))
"""Rényi orders α searched for the tightest ε (the same grid as Opacus' RDP accountant)."""


def _log_add(a: float, b: float) -> float:
    low, high = min(a, b), max(a, b)
    return high if low == -math.inf else high + math.log1p(math.exp(low - high))


def _log_sub(a: float, b: float) -> float:
    if b == -math.inf:
        return a
    if a <= b:
        return -math.inf
    try:
        return b + math.log(math.expm1(a - b))
    except OverflowError:
        return a


def _log_a_integer(q: float, sigma: float, alpha: int) -> float:
    """log A_α for integer α: a binomial sum (Mironov, Talwar & Zhang 2019, section 3.3)."""
    log_a = -math.inf
    for i in range(alpha + 1):
        term = (math.log(special.binom(alpha, i)) + i * math.log(q) + (alpha - i) * math.log1p(-q)
                + (i * i - i) / (2 * sigma**2))
        log_a = _log_add(log_a, term)
    return log_a


def _log_erfc(x: float) -> float:
    return math.log(2) + float(special.log_ndtr(-x * math.sqrt(2)))


def _log_a_fractional(q: float, sigma: float, alpha: float) -> float:
    """log A_α for fractional α: the two half-line integrals as converging series (same paper)."""
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    i = 0
    while True:
        coef = special.binom(alpha, i)
        log_coef, j = math.log(abs(coef)), alpha - i
        log_s0 = (log_coef + i * math.log(q) + j * math.log1p(-q) + (i * i - i) / (2 * sigma**2)
                  + math.log(0.5) + _log_erfc((i - z0) / (math.sqrt(2) * sigma)))
        log_s1 = (log_coef + j * math.log(q) + i * math.log1p(-q) + (j * j - j) / (2 * sigma**2)
                  + math.log(0.5) + _log_erfc((z0 - j) / (math.sqrt(2) * sigma)))
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            return _log_add(log_a0, log_a1)


def rdp_gaussian(noise_multiplier: float, sample_rate: float, order: float) -> float:
    """Rényi DP at ``order`` of one step of the sampled Gaussian mechanism.

    ``sample_rate`` 1 (every example in every step, e.g. a FedSGD client sending its whole dataset) is the
    plain Gaussian mechanism, exactly ``α / (2σ²)``; below 1 it is the sampled mechanism with Poisson sampling.
    """
    if sample_rate == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    if sample_rate == 1:
        return order / (2 * noise_multiplier**2)
    if float(order).is_integer():
        return _log_a_integer(sample_rate, noise_multiplier, int(order)) / (order - 1)
    return _log_a_fractional(sample_rate, noise_multiplier, order) / (order - 1)


def check_privacy_setting(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> None:
    """Raise one clear error for a DP setting that makes no sense."""
    if not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier must be zero or positive, got {noise_multiplier!r}: try 1.0.")
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"sample_rate must be in [0, 1] (batch size / dataset size), got {sample_rate!r}.")
    check_int(steps, "steps", 0, hint="it counts rounds × local steps")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}: take 1e-5 or less than 1/(dataset size).")


def epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float = 1e-5,
            orders: Sequence[float] = DEFAULT_ORDERS) -> tuple[float, float]:
    """(ε, best order α) after ``steps`` DP-SGD steps with the given noise and sampling, for ``δ``.

    RDP composes by addition over steps; the conversion to (ε, δ)-DP is Balle et al. (2020, Thm. 21),
    ``ε = RDP(α) + log((α-1)/α) − (log δ + log α)/(α − 1)``, minimised over α.
    """
    check_privacy_setting(noise_multiplier, sample_rate, steps, delta)
    if steps == 0 or sample_rate == 0:
        return 0.0, float("nan")
    alphas = np.asarray(orders, dtype=float)
    rdp = steps * np.array([rdp_gaussian(noise_multiplier, sample_rate, a) for a in alphas])
    eps = rdp - (math.log(delta) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    if np.all(np.isnan(eps)) or np.all(np.isinf(eps)):
        return math.inf, float("nan")
    best = int(np.nanargmin(eps))
    return float(eps[best]), float(alphas[best])
