"""Checkers for notebooks 03 to 05: a label, an input, the tokens, length and order of a sentence, and the span
of a LoRA gradient."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..attacks import linear_leak
from .feedback import Feedback, _close, _integer, _rank_answers, check_tensor


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


def check_linear_input(yours: object, weight_gradient: torch.Tensor, bias_gradient: torch.Tensor) -> Feedback:
    """Check the input ``x`` of ``y = W x + b`` read from one sample's gradients: ``x = (dL/dW)_i / (dL/db)_i``."""

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
        return Feedback(False, f"{length} counts [CLS] and [SEP] too: leave the special tokens out.")
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
