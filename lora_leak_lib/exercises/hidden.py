"""Hidden tests: a learner's answer graded on fresh cases, against a truth computed in a process of its own.

A checked exercise's answer is a small function (``def label_from_bias(bias_gradient): ...``). The notebook's
visible check cell runs it on the notebook's own case and shows a checker's hint; the hidden test in the same cell
(``hidden_test(name)``, the same few lines in every notebook) sends the function's source, ``inspect.getsource``,
to ``python -m lora_leak_lib.exercises.hidden NAME``, which

1. draws fresh cases from a seed no notebook uses (a new one at every grading, ``--seed`` to repeat one),
2. runs the source alone in another fresh process (``runner``: the function's arguments, ``torch``, ``math``,
   ``np``, ``ll`` and the modules its exercise documents; no checker, no grader, nothing of the learner's kernel),
3. reads back only plain values (``runner.plain``, read with ``torch.load(weights_only=True)``) and compares them
   with the truth it computes itself,

and prints one line: ✅, or ❌ with what was wrong on which case. Nothing in the learner's kernel takes part: not a
variable that holds the notebook's answer, not a checker or library function patched there, not an object whose
``==`` always holds. The exercises whose answer is a measurement (07's span dimensions, ``VALUES``) send
``json.dumps`` of it instead, and the truth is measured again here. The kernel side is standard library only.
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import secrets
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import runner

TIMEOUT = 300
"""Seconds the learner's answer may run on all the cases of one exercise."""
FLOAT32 = 1.1920928955078125e-07
"""float32's machine epsilon: the cases are float32 tensors, as the notebooks' are."""


@dataclass(frozen=True)
class Verdict:
    """A hidden test's result: ``ok`` and one line for the learner (what was wrong, on which fresh case)."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return ("✅ hidden tests: " if self.ok else "❌ hidden tests: ") + self.message


@dataclass(frozen=True)
class HiddenExercise:
    """One graded answer: a function ``call`` (``name(arguments)``) run on ``cases(rng)``, each result compared
    with ``truth(*arguments)`` by ``compare(given, expected, arguments)`` (``None`` when right, else what is
    wrong); ``forbidden``: library names that compute the answer; ``modules``: names the answer may use besides
    torch, math, np and ll (name → module)."""

    name: str
    call: str
    cases: Callable[[random.Random], list[tuple]]
    truth: Callable[..., object]
    compare: Callable[[object, object, tuple], str | None]
    forbidden: tuple[str, ...] = ()
    modules: dict[str, str] = field(default_factory=dict)


# ---- reading a learner's plain values -------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _int(given: object) -> int | None:
    """``given`` as an int: an int, or a one-element integer tensor; else ``None`` (``True`` is no class index)."""
    torch = _torch()
    if type(given) is int:
        return given
    if type(given) is torch.Tensor and given.numel() == 1 and not given.is_floating_point() \
            and given.dtype != torch.bool:
        return int(given)
    return None


def _number(given: object) -> float | None:
    torch = _torch()
    if type(given) in (int, float):
        return float(given)
    if type(given) is torch.Tensor and given.numel() == 1 and given.dtype != torch.bool:
        return float(given)
    return None


def _ids(given: object) -> list[int] | None:
    """Token ids: a list of ints or a 1-d integer tensor; else ``None``."""
    torch = _torch()
    if type(given) is torch.Tensor and given.ndim == 1 and not given.is_floating_point():
        return [int(t) for t in given]
    if type(given) is list and all(type(t) is int for t in given):
        return given
    return None


def _kind(given: object) -> str:
    torch = _torch()
    if type(given) is torch.Tensor:
        return f"a {given.dtype} tensor of shape {tuple(given.shape)}"
    return f"a {type(given).__name__}" if given is not None else "None"


def _tensor_error(given: object, expected, what: str, rtol: float) -> str | None:
    torch = _torch()
    if type(given) is not torch.Tensor:
        return f"{what} is {_kind(given)}: return a torch.Tensor"
    if tuple(given.shape) != tuple(expected.shape):
        return f"{what} has shape {tuple(given.shape)}, expected {tuple(expected.shape)}"
    error = float(torch.linalg.norm(given.double() - expected) / (torch.linalg.norm(expected) + 1e-300))
    if not error <= rtol:  # a nan fails too
        return f"{what} is off: relative error {error:.2g} (allowed {rtol:g})"
    return None


def _state_error(given: object, expected: dict, what: str, rtol: float = 1e-5) -> str | None:
    torch = _torch()
    if type(given) is not dict:
        return f"{what} is {_kind(given)}: return a dict (name → tensor)"
    if set(given) != set(expected):
        missing = sorted(set(expected) - set(given))
        which = f"missing {missing[0]!r}" if missing else "extra names"
        return f"{what} should hold exactly the updates' names ({which})"
    for name, tensor in expected.items():
        if type(given[name]) is not torch.Tensor or tuple(given[name].shape) != tuple(tensor.shape):
            return f"{what}[{name!r}] is {_kind(given[name])}, expected shape {tuple(tensor.shape)}"
    flat = torch.cat([given[n].double().reshape(-1) for n in expected])
    truth = torch.cat([t.reshape(-1) for t in expected.values()])
    error = float(torch.linalg.norm(flat - truth) / torch.linalg.norm(truth))
    return None if error <= rtol else f"{what} is off: relative error {error:.2g} (allowed {rtol:g})"


def _same_int(what: str) -> Callable[[object, object, tuple], str | None]:
    def compare(given: object, expected: object, arguments: tuple) -> str | None:
        value = _int(given)
        if value is None:
            return f"returned {_kind(given)}: return {what} as an int"
        return None if value == expected else f"gave {value} where {what} is {expected}"

    return compare


# ---- the cases and the truths ---------------------------------------------------------------------------------


def _generator(rng: random.Random):
    return _torch().Generator().manual_seed(rng.randrange(2**31))


def _labels(rng: random.Random, classes: list[int]) -> list[int]:
    """One label per case, at least three different ones (a constant answer fails)."""
    while True:
        labels = [rng.randrange(c) for c in classes]
        if len(set(labels)) >= min(3, len(classes)):
            return labels


def _bias_gradient(rng: random.Random, classes: int, label: int):
    """``dL/db = softmax(z) − onehot(y)`` of one sentence under cross-entropy (float32)."""
    torch = _torch()
    z = torch.randn(classes, generator=_generator(rng), dtype=torch.float64) * rng.uniform(0.5, 3.0)
    return (torch.softmax(z, 0) - torch.eye(classes, dtype=torch.float64)[label]).float()


def _label_cases(rng: random.Random) -> list[tuple]:
    classes = [2, 3, 5, 10, rng.choice([4, 6, 8])]
    rng.shuffle(classes)
    return [(_bias_gradient(rng, c, y),) for c, y in zip(classes, _labels(rng, classes))]


def _label_truth(bias_gradient) -> int:
    return int(bias_gradient.double().argmin())


def _delta_cases(rng: random.Random) -> list[tuple]:
    return [(-rng.uniform(0.01, 1.0) * g,) for (g,) in _label_cases(rng)]


def _delta_truth(bias_delta) -> int:
    return int(bias_delta.double().argmax())


def _bytes_cases(rng: random.Random) -> list[tuple]:
    cases = set()
    while len(cases) < 5:
        cases.add((rng.choice([1, 2, 4, 8, 16, 64]), rng.choice([64, 128, 384, 768, 1024]), rng.choice([2, 4, 6, 12]),
                   rng.choice([1, 2, 4]), rng.choice([2, 3, 5])))
    return sorted(cases, key=lambda _: rng.random())


def _bytes_truth(r: int, d: int, layers: int, targets: int, classes: int) -> int:
    """float32 ``A`` (r × d) and ``B`` (d × r) per adapted projection, and the head's weight and bias."""
    return 4 * (layers * targets * (r * d + d * r) + classes * d + classes)


def _lora_cases(rng: random.Random) -> list[tuple]:
    torch = _torch()
    cases = []
    for r, ratio in zip(rng.sample([1, 2, 4, 8], 4), (2.0, 4.0, 0.5, 2.0)):  # alpha/r is never 1
        d_out, d_in = rng.sample([n for n in range(5, 41) if n != r], 2)
        g = _generator(rng)
        cases.append((torch.randn(d_out, d_in, generator=g), torch.randn(r, d_in, generator=g),
                      torch.randn(d_out, r, generator=g), ratio * r, r))
    return cases


def _lora_truth(G, A, B, alpha, r):
    s = alpha / r
    return [s * G.double() @ A.double().T, s * B.double().T @ G.double()]


def _lora_compare(given: object, expected: list, arguments: tuple) -> str | None:
    if type(given) is not list or len(given) != 2:
        return f"returned {_kind(given)}: return two tensors, (dL/dB, dL/dA)"
    return (_tensor_error(given[0], expected[0], "dL/dB", 1e-4)
            or _tensor_error(given[1], expected[1], "dL/dA", 1e-4))


def _rank_cases(rng: random.Random) -> list[tuple]:
    r = [rng.randint(2, 16) for _ in range(6)]
    cases = [(rng.randint(1, r[0] - 1), r[0]), (rng.randint(r[1] + 1, 60), r[1]), (r[2], r[2]),
             (rng.randint(1, r[3] - 1), r[3]), (rng.randint(r[4] + 1, 60), r[4]), (rng.randint(1, 60), r[5])]
    rng.shuffle(cases)
    return cases


def _span_bound_cases(rng: random.Random) -> list[tuple]:
    cases = []
    for _ in range(2):
        r = rng.randint(2, 16)
        cases += [(rng.randint(1, 2 * r - 3), r),      # n + 2 < 2r: every input is a direction
                  (rng.randint(2 * r - 1, 60), r),     # n + 2 > 2r: the rows are the limit
                  (2 * r - 2, r)]                      # n + 2 = 2r
    rng.shuffle(cases)
    return cases


def _states(rng: random.Random, clients: int) -> list[dict]:
    torch = _torch()
    g = _generator(rng)
    names = rng.sample(["layer.0.query.lora_A", "layer.0.query.lora_B", "layer.0.value.lora_A",
                        "layer.1.value.lora_B", "classifier.weight", "classifier.bias"], rng.randint(2, 4))
    shapes = {n: (rng.randint(1, 6), rng.randint(2, 9)) if not n.endswith("bias") else (rng.randint(2, 5),)
              for n in names}
    return [{n: torch.randn(*shapes[n], generator=g) for n in names} for _ in range(clients)]


def _fedavg_cases(rng: random.Random) -> list[tuple]:
    cases = []
    for clients in (2, 3, 5):
        cases.append((_states(rng, clients), rng.sample(range(1, 40), clients)))  # distinct weights
    return cases


def _fedavg_truth(updates: list, weights: list) -> dict:
    total = float(sum(weights))
    return {n: sum(w * u[n].double() for w, u in zip(weights, updates)) / total for n in updates[0]}


def _delta_state_cases(rng: random.Random) -> list[tuple]:
    return [({n: -lr * t for n, t in _states(rng, 1)[0].items()}, lr) for lr in (0.05, 0.5, 2.0)]


def _gradient_truth(delta: dict, lr: float) -> dict:
    return {n: -d.double() / lr for n, d in delta.items()}


def _linear_cases(rng: random.Random) -> list[tuple]:
    torch = _torch()
    cases = []
    for _ in range(4):
        classes, width = rng.randint(3, 12), rng.randint(5, 100)
        g = _generator(rng)
        x = torch.rand(width, generator=g, dtype=torch.float64) * rng.choice([1.0, 255.0]) - rng.choice([0.0, 0.5])
        delta = _bias_gradient(rng, classes, rng.randrange(classes)).double()
        cases.append((torch.outer(delta, x).float(), delta.float()))
    return cases


def _linear_truth(G, g):
    """``x`` itself, in float64: the row of ``dL/dW = δ xᵀ`` with the largest ``|δ_i|`` over ``δ_i``."""
    G, g = G.double(), g.double()
    i = int(g.abs().argmax())
    return G[i] / g[i]


def _embedding_case(rng: random.Random, length: int, repeats: bool) -> tuple:
    """A full fine-tuning gradient of ``[CLS] t_1 … t_n [SEP]``: word rows summed over the positions of each token,
    position rows one per position; specials, the tokens in order."""
    torch = _torch()
    vocab, width = rng.randint(80, 400), rng.randint(4, 16)
    specials = rng.sample(range(vocab), 5)  # [PAD], [UNK], [CLS], [SEP], [MASK]
    cls, sep = specials[2], specials[3]
    pool = [t for t in range(vocab) if t not in specials]
    tokens = [rng.choice(pool) for _ in range(length)] if repeats else rng.sample(pool, length)
    if repeats and len(set(tokens)) == length:
        tokens[rng.randrange(1, length)] = tokens[0]
    sentence = [cls, *tokens, sep]
    per_position = torch.randn(len(sentence), width, generator=_generator(rng))
    words = torch.zeros(vocab, width)
    positions = torch.zeros(rng.randint(len(sentence) + 1, 512), width)
    for p, t in enumerate(sentence):
        words[t] += per_position[p]
        positions[p] = per_position[p]
    return words, positions, specials, tokens


def _token_set_cases(rng: random.Random) -> list[tuple]:
    cases = []
    for repeats in (True, False, True, False):
        words, _, specials, _ = _embedding_case(rng, rng.randint(3, 12), repeats)
        cases.append((words, specials))
    return cases


def _token_set_truth(word_gradient, special_ids) -> list[int]:
    used = word_gradient.abs().amax(dim=1) > 0
    return sorted(t for t in range(word_gradient.shape[0]) if bool(used[t]) and t not in special_ids)


def _token_set_compare(given: object, expected: list, arguments: tuple) -> str | None:
    ids = _ids(given)
    if ids is None:
        return f"returned {_kind(given)}: return the token ids as a list or set of ints"
    given_set, truth, special = set(ids), set(expected), set(arguments[1])
    if given_set == truth:
        return None
    if given_set & special:
        return "kept special tokens: leave out special_ids"
    extra, missing = given_set - truth, truth - given_set
    return f"has {len(extra)} token(s) not in the sentence and misses {len(missing)}"


def _length_cases(rng: random.Random) -> list[tuple]:
    return [(_embedding_case(rng, n, repeats)[1],) for n, repeats in
            ((rng.randint(2, 6), True), (rng.randint(7, 20), False), (rng.randint(3, 30), True),
             (rng.randint(2, 40), False))]


def _length_truth(position_gradient) -> int:
    rows = (position_gradient.abs().amax(dim=1) > 0).nonzero().flatten()
    return int(rows.max()) + 1 - 2


def _order_cases(rng: random.Random) -> list[tuple]:
    cases = []
    for _ in range(4):
        while True:
            words_rows, positions, specials, tokens = _embedding_case(rng, rng.randint(4, 14), repeats=False)
            if tokens != sorted(tokens):
                break
        cases.append((words_rows, positions, sorted(tokens), len(tokens)))
    return cases


def _order_truth(word_gradient, position_gradient, words, length) -> list[int]:
    """Position ``p`` holds the token whose word row equals position row ``p`` (no token repeats)."""
    torch = _torch()
    rows = word_gradient.double()[torch.tensor(words)]
    return [words[int((rows - position_gradient.double()[p]).norm(dim=1).argmin())] for p in range(1, length + 1)]


def _order_compare(given: object, expected: list, arguments: tuple) -> str | None:
    ids = _ids(given)
    if ids is None:
        return f"returned {_kind(given)}: return the token ids in order, as a list of ints"
    if ids == expected:
        return None
    if len(ids) != len(expected):
        return f"gave {len(ids)} tokens for a sentence of {len(expected)}"
    wrong = sum(a != b for a, b in zip(ids, expected))
    return f"put {wrong} of {len(expected)} tokens in the wrong place"


def _span_cases(rng: random.Random) -> list[tuple]:
    """Inputs inside the span (distance at float32 rounding), outside it, and part-way, at scales from 1e-2 to
    1e3, and an orthonormal float32 basis."""
    torch = _torch()
    cases = []
    for _ in range(4):
        width = rng.randint(16, 400)
        dim = rng.randint(2, min(width // 2, 32))
        g = _generator(rng)
        basis = torch.linalg.qr(torch.randn(width, dim, generator=g, dtype=torch.float64))[0].T
        inside = torch.randn(2, dim, generator=g, dtype=torch.float64) @ basis
        outside = torch.randn(2, width, generator=g, dtype=torch.float64)
        mixed = inside[:1] + rng.uniform(0.1, 2.0) * outside[:1]
        rows = torch.cat([inside, outside, mixed])[torch.randperm(5, generator=g)]
        scale = torch.tensor([10 ** rng.uniform(-2, 3) for _ in range(5)], dtype=torch.float64)[:, None]
        cases.append(((rows * scale).float(), basis.float()))
    return cases


def _span_truth(x, basis):
    """``‖x − QᵀQx‖ / ‖x‖`` per row, in float64 on the float32 inputs as given."""
    x, Q = x.double(), basis.double()
    return (x - x @ Q.T @ Q).norm(dim=1) / x.norm(dim=1)


SPAN_TOLERANCE = 16 * FLOAT32
"""How far a distance may be from the truth: float32 rounding (a residual computed in float32 is within 3 ε)."""


def _span_compare(given: object, expected, arguments: tuple) -> str | None:
    torch = _torch()
    if type(given) is not torch.Tensor:
        return f"returned {_kind(given)}: return a tensor of one distance per row of x"
    if tuple(given.shape) != tuple(expected.shape):
        return f"returned shape {tuple(given.shape)} for {expected.numel()} rows of x: one distance per row"
    gap = (given.double() - expected).abs()
    if not bool((gap <= SPAN_TOLERANCE).all()):  # a nan fails too
        i = int(torch.nan_to_num(gap, nan=math.inf).argmax())
        return (f"gave {float(given[i]):.3g} where the distance is {float(expected[i]):.3g} (allowed "
                f"±{SPAN_TOLERANCE:.1g}, float32 rounding)")
    return None


def _noise_cases(rng: random.Random) -> list[tuple]:
    from ..defenses import epsilon

    cases = []
    for order in ("ascending", "descending", "shuffled", "shuffled"):
        candidates = sorted(rng.sample([0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0], 5))
        rate, steps = rng.choice([1.0, 0.1, 0.01]), rng.choice([10, 100, 1000])
        j = rng.randint(1, 3)  # the answer is neither the least nor the most noise
        spent = [epsilon(s, rate, steps)[0] for s in candidates]
        target = math.sqrt(spent[j] * spent[j - 1])
        if order == "descending":
            candidates.reverse()
        elif order == "shuffled":
            rng.shuffle(candidates)
        cases.append((candidates, target, rate, steps))
    return cases


def _noise_truth(candidates: list, target_epsilon: float, sample_rate: float, steps: int) -> float:
    from ..defenses import epsilon

    return min(s for s in candidates if epsilon(s, sample_rate, steps)[0] <= target_epsilon)


def _noise_compare(given: object, expected: float, arguments: tuple) -> str | None:
    value = _number(given)
    if value is None:
        return f"returned {_kind(given)}: return one of the candidates, a number"
    if value not in arguments[0]:
        return f"gave {value:g}, which is not one of the candidates"
    return None if value == expected else f"gave σ = {value:g} where the least noise that meets ε is {expected:g}"


def _verdict_entry(rng: random.Random, defence: str, value: float | None, rouge1: float | None,
                   kept: float | None) -> dict:
    """One setting's entry of notebook 08's ``verdict``, with the keys ``experiments.evaluate.verdicts`` gives."""
    label = defence if value is None else f"{defence} {value:g}"
    attack = rng.choice(["lora-best", "span"]) if rouge1 is not None else None
    return {"defence": defence, "value": value, "label": label, "rouge1": rouge1, "attack": attack,
            "aware": rng.random() < 0.5 if rouge1 is not None else None,
            "set_by": f"{attack} (aware)" if attack else "", "setting": "main" if rouge1 is not None else None,
            "utility": None if kept is None else round(0.6 * kept, 4), "kept": kept, "learns": kept is not None,
            "epsilon": None, "rows": 4, "errors": 0 if rouge1 is not None else 4}


def _verdict_cases(rng: random.Random) -> list[tuple]:
    """Recorded tables: none that qualifies (with a setting exactly at the threshold, one that keeps too little,
    one that no attack ran on), one, several, and an undefended baseline that the attack happens to miss."""
    threshold, keep = rng.choice([0.2, 0.1, 0.3]), rng.choice([0.95, 0.9])
    defences = ["noise", "dp-sgd", "top-k", "quantise", "batch", "clip", "secure-agg"]
    values = iter([])

    def entry(rouge1: float | None, kept: float | None) -> dict:
        return _verdict_entry(rng, rng.choice(defences), next(values), rouge1, kept)

    def leaky() -> dict:
        return entry(rng.uniform(threshold + 0.05, 1.0), rng.uniform(0.5, 1.1))

    def good() -> dict:
        return entry(rng.uniform(0.0, threshold - 0.01), rng.uniform(keep, 1.1))

    baseline = _verdict_entry(rng, "none", None, rng.uniform(0.8, 1.0), 1.0)
    low = lambda: rng.uniform(0.0, threshold - 0.01)  # noqa: E731
    plans = [
        lambda: [baseline, leaky(), entry(threshold, rng.uniform(keep, 1.1)), entry(low(), keep - 0.05),
                 entry(None, 1.0)],  # none qualifies: at the threshold, keeps too little, no attack ran
        lambda: [baseline, leaky(), good(), entry(low(), keep - 0.1), entry(None, 1.05)],  # one does
        lambda: [baseline, good(), leaky(), good(), entry(low(), None)],  # two do
        lambda: [_verdict_entry(rng, "none", None, low(), 1.0), leaky(), good()],  # the attack missed the baseline
        lambda: [baseline, leaky(), leaky(), entry(None, None)],  # none qualifies
    ]
    rng.shuffle(plans)
    cases = []
    for plan in plans:
        values = iter(rng.sample([1e-5, 1e-4, 1e-3, 0.01, 0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0], 8))  # unique labels
        table = plan()
        body = table[1:]
        rng.shuffle(body)
        cases.append(({v["label"]: v for v in [table[0], *body]}, threshold, keep))
    return cases


def _qualifying(verdict: dict, threshold: float, keep: float) -> list[str]:
    return [v["label"] for v in verdict.values() if v["defence"] != "none" and v["rouge1"] is not None
            and v["rouge1"] < threshold and v["kept"] is not None and v["kept"] >= keep]


def _verdict_compare(given: object, expected: list, arguments: tuple) -> str | None:
    verdict, threshold, keep = arguments
    if given is None:
        return None if not expected else f"gave None, but {len(expected)} setting(s) meet both conditions"
    if type(given) is not str:
        return f"returned {_kind(given)}: return a setting's label (a str) or None"
    if given not in verdict:
        return f"gave {given!r}, which is not a label of the table"
    if given in expected:
        return None
    v = verdict[given]
    if v["defence"] == "none":
        return f"gave {given!r}: that is no defence"
    if v["rouge1"] is None:
        return f"gave {given!r}, on which no attack ran"
    if v["rouge1"] >= threshold:
        return f"gave {given!r}, whose worst case {v['rouge1']:.0%} is not below {threshold:.0%}"
    return f"gave {given!r}, which keeps {'an unmeasured share' if v['kept'] is None else format(v['kept'], '.0%')}" \
           f" of the accuracy, less than {keep:.0%}"


EXERCISES = {e.name: e for e in (
    HiddenExercise("label_from_bias", "label_from_bias(bias_gradient)", _label_cases, _label_truth,
                   _same_int("the class"), forbidden=("infer_labels", "classes_present")),
    HiddenExercise("label_from_delta", "label_from_delta(bias_delta)", _delta_cases, _delta_truth,
                   _same_int("the class"), forbidden=("infer_labels", "classes_present")),
    HiddenExercise("message_bytes", "message_bytes(r, d, layers, targets, classes)", _bytes_cases, _bytes_truth,
                   _same_int("the byte count"), forbidden=("update_bytes", "wire_cost")),
    HiddenExercise("lora_gradients", "lora_gradients(G, A, B, alpha, r)", _lora_cases, _lora_truth, _lora_compare,
                   forbidden=("layer_gradients",)),
    HiddenExercise("rank_bound", "rank_bound(n, r)", _rank_cases, min, _same_int("the rank")),
    HiddenExercise("fedavg", "fedavg(updates, weights)", _fedavg_cases, _fedavg_truth,
                   lambda given, expected, arguments: _state_error(given, expected, "the aggregate"),
                   forbidden=("weighted_mean",)),
    HiddenExercise("gradient_from_delta", "gradient_from_delta(delta, lr)", _delta_state_cases, _gradient_truth,
                   lambda given, expected, arguments: _state_error(given, expected, "the gradient")),
    HiddenExercise("linear_input", "linear_input(G, g)", _linear_cases, _linear_truth,
                   lambda given, expected, arguments: _tensor_error(given, expected, "x", 1e-4),
                   forbidden=("linear_leak",)),
    HiddenExercise("leaked_tokens", "leaked_tokens(word_gradient, special_ids)", _token_set_cases, _token_set_truth,
                   _token_set_compare, forbidden=("token_set",)),
    HiddenExercise("leaked_length", "leaked_length(position_gradient)", _length_cases, _length_truth,
                   _same_int("the length"), forbidden=("sequence_length",)),
    HiddenExercise("leaked_order", "leaked_order(word_gradient, position_gradient, words, length)", _order_cases,
                   _order_truth, _order_compare),
    HiddenExercise("span_distance", "span_distance(x, basis)", _span_cases, _span_truth, _span_compare,
                   forbidden=("span_distances",)),
    HiddenExercise("span_bound", "span_bound(n, r)", _span_bound_cases, lambda n, r: min(n + 2, 2 * r),
                   _same_int("the dimension")),
    HiddenExercise("least_noise", "least_noise(candidates, target_epsilon, sample_rate, steps)", _noise_cases,
                   _noise_truth, _noise_compare, modules={"defenses": "lora_leak_lib.defenses"}),
    HiddenExercise("recommend_defence", "recommend_defence(verdict, threshold, keep)", _verdict_cases, _qualifying,
                   _verdict_compare, forbidden=("recommend",)),
)}
"""Every graded function, by name (notebooks 00 to 05, 07, 08 and 10)."""


# ---- measured values ------------------------------------------------------------------------------------------


def _span_dimensions() -> dict:
    """Notebook 09's exercise 1, measured again: course sentence 7 on tiny-bert, 20 steps trained, seed 0. A
    direction whose singular value sits near ``input_span``'s cut may fall on either side of it on another machine
    (float32 rounding), so each rank gets the dimensions measured with the cut halved, as is and doubled."""
    from .. import attacks, data, fl, models

    private = data.course_sentences()[7]
    model = models.TINY_BERT
    dimensions = {}
    for rank in (2, 8):
        shared = fl.capture_update([private.text], [private.label], model, rank=rank, trained_steps=20, seed=0)
        rows = attacks.first_layer_rows(shared.update)
        cut = attacks.SPAN_TOL
        found = [int(attacks.input_span(rows, tol).shape[0]) for tol in (2 * cut, cut, cut / 2)]
        dimensions[str(rank)] = list(range(min(found), max(found) + 1))
    return {"n_tokens": len(model.tokenizer(private.text)["input_ids"]), "span_dimension": dimensions}


def _span_dimension_compare(given: object, expected: dict) -> str | None:
    if type(given) is not dict or set(given) != {"n_tokens", "span_dimension"}:
        return "send n_tokens and span_dimension"
    if type(given["n_tokens"]) is not int or given["n_tokens"] != expected["n_tokens"]:
        return (f"n_tokens = {given['n_tokens']!r} is not the sentence's number of tokens with [CLS] and [SEP] "
                f"({expected['n_tokens']})")
    found = given["span_dimension"]
    if type(found) is not dict or set(found) != set(expected["span_dimension"]):
        return "span_dimension should have exactly the ranks 2 and 8 as keys"
    for rank, dimensions in expected["span_dimension"].items():
        if type(found[rank]) is not int or found[rank] not in dimensions:
            measured = " to ".join(str(d) for d in sorted({dimensions[0], dimensions[-1]}))
            return (f"span_dimension[{rank}] = {found[rank]!r} is not what input_span measures at rank {rank} "
                    f"({measured}): capture the update at that rank and measure it")
    return None


VALUES = {"span_dimension": (_span_dimensions, _span_dimension_compare,
                             'json.dumps({"n_tokens": n_tokens, "span_dimension": span_dimension})')}
"""The graded measurements, by name: how to measure them again, how to compare, what the kernel sends."""


# ---- grading --------------------------------------------------------------------------------------------------


def forbidden_use(source: str, names: tuple[str, ...]) -> str | None:
    """The first of ``names`` that ``source`` mentions (a name, an attribute or a string), else ``None``."""
    for node in ast.walk(ast.parse(source)):
        found = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute)
                 else node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None)
        if found in names:
            return found
    return None


def _prepared(exercise: HiddenExercise, answer: str) -> Verdict | None:
    """The verdict on an answer that cannot run (does not parse, calls the library's answer), else ``None``."""
    try:
        used = forbidden_use(answer, exercise.forbidden)
    except SyntaxError as error:
        return Verdict(False, f"{exercise.name}'s source does not parse ({runner.one_line(error)}).")
    if used:
        return Verdict(False, f"{exercise.name} uses the library's {used}, which computes the answer: write it "
                              "yourself.")
    return None


def _run(exercise: HiddenExercise, answers: list[str], cases: list[tuple], timeout: float) -> list[object]:
    """Run ``answers`` on ``cases`` in one ``runner`` process; each answer's result, or one line saying why none."""
    torch = _torch()
    import lora_leak_lib

    with tempfile.TemporaryDirectory(prefix="lora-leak-hidden-") as tmp:
        folder = Path(tmp)
        (folder / runner.JOB).write_text(json.dumps({"name": exercise.name, "answers": answers,
                                                     "modules": exercise.modules}))
        torch.save(cases, folder / runner.CASES)
        root = str(Path(lora_leak_lib.__file__).resolve().parents[1])
        environment = {**os.environ, "LORA_LEAK_DEVICE": "cpu"}
        environment["PYTHONPATH"] = os.pathsep.join(p for p in (root, environment.get("PYTHONPATH")) if p)
        try:
            done = subprocess.run([sys.executable, "-m", "lora_leak_lib.exercises.runner", str(folder)], cwd=folder,
                                  env=environment, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return [f"ran longer than {timeout:g} s on {len(cases)} small cases: look for a loop that never ends"] \
                * len(answers)
        outputs = folder / runner.OUTPUTS
        if not outputs.is_file():
            last = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
            return [f"stopped the process that runs it ({last[:200]})"] * len(answers)
        try:
            results = torch.load(outputs, weights_only=True)
        except Exception as error:  # noqa: BLE001 - an answer that smuggled an object in
            return [f"returned something that is not plain data ({runner.one_line(error)[:120]})"] * len(answers)
    if type(results) is not list or len(results) != len(answers):
        return ["left no readable result"] * len(answers)
    return results


def _verdict(exercise: HiddenExercise, result: object, cases: list[tuple], seed: int) -> Verdict:
    n = len(cases)
    if type(result) is str:
        return Verdict(False, f"{exercise.name} {result} (seed {seed}).")
    if type(result) is not dict or ("error" in result) == ("outputs" in result):
        return Verdict(False, f"{exercise.name} left no readable result (seed {seed}).")
    if "error" in result:
        return Verdict(False, f"{result['error']} (seed {seed}).")
    outputs = result["outputs"]
    if type(outputs) is not list or len(outputs) != n:
        return Verdict(False, f"{exercise.name} left no readable result (seed {seed}).")
    for i, (arguments, output) in enumerate(zip(cases, outputs)):
        where = f"(fresh case {i + 1} of {n}, seed {seed})"
        if type(output) is not list or len(output) != 2 or output[0] not in ("value", "error"):
            return Verdict(False, f"{exercise.name} left no readable result {where}.")
        if output[0] == "error":
            return Verdict(False, f"{exercise.call} {output[1]} {where}.")
        problem = exercise.compare(output[1], exercise.truth(*arguments), arguments)
        if problem:
            return Verdict(False, f"{exercise.call} {problem} {where}.")
    return Verdict(True, f"{exercise.call} is right on {n} fresh cases.")


def grade_answers(name: str, answers: list[str], seed: int | None = None, timeout: float = TIMEOUT) -> list[Verdict]:
    """Grade each answer to exercise ``name``: a function's source (``EXERCISES``) run on fresh cases drawn from
    ``seed`` (a new one when ``None``), or a JSON value (``VALUES``) compared with its measurement. Several answers
    to a function share one process that runs them (each in a namespace of its own): give several only when none
    of them tampers with that process, as tests do; a hidden test sends one."""
    if name in VALUES:
        measure, compare, _ = VALUES[name]
        truth = measure()
        verdicts = []
        for answer in answers:
            try:
                given = json.loads(answer)
            except ValueError:
                verdicts.append(Verdict(False, f"{name} did not arrive as JSON."))
                continue
            problem = compare(given, truth)
            verdicts.append(Verdict(problem is None, problem or f"{name} matches the measurement."))
        return verdicts
    if name not in EXERCISES:
        raise ValueError(f"no hidden test {name!r}: choose one of {', '.join([*EXERCISES, *VALUES])}.")
    exercise = EXERCISES[name]
    answers = [textwrap.dedent(answer) for answer in answers]  # a function defined under `if FLOWER:` is indented
    seed = secrets.randbelow(2**31) if seed is None else seed
    cases = exercise.cases(random.Random(seed))
    prepared = [_prepared(exercise, answer) for answer in answers]
    runnable = [answer for answer, verdict in zip(answers, prepared) if verdict is None]
    results = iter(_run(exercise, runnable, cases, timeout) if runnable else [])
    return [verdict or _verdict(exercise, next(results), cases, seed) for verdict in prepared]


def hidden_test(name: str, indent: str = "") -> str:
    """The hidden test of exercise ``name`` as its check cell holds it (standard library only: nothing the learner's
    kernel may have patched grades the answer)."""
    sends = VALUES[name][2] if name in VALUES else f"inspect.getsource({name})"
    lines = ["import inspect, json, subprocess, sys",
             f"answer = {sends}",
             f'graded = subprocess.run([sys.executable, "-m", "lora_leak_lib.exercises.hidden", "{name}"],',
             "                        input=answer, cwd=sys.prefix, capture_output=True, text=True)",
             "assert graded.returncode == 0, (graded.stdout + graded.stderr).strip()[-600:]"]
    return "".join(indent + line + "\n" for line in lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m lora_leak_lib.exercises.hidden NAME [--seed N] < ANSWER``: one line, exit status 0 when right."""
    parser = argparse.ArgumentParser(prog="python -m lora_leak_lib.exercises.hidden",
                                     description="grade one answer (its source, or its JSON value, on stdin)")
    parser.add_argument("name", choices=[*EXERCISES, *VALUES])
    parser.add_argument("--seed", type=int, default=None, help="repeat a grading (default: a fresh seed)")
    args = parser.parse_args(argv)
    verdict = grade_answers(args.name, [sys.stdin.read()], args.seed)[0]
    print(verdict)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
