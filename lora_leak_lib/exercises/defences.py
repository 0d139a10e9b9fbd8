"""Checkers for notebooks 07 and 08: a defence that keeps accuracy and stops the attack, and a noise multiplier for a
privacy budget."""
from __future__ import annotations

from collections.abc import Sequence

from ..defenses import epsilon
from ..experiments.evaluate import BASELINE, verdicts
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


def check_recorded_defence(yours: object, record: dict) -> Feedback:
    """Check a defence setting read off a recorded ``lora-leak evaluate`` table (its label, e.g. ``"batch 4"``): its
    worst case (the strongest attack, unaware or told the defence) must be below the record's ROUGE-1 threshold while
    it keeps the record's share of undefended accuracy; ``None`` is the answer when no setting does both."""
    threshold, keep = record["threshold"], record["keep"]
    found = {v["label"]: v for v in verdicts(record)}
    good = [v for v in found.values() if v["defence"] != BASELINE and v["rouge1"] is not None
            and v["rouge1"] < threshold and v["kept"] is not None and v["kept"] >= keep]
    if yours is None:
        if good:
            return Feedback(False, "at least one setting meets both conditions: read each setting's worst case and "
                                   "the share of accuracy it keeps again.")
        return Feedback(True, f"no setting brings today's strongest attack below {threshold:.0%} ROUGE-1 while "
                              f"keeping {keep:.0%} of undefended accuracy on this model.")
    if not isinstance(yours, str):
        return Feedback(False, f"give a setting's label as a string (e.g. {next(iter(found))!r}), or None, got "
                               f"{type(yours).__name__}.")
    chosen = found.get(yours)
    if chosen is None:
        return Feedback(False, f"no setting {yours!r} in the record: pick one of "
                               f"{', '.join(repr(label) for label in list(found)[1:4])}, … (the table's labels).")
    if chosen["defence"] == BASELINE:
        return Feedback(False, f"that is no defence: the attack recovers {chosen['rouge1']:.0%} ROUGE-1.")
    if chosen["rouge1"] is None:
        return Feedback(False, f"no attack ran on {yours!r}: that is no evidence of privacy.")
    if chosen["rouge1"] >= threshold:
        return Feedback(False, f"{yours} still lets {chosen['set_by']} recover {chosen['rouge1']:.0%} ROUGE-1, not "
                               f"below {threshold:.0%}: a defence counts only against the attack that knows it.")
    if chosen["kept"] is None or chosen["kept"] < keep:
        kept = "an unmeasured share" if chosen["kept"] is None else f"{chosen['kept']:.0%}"
        return Feedback(False, f"{yours} brings the worst case to {chosen['rouge1']:.0%} ROUGE-1 but keeps "
                               f"{kept} of undefended accuracy, less than {keep:.0%}.")
    return Feedback(True, f"{yours} brings the worst case to {chosen['rouge1']:.0%} ROUGE-1 and keeps "
                          f"{chosen['kept']:.0%} of undefended accuracy.")
