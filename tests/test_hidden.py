"""Hidden tests grade a learner's function on fresh cases, with the truth in a process of its own: every notebook's
solution scores full marks, an empty copy, a plausible wrong answer and the cheats score zero.

Each notebook is graded from its JSON through the code nbgrader runs: the answer cell's solution block and the
check cell's hidden-test block, run in an IPython shell (the kernel's machinery) in a process of its own.
"""
import json
import random
import re
import subprocess
import sys
import textwrap

import nbformat
import pytest

from lora_leak_lib import course
from lora_leak_lib.course import student_copies
from lora_leak_lib.exercises import hidden, runner

NAME = re.compile(r'"lora_leak_lib\.exercises\.hidden", "(\w+)"')

WRONG = {  # one plausible wrong answer per graded function: the mistake each checker names first
    "label_from_bias": "def label_from_bias(bias_gradient):\n    return int(bias_gradient.argmax())\n",
    "label_from_delta": "def label_from_delta(bias_delta):\n    return int(bias_delta.argmin())\n",
    "message_bytes": "def message_bytes(r, d, layers, targets, classes):\n"
                     "    return layers * targets * (r * d + d * r) + classes * d + classes\n",
    "lora_gradients": "def lora_gradients(G, A, B, alpha, r):\n    return G @ A.T, B.T @ G\n",
    "rank_bound": "def rank_bound(n, r):\n    return n\n",
    "fedavg": "def fedavg(updates, weights):\n"
              "    return {n: sum(u[n] for u in updates) / len(updates) for n in updates[0]}\n",
    "gradient_from_delta": "def gradient_from_delta(delta, lr):\n    return {n: -d for n, d in delta.items()}\n",
    "linear_input": "def linear_input(G, g):\n    return G[int(g.abs().argmax())]\n",
    "leaked_tokens": "def leaked_tokens(word_gradient, special_ids):\n"
                     "    return torch.nonzero(word_gradient.abs().amax(dim=1) > 0).flatten().tolist()\n",
    "leaked_length": "def leaked_length(position_gradient):\n"
                     "    return int(torch.nonzero(position_gradient.abs().amax(dim=1) > 0).max()) + 1\n",
    "leaked_order": "def leaked_order(word_gradient, position_gradient, words, length):\n    return list(words)\n",
    "span_distance": "def span_distance(x, basis):\n"
                     "    return ((x - (x @ basis.T) @ basis).norm(dim=1) / x.norm(dim=1)) ** 2\n",
    "span_bound": "def span_bound(n, r):\n    return min(n, 2 * r)\n",
    "least_noise": "def least_noise(candidates, target_epsilon, sample_rate, steps):\n"
                   "    return max(s for s in candidates\n"
                   "               if defenses.epsilon(s, sample_rate, steps)[0] <= target_epsilon)\n",
    "recommend_defence": "def recommend_defence(verdict, threshold, keep):\n    return None\n",
    "span_dimension": "span_dimension = {2: 1, 8: 2}\n",  # a measurement, not a function
}
CHEATS = {  # answers that pass the visible check in a kernel, and must score nothing
    "reads the notebook's answer from the kernel": "def {name}(*arguments):\n    return notebook_answer\n",
    "returns an object equal to anything": "class Anything:\n    def __eq__(self, other):\n        return True\n\n"
                                            "    __hash__ = object.__hash__\n\n\n"
                                            "def {name}(*arguments):\n    return Anything()\n",
    "returns an int that equals anything": "class Yes(int):\n    def __eq__(self, other):\n        return True\n\n"
                                           "    __hash__ = int.__hash__\n\n\n"
                                           "def {name}(*arguments):\n    return Yes(0)\n",
    "asks the grader for the truth": "def {name}(*arguments):\n    from lora_leak_lib.exercises import hidden\n"
                                     "    return hidden.EXERCISES['{name}'].truth(*arguments)\n",
    "asks a checker": "def {name}(*arguments):\n    from lora_leak_lib import exercises\n"
                      "    return exercises.check_label_from_bias(0, arguments[0]).ok\n",
}
PATCH = """\
import torch
import lora_leak_lib as ll
from lora_leak_lib import exercises
from lora_leak_lib.exercises import hidden
from lora_leak_lib.exercises.feedback import Feedback
for checker in [n for n in exercises.CHECKERS if n.startswith("check_")]:
    setattr(exercises, checker, lambda *a, **k: Feedback(True, "patched"))
hidden.grade_answers = lambda *a, **k: [hidden.Verdict(True, "patched")]
hidden.main = lambda argv=None: 0
ll.gradients.relative_error = lambda *a, **k: 0.0
torch.allclose = lambda *a, **k: True
"""
CONTEXT = {  # what a notebook's solution block reads besides its arguments (07's is a measurement)
    "09_attack_lab.ipynb": "import types\nimport lora_leak_lib as ll\nprivate = ll.data.course_sentences()[7]\n"
                           "result = types.SimpleNamespace(original_tokens=ll.resolve('tiny-bert').tokenizer"
                           ".tokenize(private.text))\n",
}
KERNEL = """\
import json, sys
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance()
results = [bool(shell.run_cell(cell, silent=True).success) for cell in json.load(sys.stdin)]
print("RESULTS " + json.dumps(results))
"""


def _block(text, begin, end):
    start = text.index(begin)
    indent = text[text.rfind("\n", 0, start) + 1:start]
    return indent, text[start + len(begin) + 1:text.rindex("\n", 0, text.index(end)) + 1]


def graded(path):
    """A notebook's graded exercises: name, points, the check cell's hidden block and indent, the solution."""
    cells = nbformat.read(path, as_version=4).cells
    found = []
    for index, cell in enumerate(cells):
        grade = cell.metadata.get("nbgrader", {})
        if not (grade.get("grade") and student_copies.HIDDEN_BEGIN in cell.source):
            continue
        indent, block = _block(cell.source, student_copies.HIDDEN_BEGIN, student_copies.HIDDEN_END)
        answer = cells[index - 1].source
        _, solution = _block(answer, student_copies.SOLUTION_BEGIN, student_copies.SOLUTION_END)
        name = NAME.search(block)
        found.append(dict(name=name.group(1) if name else None, points=grade["points"], indent=indent, block=block,
                          solution=textwrap.dedent(solution), grade_id=grade["grade_id"]))
    return found


NOTEBOOKS = [p for p in course.course_notebooks() if graded(p)]


def test_every_check_cell_runs_the_hidden_test_of_its_answer():
    names = set()
    for path in NOTEBOOKS:
        for exercise in graded(path):
            name = exercise["name"]
            assert name in hidden.EXERCISES or name in hidden.VALUES, \
                f"{path.name} {exercise['grade_id']}: its hidden block is not one of exercises.hidden's"
            assert exercise["block"] == hidden.hidden_test(name, exercise["indent"]), f"{path.name} {name}"
            if name in hidden.EXERCISES:
                assert f"def {name}(" in exercise["solution"], f"{path.name}: the answer defines no {name}"
            names.add(name)
    assert names == set(hidden.EXERCISES) | set(hidden.VALUES), "a hidden test no notebook uses"


def test_the_hidden_test_in_the_kernel_is_standard_library_only():
    for name in [*hidden.EXERCISES, *hidden.VALUES]:
        text = hidden.hidden_test(name)
        assert text.startswith("import inspect, json, subprocess, sys\n") and "ll." not in text
        assert "exercises" not in text.replace('"lora_leak_lib.exercises.hidden"', "")


def _call(source, name, arguments, modules):
    scope = runner.namespace(modules)
    exec(source, scope)
    return runner.plain(scope[name](*arguments))


SOLUTIONS = [(path.name, e["name"], e["solution"]) for path in NOTEBOOKS for e in graded(path)
             if e["name"] in hidden.EXERCISES]


@pytest.mark.parametrize("notebook, name, solution", SOLUTIONS, ids=[f"{n[:2]}-{e}" for n, e, _ in SOLUTIONS])
def test_the_solution_is_right_and_a_plausible_wrong_answer_wrong_on_every_seed(notebook, name, solution):
    """In this process, on many seeds: the cases are built so that each wrong answer fails whatever the seed."""
    exercise = hidden.EXERCISES[name]
    for seed in range(2 if name == "least_noise" else 10):  # ε is slow to compute
        cases = exercise.cases(random.Random(seed))
        truths = [exercise.truth(*arguments) for arguments in cases]
        right = [exercise.compare(_call(solution, name, a, exercise.modules), t, a) for a, t in zip(cases, truths)]
        assert right == [None] * len(cases), (seed, right)
        wrong = [exercise.compare(_call(WRONG[name], name, a, exercise.modules), t, a) for a, t in zip(cases, truths)]
        assert any(wrong), f"seed {seed}: a wrong {name} passed every case"


def test_only_plain_values_come_back():
    import numpy as np
    import torch

    class Anything:
        def __eq__(self, other):
            return True

    class Yes(int):
        pass

    class Mine(torch.Tensor):
        pass

    assert runner.plain((1, 2.5, None, True, "a")) == [1, 2.5, None, True, "a"]
    assert runner.plain({"a": {3, 1, 2}}) == {"a": [1, 2, 3]}
    assert runner.plain(np.int64(3)) == 3 and type(runner.plain(np.float32(0.5))) is float
    kept = runner.plain(torch.nn.Parameter(torch.ones(2)))
    assert type(kept) is torch.Tensor and not kept.requires_grad
    assert type(runner.plain(np.zeros(3))) is torch.Tensor
    for cheat, says in ((Anything(), "a Anything: return plain values"), (Yes(1), "subclass of int"),
                        ([1, Anything()], "at [1]"), (torch.ones(2).as_subclass(Mine), "subclass of Tensor"),
                        ({(1, 2): 0}, "tuple key")):
        with pytest.raises(TypeError, match=re.escape(says)):
            runner.plain(cheat)


def test_an_answer_that_calls_the_library_answer_is_refused_before_it_runs():
    library = "def linear_input(G, g):\n    return ll.attacks.linear_leak(G, g)\n"
    verdict = hidden.grade_answers("linear_input", [library])[0]
    assert not verdict.ok and "linear_leak, which computes the answer" in verdict.message
    syntax = hidden.grade_answers("rank_bound", ["def rank_bound(n, r)\n"])[0]
    assert not syntax.ok and "does not parse" in syntax.message
    with pytest.raises(ValueError, match="no hidden test 'nope': choose one of label_from_bias"):
        hidden.grade_answers("nope", [""])


def _kernel(cells):
    """Run ``cells`` one after another in an IPython shell of a process of its own; whether each ran."""
    done = subprocess.run([sys.executable, "-c", KERNEL], input=json.dumps(cells), capture_output=True, text=True,
                          env=course.kernel_environment(), timeout=1800)
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULTS ")]
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line[-1][len("RESULTS "):])


@pytest.mark.slow  # grader processes: about 20 s a notebook on the 2-core CPU
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem[:2])
def test_a_notebook_scores_full_marks_solved_and_zero_empty_wrong_or_cheating(path):
    exercises = graded(path)
    blocks = [textwrap.dedent(e["block"]) for e in exercises]
    n = len(exercises)
    # the kernel: an empty copy (nothing defined), the solutions, then a learner who patches the library, the
    # checkers and the grader in the kernel and answers wrong
    context = CONTEXT.get(path.name, "import lora_leak_lib as ll\n")
    ran = _kernel([context, *blocks, *[cell for e, b in zip(exercises, blocks) for cell in (e["solution"], b)],
                   PATCH, *[cell for e, b in zip(exercises, blocks) for cell in (WRONG[e["name"]], b)]])
    assert ran[0], "the context ran"
    empty, solved, cheat = ran[1:1 + n], ran[1 + n:1 + 3 * n:2], ran[2 + 3 * n:][1::2]
    points = lambda passed: sum(e["points"] for e, ok in zip(exercises, passed) if ok)  # noqa: E731
    assert points(solved) == sum(e["points"] for e in exercises) > 0, solved
    assert points(empty) == 0 and points(cheat) == 0, (empty, cheat)
    # the answer process: each cheat and the wrong answer, graded on fresh cases
    for exercise in exercises:
        name = exercise["name"]
        if name in hidden.VALUES:
            wrong = json.dumps({"n_tokens": 14, "span_dimension": {"2": 1, "8": 2}})
            assert not hidden.grade_answers(name, [wrong])[0].ok
            continue
        answers = [WRONG[name], *[cheat.format(name=name) for cheat in CHEATS.values()]]
        verdicts = hidden.grade_answers(name, answers)
        assert not any(v.ok for v in verdicts), [str(v) for v in verdicts]
