"""Exercises: checkers that give a learner specific feedback on an answer without giving the answer away, one module
per part of the course, and the hidden tests that grade it (``hidden``). The checkers run in the visible check cells
on the notebook's own case; the points come from nbgrader's hidden tests, which run the learner's answer on fresh
cases in processes of their own (the student copies are made by ``course.student_copies``, graded by
``course.grading``).

Each checker is imported on first use (``exercises.check_label_from_bias``), so that ``runner``, which runs a
learner's answer, can import this package without loading a single checker.
"""
from ..lazy import on_first_use

CHECKERS = {"Feedback": "feedback", "check_state": "feedback", "check_tensor": "feedback",
            "check_lora_gradient_A": "federated", "check_lora_gradient_B": "federated",
            "check_rank_bound": "federated", "check_update_bytes": "federated", "check_weighted_mean": "federated",
            "check_gradient_from_delta": "federated", "check_label_from_bias": "leakage",
            "check_linear_input": "leakage", "check_token_set": "leakage", "check_sequence_length": "leakage",
            "check_token_order": "leakage", "check_span_distance": "leakage", "check_span_dimension": "leakage",
            "check_defence_choice": "defences", "check_noise_multiplier": "defences",
            "check_recorded_defence": "defences"}
"""Every checker (and ``Feedback``), with the module that defines it."""
__all__ = list(CHECKERS)


__getattr__, __dir__ = on_first_use(__name__, CHECKERS, globals())
"""``exercises.check_label_from_bias``, ...: the checker, its module imported on first use; a module of the package
(``exercises.hidden``) likewise."""
