"""Checkers for notebook 06: a defence that keeps accuracy and stops the attack, and a noise multiplier for a
privacy budget."""
from __future__ import annotations

from collections.abc import Sequence

from ..defenses import epsilon
from .feedback import Feedback


def check_defence_choice(yours: object, results: Sequence, target: float = 0.2, max_cost: float = 0.05) -> Feedback:
    """Check a defence setting (its sweep ``label``, e.g. ``"top-k 0.1"``) that must bring the attack's mean
    ROUGE-1 below ``target`` while losing at most ``max_cost`` of the baseline's held-out accuracy."""
    baseline = next((r for r in results if r.defence == "none"), None)
    if baseline is None:
        raise ValueError("the results hold no baseline: include Defence('none') in the sweep.")
    label = getattr(yours, "label", yours)
    if not isinstance(label, str):
        return Feedback(False, f"give the setting's label as a string, e.g. {results[-1].label!r}, "
                               f"got {type(yours).__name__}.")
    chosen = next((r for r in results if r.label == label), None)
    if chosen is None:
        return Feedback(False, f"no setting {label!r} in the sweep: pick one of "
                               f"{', '.join(repr(r.label) for r in results[1:4])}, … (the labels of `results`).")
    if chosen.defence == "none":
        return Feedback(False, f"that is no defence: the attack recovers {chosen.rouge1:.0%} ROUGE-1.")
    if chosen.rouge1 != chosen.rouge1:  # nan: the attack did not run
        return Feedback(False, f"the attack did not run on {label!r} ({chosen.attack_error}): no evidence of privacy.")
    cost = baseline.accuracy - chosen.accuracy
    if chosen.rouge1 >= target:
        return Feedback(False, f"{label} still lets the attack recover {chosen.rouge1:.0%} ROUGE-1, not below "
                               f"{target:.0%}: try a stronger setting of that knob, or another defence.")
    if cost > max_cost:
        return Feedback(False, f"{label} cuts ROUGE-1 to {chosen.rouge1:.0%} but costs {100 * cost:.0f} accuracy "
                               f"points, more than {100 * max_cost:.0f}: look for a milder setting that still stays "
                               f"below {target:.0%}.")
    return Feedback(True, f"{label} cuts ROUGE-1 to {chosen.rouge1:.0%} and keeps accuracy within "
                          f"{100 * max(cost, 0):.0f} points of no defence ({baseline.accuracy:.0%}).")


def check_noise_multiplier(yours: object, candidates: Sequence[float], target_epsilon: float, sample_rate: float,
                           steps: int, delta: float = 1e-5) -> Feedback:
    """Check the smallest DP-SGD noise multiplier among ``candidates`` whose ε after ``steps`` stays at most
    ``target_epsilon`` (RDP accountant, δ = ``delta``)."""

    spent = {s: epsilon(s, sample_rate, steps, delta)[0] for s in candidates}
    good = [s for s in sorted(candidates) if spent[s] <= target_epsilon]
    if not good:
        raise ValueError(f"no candidate reaches ε ≤ {target_epsilon:g}: offer a larger noise multiplier.")
    if isinstance(yours, bool) or not isinstance(yours, (int, float)) or float(yours) not in spent:
        return Feedback(False, f"pick one noise multiplier of {list(candidates)}, as a number.")
    sigma = float(yours)
    if spent[sigma] > target_epsilon:
        return Feedback(False, f"σ = {sigma:g} spends ε = {spent[sigma]:.3g} in {steps} steps, above "
                               f"{target_epsilon:g}: more noise is needed (ε grows with the steps).")
    if sigma != good[0]:
        return Feedback(False, f"σ = {sigma:g} meets the target (ε = {spent[sigma]:.3g}), but a smaller candidate "
                               "meets it too, with less noise, so more utility: compute ε for each of them.")
    return Feedback(True, f"σ = {sigma:g} is the least noise that keeps ε = {spent[sigma]:.3g} ≤ {target_epsilon:g} "
                          f"after {steps} steps.")
