"""Run a learner's answer alone, the half of a hidden test that never sees the truth.

``python -m lora_leak_lib.exercises.runner FOLDER`` is started by ``hidden`` in a process of its own: it reads the
answers (function sources) and the cases' arguments from ``FOLDER``, runs each answer in a fresh namespace (its
arguments, ``torch``, ``math``, ``numpy`` as ``np``, ``lora_leak_lib`` as ``ll`` and the exercise's documented
modules; no checker and no grader can be imported), and writes back what each call returned as plain values:
``None``, ``bool``, ``int``, ``float``, ``str``, lists, dicts and plain CPU tensors, nothing else. The grader reads
them with ``torch.load(weights_only=True)`` and computes the truth in its own process.
"""
from __future__ import annotations

import builtins
import copy
import importlib
import json
import math
import sys
from pathlib import Path

JOB, CASES, OUTPUTS = "job.json", "cases.pt", "outputs.pt"
"""The files of a run in its folder: the answers and their exercise, the arguments of every case, the results."""
BLOCKED = ("lora_leak_lib.exercises.defences", "lora_leak_lib.exercises.federated", "lora_leak_lib.exercises.feedback",
           "lora_leak_lib.exercises.leakage", "lora_leak_lib.exercises.hidden")
"""The checkers and the grader: an answer that imports one fails (each is an oracle for the truth)."""


def one_line(error: BaseException) -> str:
    """An exception as one short line, ``NameError: name 'x' is not defined``."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def plain(value: object, where: str = "") -> object:
    """``value`` as plain data: exactly ``None``, ``bool``, ``int``, ``float``, ``str``, a list (from a list or
    tuple), a sorted list (from a set), a dict with ``str`` or ``int`` keys, or a plain detached CPU tensor; numpy
    scalars and arrays become Python numbers and tensors. Anything else (an ``int`` subclass, an object whose
    ``==`` always holds, a tensor subclass) raises ``TypeError`` saying what it is (``where``: its place inside the
    result, e.g. ``[1]``) and what to return instead."""
    import numpy as np
    import torch

    kind = type(value)
    at = f" at {where}" if where else ""
    if value is None or kind in (bool, int, float, str):
        return value
    if kind in (list, tuple):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind in (set, frozenset):
        items = [plain(v, f"{where}{{…}}") for v in value]
        try:
            return sorted(items)
        except TypeError:
            raise TypeError(f"a set of mixed types{at}: return a list") from None
    if kind is dict:
        keys = [k for k in value if type(k) not in (str, int)]
        if keys:
            raise TypeError(f"a dict with a {type(keys[0]).__name__} key{at}: use str or int keys")
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if kind in (torch.Tensor, torch.nn.Parameter):
        return value.detach().cpu().clone()  # a Parameter's detach() is a plain Tensor
    if kind is np.ndarray:
        return plain(torch.tensor(value), where)  # a copy of the array
    if isinstance(value, (np.integer, np.floating, np.bool_)) and kind.__module__ == "numpy":
        return value.item()
    bases = (bool, int, float, str, list, tuple, dict, set, torch.Tensor)
    base = next((b for b in bases if isinstance(value, b)), None)
    if base is not None:
        raise TypeError(f"a {kind.__name__}{at}, a subclass of {base.__name__}: return a plain {base.__name__}")
    raise TypeError(f"a {kind.__name__}{at}: return plain values (an int, a float, a list, a dict or a torch.Tensor)")


def namespace(modules: dict[str, str]) -> dict:
    """A fresh namespace for one answer: what every answer may use, and the exercise's ``modules`` (name →
    module)."""
    import numpy
    import torch

    import lora_leak_lib

    found = {"__name__": "answer", "__builtins__": builtins, "torch": torch, "math": math, "np": numpy,
             "numpy": numpy, "ll": lora_leak_lib}
    found.update({name: importlib.import_module(module) for name, module in modules.items()})
    return found


def run_answer(source: str, name: str, cases: list, modules: dict[str, str]) -> dict:
    """Run one answer's ``name`` on every case: ``{"outputs": [["value", plain] or ["error", line], ...]}``, or
    ``{"error": line}`` when the answer does not define a function ``name``."""
    scope = namespace(modules)
    try:
        exec(compile(source, "<answer>", "exec"), scope)
    except BaseException as error:  # noqa: BLE001 - whatever an answer raises is its verdict
        return {"error": f"the answer cell's code raised {one_line(error)}"}
    function = scope.get(name)
    if not callable(function):
        return {"error": f"no function {name} in the answer: define it with def {name}(...)"}
    outputs = []
    for arguments in cases:
        try:
            result = function(*copy.deepcopy(arguments))
        except BaseException as error:  # noqa: BLE001
            outputs.append(["error", "raised " + one_line(error) + _hint(error)])
            continue
        try:
            outputs.append(["value", plain(result)])
        except TypeError as error:
            outputs.append(["error", f"returned {error}"])
    return {"outputs": outputs}


def _hint(error: BaseException) -> str:
    """What to do about an error that a graded answer meets and a notebook does not."""
    if isinstance(error, ModuleNotFoundError) and error.name in BLOCKED:
        return ": the checkers and the grader are not there for a graded answer"
    if isinstance(error, NameError):
        return (": the function runs alone on fresh cases, so use only its arguments, torch, math, np and ll "
                "(import anything else inside it)")
    return ""


def main(argv: list[str] | None = None) -> int:
    """``python -m lora_leak_lib.exercises.runner FOLDER``: run the answers of ``FOLDER/job.json`` on the cases of
    ``FOLDER/cases.pt`` and write what they returned to ``FOLDER/outputs.pt``."""
    folder = Path((sys.argv[1:] if argv is None else argv)[0])
    import torch

    job = json.loads((folder / JOB).read_text())
    cases = torch.load(folder / CASES, weights_only=True)
    for module in BLOCKED:
        sys.modules[module] = None  # import ... raises ModuleNotFoundError
    results = [run_answer(source, job["name"], cases, job["modules"]) for source in job["answers"]]
    torch.save(results, folder / OUTPUTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
