"""The later-layer certificate: every layer's lora_A rows lie in the span of that layer's hidden states."""
import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib.attacks import later_layers, search, span
from lora_leak_lib.models import resolve

TEXT = "the quiet garden keeps its secrets under the old stone wall"


@pytest.fixture(scope="module")
def case():
    shared = ll.fl.capture_update([TEXT], [1], resolve("minilm"), rank=8, trained_steps=20)
    tokenizer = ll.models.resolve("minilm").tokenizer
    ids = tokenizer(TEXT)["input_ids"]
    inputs = ll.attacks.public_inputs(resolve("minilm"))
    return shared, ids, inputs, ll.attacks.allowed_tokens(tokenizer)


def test_true_sentence_leaves_no_residual_in_any_layer_and_a_swap_does(case):
    shared, ids, _, _ = case
    score = later_layers.LayerResidual(shared, layers=(0, 1))
    swapped = list(ids)
    swapped[2], swapped[5] = swapped[5], swapped[2]
    values = score([ids, swapped])
    assert float(values[0]) < span.CERTIFIED
    assert float(values[1]) > 100 * span.CERTIFIED


def test_batched_scoring_gives_each_candidate_the_score_it_gets_alone(case):
    """Issue 24: a search step scores all its moves in one batched pass; each must get the score it gets alone."""
    shared, ids, _, _ = case
    score = later_layers.LayerResidual(shared, layers=(0, 1))
    candidates = [s for s, _ in later_layers.neighbours(ids, {3: [2000, 2001]}, window=8)][::7] + [ids]
    together = score(candidates, chunk=16)
    alone = torch.cat([score([c]) for c in candidates])
    # the hidden states are float32 (unit roundoff 6e-8), so a batched forward pass may round them differently;
    # the residuals themselves are float64 and a k = 16 sum
    assert torch.allclose(together, alone, rtol=1e-5, atol=1e-7)
    assert float(together[-1]) < span.CERTIFIED < float(together[:-1].min())
    hidden = score.layer_inputs(torch.tensor(candidates), (0, 1))
    for layer, states in hidden.items():  # the Gram route against the QR of every candidate, on the same states
        by_qr = search.projection_residuals(score.bases[layer], search.input_basis(states.double()))
        assert torch.allclose(search.gram_residuals(score.bases[layer], states.double()), by_qr, rtol=1e-10, atol=1e-12)


def test_layers_without_lora_are_skipped_and_none_at_all_is_an_error(case):
    shared, _, _, _ = case
    assert set(later_layers.LayerResidual(shared, layers=(0, 1, 7)).bases) == {0, 1}
    with pytest.raises(ValueError, match="no layer"):
        later_layers.LayerResidual(shared, layers=(7,))


def test_substitutes_rank_the_missing_token_first_when_the_others_are_right(case):
    shared, ids, inputs, vocab = case
    basis = ll.attacks.input_span(ll.attacks.first_layer_rows(shared.update))
    wrong = list(ids)
    wrong[4] = ll.models.resolve("minilm").tokenizer.convert_tokens_to_ids("banana")
    found = later_layers.substitutes(basis, inputs, wrong, vocab, count=8)
    assert set(found) == set(range(1, len(ids) - 1))
    assert found[4][0] == ids[4]


def test_neighbours_keep_cls_and_sep_and_combine_applies_disjoint_steps():
    ids = [101, 1, 2, 3, 4, 102]
    steps = later_layers.neighbours(ids, {2: [9]}, window=8)
    assert all(s[0] == 101 and s[-1] == 102 and s != ids for s, _ in steps)
    assert len(steps) == 12 + 6 + 1  # moves between 4 inner places, swaps of 2 of them, one substitute
    assert ([101, 1, 9, 3, 4, 102], {2}) in steps
    swap = ([101, 2, 1, 3, 4, 102], {1, 2})
    substitution = ([101, 1, 2, 3, 9, 102], {4})
    assert search.combine(ids, [swap, substitution]) == [101, 2, 1, 3, 9, 102]


def test_deep_refine_repairs_a_swap_and_a_wrong_token(case):
    shared, ids, inputs, vocab = case
    broken = list(ids)
    broken[2], broken[6] = broken[6], broken[2]
    broken[9] = ll.models.resolve("minilm").tokenizer.convert_tokens_to_ids("banana")
    repaired, residual = later_layers.deep_refine(shared, inputs, broken, vocab)
    assert repaired == ids
    assert residual < span.CERTIFIED


def test_later_layers_attack_leaves_a_certified_span_result_alone(case):
    shared, ids, _, _ = case
    result = ll.get_attack("later-layers").reconstruct(shared, ll.Knowledge(length=len(ids) - 2))
    assert result.token_ids == [ids[1:-1]] and result.attack == "later-layers"
    assert len(result.loss_history) == 1 and result.loss == result.loss_history[0] < span.CERTIFIED


def test_the_search_budget_is_counted_in_iterations_not_seconds(case):
    """A slow machine (here: a callback that sleeps every iteration) gets the same sentence from the same seed."""
    import time

    shared, ids, inputs, vocab = case
    inner = ids[1:-1]
    broken = [ids[0]] + inner[::-1] + [ids[-1]]  # every word in the wrong place: many iterations to repair
    fast = later_layers.deep_refine(shared, inputs, broken, vocab, iterations=3)
    iterations = []
    slow = later_layers.deep_refine(shared, inputs, broken, vocab, iterations=3,
                                    on_iteration=lambda i, best: (iterations.append(i), time.sleep(0.5)))
    assert iterations == [1, 2] and fast[1] > span.CERTIFIED  # the budget, not the certificate, ended both
    assert slow == fast
