"""Exercises: checkers that give a learner specific feedback on an answer without giving the answer away, one module
per part of the course. They run in the visible check cells; the points come from nbgrader's hidden tests (the
student copies are made by ``student_copies``, graded by ``grading``)."""
from .defences import check_defence_choice, check_noise_multiplier, check_recorded_defence
from .federated import (check_gradient_from_delta, check_lora_gradient_A, check_lora_gradient_B, check_rank_bound,
                        check_update_bytes, check_weighted_mean)
from .feedback import Feedback, check_state, check_tensor
from .leakage import (check_label_from_bias, check_linear_input, check_sequence_length, check_span_dimension,
                      check_span_distance, check_token_order, check_token_set)

__all__ = ["Feedback", "check_state", "check_tensor", "check_lora_gradient_A", "check_lora_gradient_B",
           "check_rank_bound", "check_update_bytes", "check_weighted_mean", "check_gradient_from_delta",
           "check_label_from_bias", "check_linear_input", "check_token_set", "check_sequence_length",
           "check_token_order", "check_span_distance", "check_span_dimension", "check_defence_choice",
           "check_noise_multiplier", "check_recorded_defence"]
