"""The experiment layer: simulate, attack and score an update; the leakage table, watched rounds, the
article's experiment replicated, defence sweep.

It sits above ``fl``, ``defenses`` and ``attacks`` and is what the CLI, the lab, Flower and the benchmarks call.
"""
from . import exactness, leakage, multi_round, replication, sweep
from .core import (DEFAULT_TRAINED_STEPS, MAX_TRAINED_STEPS, SentenceResult, attack_update, check_trained_steps,
                   known_defence, longest, reference_ids, result_rows, score)
from .leakage import BENCHMARK, Setting, run_leakage_setting
from .multi_round import Watch, attack_texts, watched_messages

__all__ = ["BENCHMARK", "DEFAULT_TRAINED_STEPS", "MAX_TRAINED_STEPS", "SentenceResult", "Setting", "attack_texts",
           "attack_update", "check_trained_steps", "exactness", "known_defence", "leakage", "longest", "multi_round",
           "reference_ids", "replication", "result_rows", "run_leakage_setting", "score", "sweep", "Watch",
           "watched_messages"]
