"""The checkers' common ground: a verdict for the learner and the comparison of a tensor or a state with the
expected one (a learner's answer is compared where the expected value lives)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral

import torch


@dataclass(frozen=True)
class Feedback:
    """A checker's verdict: ``ok`` and one sentence for the learner. A wrong answer's message says what went wrong
    (a shape, a missing factor, a known mistake), never the expected answer: the hidden tests that give the points
    compare with it."""

    ok: bool
    message: str

    def __str__(self) -> str:
        return ("✅ " if self.ok else "❌ not yet: ") + self.message

    def _repr_markdown_(self) -> str:
        return str(self)


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    a, b = a.detach().double().to(b.device), b.detach().double()  # the learner's answer meets the expected value
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


def _integer(yours: object) -> int | None:
    """``yours`` as a Python int when it is one (a 0-d integer tensor counts), else ``None``."""
    if isinstance(yours, torch.Tensor) and yours.numel() == 1 and not yours.is_floating_point():
        return int(yours)
    if isinstance(yours, Integral) and not isinstance(yours, bool):
        return int(yours)
    return None


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
    return torch.cat([yours[n].detach().reshape(-1).double().to(t.device) for n, t in expected.items()]), None


def check_state(name: str, yours: object, expected: Mapping[str, torch.Tensor],
                common_mistakes: Mapping[str, Mapping[str, torch.Tensor]] | None = None) -> Feedback:
    """``check_tensor`` for a whole state (name → tensor), such as an update or an aggregate."""
    flat, problem = _flatten_state(name, yours, expected)
    if problem is not None:
        return problem

    def vector(state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([state[n].detach().reshape(-1).double() for n in expected])

    return check_tensor(name, flat, vector(expected), {k: vector(v) for k, v in (common_mistakes or {}).items()})


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
