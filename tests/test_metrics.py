"""Metric values on hand-made cases, batch matching and aggregation."""
import math

import pytest

from lora_leak_lib import metrics


def test_token_accuracy_counts_positions():
    assert metrics.token_accuracy([1, 2, 3, 4], [1, 2, 3, 4]) == 1.0
    assert metrics.token_accuracy([1, 2, 3, 4], [1, 9, 3, 9]) == 0.5
    assert metrics.token_accuracy([1, 2, 3, 4], [4, 3, 2, 1]) == 0.0  # right set, wrong order
    assert metrics.token_accuracy([1, 2, 3, 4], [1, 2]) == 0.5  # missing positions are wrong
    assert metrics.token_accuracy([1, 2], [1, 2, 7]) == 1.0


def test_token_accuracy_rejects_empty_reference_and_text():
    with pytest.raises(ValueError, match="no tokens"):
        metrics.token_accuracy([], [1])
    with pytest.raises(ValueError, match="tokenise"):
        metrics.token_accuracy("a b", [1])


def test_token_set_scores_ignore_order_and_repeats():
    assert metrics.token_set_scores([1, 2, 3, 4], [4, 3, 2, 1]) == {"precision": 1.0, "recall": 1.0}
    scores = metrics.token_set_scores([1, 2, 3, 4], [1, 1, 5])
    assert scores == {"precision": 0.5, "recall": 0.25}
    assert metrics.token_set_scores([1], []) == {"precision": 0.0, "recall": 0.0}


def test_rouge_on_hand_made_cases():
    assert metrics.rouge("the cat sat", "the cat sat") == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}
    swapped = metrics.rouge("the cat sat", "sat cat the")
    assert swapped["rouge1"] == 1.0 and swapped["rouge2"] == 0.0
    assert swapped["rougeL"] == pytest.approx(1 / 3)
    half = metrics.rouge("a b c d", "a b")  # precision 1, recall 1/2
    assert half["rouge1"] == pytest.approx(2 / 3)
    assert metrics.rouge("The cat!", "the cat")["rouge1"] == 1.0  # case and punctuation are ignored
    assert metrics.rouge("the cat", "")["rouge1"] == 0.0


def test_exact_match():
    assert metrics.exact_match("my pin is 1234", " my pin is 1234 ")
    assert not metrics.exact_match("my pin is 1234", "my pin is 1235")
    assert metrics.exact_match([1, 2], [1, 2]) and not metrics.exact_match([1, 2], [2, 1])
    with pytest.raises(ValueError, match="not one of each"):
        metrics.exact_match("a", [1])


def test_sentence_scores_row():
    row = metrics.sentence_scores("a b c", "a c b", [1, 2, 3], [1, 3, 2])
    assert row["token_accuracy"] == pytest.approx(1 / 3)
    assert row["precision"] == row["recall"] == row["rouge1"] == 1.0
    assert row["exact_match"] == 0.0
    assert set(metrics.sentence_scores("a", "a")) == {"rouge1", "rouge2", "rougeL", "exact_match"}


def test_match_batch_finds_the_assignment():
    references = ["my card number is secret", "the weather is nice today", "call me at noon"]
    reconstructions = ["today nice weather the is", "noon me call at", "secret number card my is"]
    assert metrics.match_batch(references, reconstructions) == [2, 0, 1]
    assert metrics.match_batch(references, reconstructions[:1]) == [-1, 0, -1]
    with pytest.raises(ValueError, match="no references"):
        metrics.match_batch([], ["a"])


def test_match_batch_is_a_global_not_greedy_assignment():
    # Greedy would give reference 0 the reconstruction "a b" (ROUGE-1 0.8) and leave reference 1 with 0.
    references = ["a b c", "a b"]
    reconstructions = ["a b", "a b c"]
    assert metrics.match_batch(references, reconstructions) == [1, 0]


def test_score_batch_matches_then_scores():
    rows = metrics.score_batch(["a b", "c d"], ["c d", "a b"], [[1, 2], [3, 4]], [[3, 4], [1, 2]])
    assert [r["token_accuracy"] for r in rows] == [1.0, 1.0]
    rows = metrics.score_batch(["a b", "c d"], ["a b"])
    assert [r["rouge1"] for r in rows] == [1.0, 0.0]


def test_summarize_mean_and_spread():
    summary = metrics.summarize([{"rouge1": 1.0, "text": "x"}, {"rouge1": 0.5, "text": "y"}])
    assert summary == {"rouge1": {"mean": 0.75, "std": 0.25, "n": 2}}
    summary = metrics.summarize([{"a": math.nan}, {"a": 1.0}])
    assert summary["a"]["mean"] == 1.0 and summary["a"]["n"] == 1
    with pytest.raises(ValueError, match="no rows"):
        metrics.summarize([])
