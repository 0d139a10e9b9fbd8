"""Exercises: checkers that give a learner specific feedback, and the student copies of the notebooks."""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import torch

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
PLACEHOLDER = ("# YOUR CODE HERE", "raise NotImplementedError")
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
STUDENT_NOTEBOOKS = NOTEBOOKS / "student"


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


def check_rank_bound(yours: object, n_tokens: int | Sequence[int], rank: int) -> Feedback:
    """Check the predicted rank ``min(n, r)`` of a LoRA gradient, for one token count ``n`` or a list of them."""
    many = not isinstance(n_tokens, Integral)
    ns = list(n_tokens) if many else [int(n_tokens)]
    answers = list(yours) if many and isinstance(yours, Sequence) and not isinstance(yours, str) else [yours]
    if many and len(answers) != len(ns) or not many and isinstance(yours, Sequence):
        return Feedback(False, f"give one rank per token count: {len(ns)} {'ints' if many else 'int'}.")
    given = [_integer(a) for a in answers]
    if any(g is None for g in given):
        return Feedback(False, "each rank should be an int: the rank of a matrix is a whole number.")
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


def strip_solutions(source: str) -> str:
    """Replace every ``### BEGIN SOLUTION`` … ``### END SOLUTION`` block by a placeholder at its indent."""
    pattern = re.compile(rf"^([ \t]*){re.escape(SOLUTION_BEGIN)}.*?^[ \t]*{re.escape(SOLUTION_END)}[^\n]*",
                         re.S | re.M)

    def placeholder(match: re.Match[str]) -> str:
        return "\n".join(match.group(1) + line for line in PLACEHOLDER)

    stripped = pattern.sub(placeholder, source)
    if SOLUTION_BEGIN in stripped or SOLUTION_END in stripped:
        raise ValueError("unbalanced solution markers: every ### BEGIN SOLUTION needs one ### END SOLUTION.")
    return stripped


def student_version(notebook: "nbformat.NotebookNode") -> "nbformat.NotebookNode":
    """A copy of a solution notebook with every solution block replaced, all outputs cleared and its Colab
    badge opening the copy."""
    from . import colab  # the front end that owns the badges

    student = copy.deepcopy(notebook)
    colab.student_badge(student)  # a student copy's badge opens the student copy
    for cell in student.cells:
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    return student


def _student_text(path: Path) -> str:
    import nbformat  # a dev dependency: only the generator of student copies needs it

    return nbformat.writes(student_version(nbformat.read(path, as_version=4))) + "\n"


def write_student_notebooks(source: Path = NOTEBOOKS, target: Path = STUDENT_NOTEBOOKS) -> list[Path]:
    """Write the student copy of every notebook in ``source`` into ``target``; returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("[0-9][0-9]_*.ipynb")):
        out = target / path.name
        out.write_text(_student_text(path))
        written.append(out)
    return written


def stale_student_notebooks(source: Path = NOTEBOOKS, target: Path = STUDENT_NOTEBOOKS) -> list[str]:
    """Names of student copies that are missing or differ from what the solution notebooks generate."""
    return [path.name for path in sorted(source.glob("[0-9][0-9]_*.ipynb"))
            if not (target / path.name).exists() or (target / path.name).read_text() != _student_text(path)]
