"""Exercises: checkers that give a learner specific feedback on an answer (the student copies: ``student_copies``)."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral

import torch


@dataclass(frozen=True)
class Feedback:
    """A checker's verdict: ``ok`` and one sentence for the learner."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return ("✅ " if self.ok else "❌ ") + self.message

    def _repr_markdown_(self) -> str:
        return str(self)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    a, b = a.detach().double(), b.detach().double()
    return a.shape == b.shape and bool(torch.linalg.norm(a - b) <= rtol * (torch.linalg.norm(b) + 1e-12))


def check_tensor(name: str, yours: object, expected: torch.Tensor,
                 common_mistakes: dict[str, torch.Tensor] | None = None) -> Feedback:
    """Compare a learner's tensor with the expected one; name the mistake when it matches a known one."""
    if not isinstance(yours, torch.Tensor):
        return Feedback(False, f"{name} should be a torch.Tensor, got {type(yours).__name__}.")
    if yours.shape != expected.shape:
        if yours.ndim == 2 and yours.T.shape == expected.shape:
            return Feedback(False, f"{name} has shape {tuple(yours.shape)}; it should be {tuple(expected.shape)}: "
                                   "transpose one of the factors.")
        return Feedback(False, f"{name} has shape {tuple(yours.shape)}, expected {tuple(expected.shape)}.")
    if _close(yours, expected):
        return Feedback(True, f"{name} is right.")
    for mistake, wrong in (common_mistakes or {}).items():
        if _close(yours, wrong):
            return Feedback(False, f"{name} has the right shape but {mistake}.")
    if _close(yours, -expected):
        return Feedback(False, f"{name} has the right shape but the wrong sign.")
    return Feedback(False, f"{name} has the right shape but the wrong values: compare it with the formula.")


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


def _integer(yours: object) -> int | None:
    """``yours`` as a Python int when it is one (a 0-d integer tensor counts), else ``None``."""
    if isinstance(yours, torch.Tensor) and yours.numel() == 1 and not yours.is_floating_point():
        return int(yours)
    if isinstance(yours, Integral) and not isinstance(yours, bool):
        return int(yours)
    return None


def check_label_from_bias(yours: object, bias: torch.Tensor, kind: str = "gradient") -> Feedback:
    """Check a label read from one sentence's head-bias gradient ``dL/db`` or one-SGD-step delta ``−lr·dL/db``."""
    if kind not in ("gradient", "delta"):
        raise ValueError(f"kind must be 'gradient' or 'delta', got {kind!r}.")
    label = _integer(yours)
    if isinstance(yours, str):
        return Feedback(False, f"give the class index (0 to {bias.numel() - 1}), not its name {yours!r}.")
    if label is None:
        return Feedback(False, f"the label should be an int class index, got {type(yours).__name__}: "
                               "use int(torch.argmin(...)) or int(torch.argmax(...)).")
    if not 0 <= label < bias.numel():
        return Feedback(False, f"class {label} does not exist: the head has {bias.numel()} classes, "
                               f"0 to {bias.numel() - 1}.")
    truth = int(torch.argmin(bias)) if kind == "gradient" else int(torch.argmax(bias))
    if label == truth:
        return Feedback(True, f"the label is right: class {truth}.")
    if kind == "gradient" and label == int(torch.argmax(bias)):
        return Feedback(False, "you took the largest entry: dL/db = softmax(z) − onehot(y), so at batch size 1 the "
                               "true class is the only negative entry (use argmin).")
    if kind == "delta" and label == int(torch.argmin(bias)):
        return Feedback(False, "you read the delta like a gradient: one SGD step sends −lr·dL/db, which flips the "
                               "signs, so the true class is the only positive entry (use argmax).")
    return Feedback(False, f"class {label} is not the one the bias {kind} points to: look at the signs of its entries.")


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


def _rank_answers(yours: object, n_tokens: int | Sequence[int]) -> tuple[list[int], list[int] | Feedback]:
    """The token counts and the learner's ranks as lists of ints (one per count), or the feedback saying why not."""
    many = not isinstance(n_tokens, Integral)
    ns = list(n_tokens) if many else [int(n_tokens)]
    answers = list(yours) if many and isinstance(yours, Sequence) and not isinstance(yours, str) else [yours]
    if many and len(answers) != len(ns) or not many and isinstance(yours, Sequence):
        return ns, Feedback(False, f"give one rank per token count: {len(ns)} {'ints' if many else 'int'}.")
    given = [_integer(a) for a in answers]
    if any(g is None for g in given):
        return ns, Feedback(False, "each rank should be an int: the rank of a matrix is a whole number.")
    return ns, given


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


def _flatten_state(name: str, yours: object,
                   expected: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor | None, Feedback | None]:
    """``yours`` as one vector in the order of ``expected``, or the feedback saying why it is not a matching state."""
    if not isinstance(yours, Mapping):
        return None, Feedback(False, f"{name} should be a dict of tensors (name → tensor), "
                                     f"got {type(yours).__name__}.")
    missing, extra = [n for n in expected if n not in yours], [n for n in yours if n not in expected]
    if missing or extra:
        which = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        return None, Feedback(False, f"{name} must hold exactly the tensors of the updates ({which}).")
    for n, t in expected.items():
        if not isinstance(yours[n], torch.Tensor) or yours[n].shape != t.shape:
            shape = tuple(yours[n].shape) if isinstance(yours[n], torch.Tensor) else type(yours[n]).__name__
            return None, Feedback(False, f"{name}[{n!r}] is {shape}, expected shape {tuple(t.shape)}.")
    return torch.cat([yours[n].detach().reshape(-1).double() for n in expected]), None


def check_state(name: str, yours: object, expected: Mapping[str, torch.Tensor],
                common_mistakes: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Feedback:
    """``check_tensor`` for a whole state (name → tensor), such as an update or an aggregate."""
    flat, problem = _flatten_state(name, yours, expected)
    if problem is not None:
        return problem

    def vector(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[n].detach().reshape(-1).double() for n in expected])

    return check_tensor(name, flat, vector(expected), {k: vector(v) for k, v in (common_mistakes or {}).items()})


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


def check_linear_input(yours: object, weight_gradient: torch.Tensor, bias_gradient: torch.Tensor) -> Feedback:
    """Check the input ``x`` of ``y = W x + b`` read from one sample's gradients: ``x = (dL/dW)_i / (dL/db)_i``."""
    from .attacks import linear_leak

    expected = linear_leak(weight_gradient.detach().double(), bias_gradient.detach().double())
    d_out, d_in = weight_gradient.shape
    if isinstance(yours, torch.Tensor) and yours.shape != expected.shape:
        if yours.numel() == d_in:
            return Feedback(False, f"x has shape {tuple(yours.shape)}: flatten it to ({d_in},), one entry per input.")
        if yours.shape == (d_out,):
            return Feedback(False, f"x has {d_out} entries, one per output: that is a column of dL/dW; the input "
                                   f"is a row ({d_in} entries), dL/dW[i] / dL/db[i].")
    if isinstance(yours, torch.Tensor) and yours.shape == expected.shape and not bool(torch.isfinite(yours).all()):
        return Feedback(False, "x has inf or nan entries: you divided by zero. Pick a row i whose dL/db[i] is not 0 "
                               "(under cross-entropy the bias gradient sums to 0, so never divide sums).")
    i = int(bias_gradient.abs().argmax())
    feedback = check_tensor("x", yours, expected, {
        "is a row of dL/dW itself: divide it by the same row's entry of dL/db": weight_gradient[i],
        "is a row of dL/dW multiplied by dL/db[i]: divide instead": weight_gradient[i] * bias_gradient[i]})
    if feedback.ok or "wrong values" not in feedback.message:
        return feedback
    ours, theirs = expected.double(), yours.detach().double()
    scale = float(theirs @ ours / (ours @ ours))
    if _close(theirs, scale * ours):
        return Feedback(False, f"x points the right way but is {scale:.3g} times the input: divide row i of dL/dW "
                               "by entry i of dL/db, the same i (each row is δ_i·x).")
    return feedback


def _token_ids(yours: object) -> list[int] | None:
    """``yours`` as a list of token ids (a list, tuple or set of ints, or a 1-d integer tensor), else ``None``."""
    if isinstance(yours, torch.Tensor):
        return yours.flatten().tolist() if not yours.is_floating_point() else None
    if isinstance(yours, (list, tuple, set, frozenset)):
        ids = [_integer(t) for t in yours]
        return None if any(t is None for t in ids) else ids
    return None


def check_token_set(yours: object, word_gradient: torch.Tensor, special_ids: Sequence[int] = ()) -> Feedback:
    """Check the tokens read from a full fine-tuning word-embedding gradient ``dL/dE`` (V × d): its non-zero rows,
    special tokens left out."""
    ids = _token_ids(yours)
    if ids is None:
        return Feedback(False, f"give the token ids as a list or set of ints, got {type(yours).__name__}.")
    used = set(torch.nonzero(word_gradient.detach().abs().amax(dim=1) > 0).flatten().tolist())
    truth, given, special = used - set(special_ids), set(ids), set(special_ids) & used
    if given == truth:
        return Feedback(True, f"the token set is right: {len(truth)} distinct tokens.")
    if special and given == truth | special:
        return Feedback(False, "you kept the special tokens: [CLS] and [SEP] are in every sentence, so their rows "
                               "are non-zero too; leave out tokenizer.all_special_ids.")
    if given and max(given) < word_gradient.shape[1] and not given <= used:
        return Feedback(False, f"those look like column indices (0 to {word_gradient.shape[1] - 1}): each row of "
                               "dL/dE is one vocabulary token, so reduce over the columns (dim=1) and keep the rows.")
    extra, missing = given - used, truth - given
    if extra:
        return Feedback(False, f"{len(extra)} of your tokens have an all-zero row in dL/dE, so they are not in the "
                               "sentence: keep only rows with a non-zero entry.")
    return Feedback(False, f"you missed {len(missing)} token(s): a row counts when any of its entries is non-zero "
                           "(use .abs().amax(dim=1) > 0, not a sum, which can cancel).")


def check_sequence_length(yours: object, position_gradient: torch.Tensor, distinct_tokens: int | None = None,
                          special_tokens: int = 2) -> Feedback:
    """Check a sentence length (without its ``special_tokens``) read from a batch-1 position-embedding gradient:
    the non-zero rows are the positions used."""
    length = _integer(yours)
    if length is None:
        return Feedback(False, f"the length should be an int, got {type(yours).__name__}.")
    rows = torch.nonzero(position_gradient.detach().abs().amax(dim=1) > 0).flatten()
    truth = int(rows.max()) + 1 - special_tokens if rows.numel() else 0
    if length == truth:
        return Feedback(True, f"the length is right: {truth} tokens.")
    if length == truth + special_tokens:
        return Feedback(False, f"{length} counts [CLS] and [SEP] too: the sentence itself has {special_tokens} "
                               "positions fewer.")
    if distinct_tokens is not None and length == distinct_tokens:
        return Feedback(False, "that is the number of distinct tokens: a repeated word has one row in dL/dE but "
                               "one position each time it occurs, so count the non-zero position rows.")
    if length == position_gradient.shape[1]:
        return Feedback(False, "that is the embedding width: count the non-zero rows (positions), not the columns.")
    return Feedback(False, f"{length} is {'too long' if length > truth else 'too short'}: count the rows of the "
                           "position-embedding gradient with a non-zero entry, then drop [CLS] and [SEP].")


def check_token_order(yours: object, reference: Sequence[int], special_ids: Sequence[int] = ()) -> Feedback:
    """Check a sentence's token ids, in order, without special tokens."""
    ids, reference = _token_ids(yours), list(reference)
    if ids is None or isinstance(yours, (set, frozenset)):
        return Feedback(False, "give the token ids in order, as a list of ints (a set has no order).")
    if ids == reference:
        return Feedback(True, f"the order is right: all {len(reference)} tokens in place.")
    special = set(special_ids)
    if special and [t for t in ids if t not in special] == reference:
        return Feedback(False, "the order is right, but drop [CLS] and [SEP]: give the sentence's own tokens only.")
    if ids == reference[::-1]:
        return Feedback(False, "the tokens are reversed: position row p belongs at place p, counting from [CLS] at 0.")
    if sorted(ids) == sorted(reference):
        wrong = sum(a != b for a, b in zip(ids, reference))
        return Feedback(False, f"the right tokens, but {wrong} of {len(reference)} in the wrong place: give position "
                               "p the token whose word-embedding row equals position row p.")
    if len(ids) != len(reference):
        return Feedback(False, f"{len(ids)} tokens given, the sentence has {len(reference)}.")
    stray = len(set(ids) - set(reference))
    return Feedback(False, f"{stray} of your tokens are not in the sentence: take them from the non-zero rows of "
                           "dL/dE only.")


def check_span_distance(yours: object, x: torch.Tensor, basis: torch.Tensor) -> Feedback:
    """Check the relative distance ``‖x − QᵀQx‖ / ‖x‖`` of each row of ``x`` to the span of ``basis`` (orthonormal
    rows ``Q``)."""
    x = x.detach().double().reshape(-1, x.shape[-1])
    Q = basis.detach().double()
    projection = x @ Q.T @ Q
    norm = x.norm(dim=1)
    expected = (x - projection).norm(dim=1) / norm
    if isinstance(yours, torch.Tensor) and yours.numel() == expected.numel():
        yours = yours.reshape(expected.shape)
    return check_tensor("the distance", yours, expected, {
        "is not relative: divide ‖x − QᵀQx‖ by ‖x‖, so that every token is on the same scale": expected * norm,
        "is squared: take the square root of the residual's squared norm": expected ** 2,
        "is the part inside the span, ‖QᵀQx‖ / ‖x‖: the test needs the part left outside, x − QᵀQx":
            projection.norm(dim=1) / norm,
    })


def check_span_dimension(yours: object, n_tokens: int | Sequence[int], rank: int, targets: int = 2) -> Feedback:
    """Check the predicted dimension ``min(n + 2, targets·r)`` of the stacked first-layer ``lora_A`` rows of a
    sentence of ``n`` tokens (``[CLS]`` and ``[SEP]`` make ``n + 2`` inputs)."""
    ns, given = _rank_answers(yours, n_tokens)
    if isinstance(given, Feedback):
        return given
    rows = targets * rank
    truth = [min(n + 2, rows) for n in ns]
    if given == truth:
        return Feedback(True, f"the span dimension is right: min(n + 2, {targets}·r) with r = {rank}.")
    if given == [min(n, rows) for n in ns]:
        return Feedback(False, "you forgot [CLS] and [SEP]: the first layer sees n + 2 inputs, and each is a "
                               "direction the rows can span.")
    if given == [min(n + 2, rank) for n in ns]:
        return Feedback(False, f"that is min(n + 2, r): the rows of {targets} adapted projections stack, so there "
                               f"are {targets}·r = {rows} rows.")
    if given == [rows] * len(ns):
        return Feedback(False, f"that is the number of rows, {rows}: rows built from n + 2 inputs span at most n + 2 "
                               "directions.")
    if given == [n + 2 for n in ns]:
        return Feedback(False, f"that is the number of inputs: {rows} rows span at most {rows} directions.")
    first = next(i for i, (g, t) in enumerate(zip(given, truth)) if g != t)
    return Feedback(False, f"for n = {ns[first]} tokens you said {given[first]}: the span is at most the number of "
                           f"inputs (n + 2) and at most the number of rows ({targets}·r).")


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
    from .defenses import epsilon

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
        return Feedback(False, f"σ = {sigma:g} meets the target (ε = {spent[sigma]:.3g}), but σ = {good[0]:g} does "
                               f"too (ε = {spent[good[0]]:.3g}) with less noise, so more utility.")
    return Feedback(True, f"σ = {sigma:g} is the least noise that keeps ε = {spent[sigma]:.3g} ≤ {target_epsilon:g} "
                          f"after {steps} steps.")
