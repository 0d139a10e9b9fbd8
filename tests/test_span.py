"""The span attack: first-layer lora_A rows lie in the span of the embedding outputs, so tokens come back."""
import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import config
from lora_leak_lib.attacks import span
from lora_leak_lib.models import resolve


@pytest.fixture(scope="module")
def tiny():
    tokenizer = ll.models.resolve("tiny-bert").tokenizer
    return tokenizer, ll.attacks.public_inputs(resolve("tiny-bert"), 0), ll.attacks.allowed_tokens(tokenizer)


def planted_rows(inputs, ids, rows, seed=0):
    """Random combinations of a planted sentence's first-layer inputs: what dL/dA = s·Bᵀ·Σ δ_t x_tᵀ looks like."""
    x = inputs.vectors(torch.tensor(ids), torch.arange(len(ids)))
    weights = torch.randn(rows, len(ids), generator=torch.Generator().manual_seed(seed), dtype=torch.double)
    return weights.to(x.device) @ x


def test_closed_form_distances_match_explicit_vectors(tiny):
    tokenizer, inputs, _ = tiny
    ids = tokenizer("my pin is four four two one")["input_ids"]
    basis = ll.attacks.input_span(planted_rows(inputs, ids, 16))
    tokens = torch.tensor([1996, 2026, 7279, 5000], device=config.device())
    fast = inputs.span_distances(basis, len(ids), tokens)
    for p in range(len(ids)):
        x = inputs.vectors(tokens, torch.full((4,), p))
        slow = (x - (x @ basis.T) @ basis).norm(dim=1) / x.norm(dim=1)
        # the closed form subtracts squared norms: an in-span distance comes out near sqrt(d·eps64) ≈ 2e-7, not 0
        assert torch.allclose(fast[p], slow, atol=1e-6)


def test_planted_sentence_within_rank_is_recovered_exactly(tiny):
    tokenizer, inputs, vocab = tiny
    ids = tokenizer("my pin is four four two one")["input_ids"]
    basis = ll.attacks.input_span(planted_rows(inputs, ids, 16))
    assert basis.shape[0] == len(ids)  # 16 rows of 9 inputs: the span is all of them
    dist = inputs.span_distances(basis, len(ids), vocab)
    assert vocab[dist[1:-1].argmin(1)].tolist() == ids[1:-1]
    assert float(dist[1:-1].min(1).values.max()) < 1e-6
    result = span.recover_sentence(basis, inputs, vocab, len(ids), (101, 102))
    assert result.ids == ids and result.certified


def test_planted_sentence_beyond_rank_is_repaired_by_search(tiny):
    tokenizer, inputs, vocab = tiny
    ids = tokenizer("please send the money to my old bank account today")["input_ids"]  # 13 inputs
    basis = ll.attacks.input_span(planted_rows(inputs, ids, 10))              # rank 10 < 13
    assert basis.shape[0] == 10
    result = span.recover_sentence(basis, inputs, vocab, len(ids), (101, 102))
    assert result.ids == ids and result.certified


def test_minilm_update_after_training_gives_the_sentence_back():
    text = "my password is blue horse battery"
    shared = ll.fl.capture_update([text], [0], resolve("minilm"), rank=8, trained_steps=20)
    result = span.span_attack(shared)  # length unknown: guessed from [SEP]
    assert result.texts == [text]
    assert result.loss_history[0] < span.CERTIFIED


def test_round_zero_and_bad_inputs_raise_clear_errors(tiny):
    shared = ll.fl.capture_update(["a b c"], [0], resolve("tiny-bert"), rank=4, trained_steps=0)
    with pytest.raises(ValueError, match="round 0"):
        span.span_attack(shared)
    with pytest.raises(ValueError, match="no lora_A of layer 0"):
        ll.attacks.first_layer_rows({"classifier.bias": torch.zeros(2)})
    later = ll.fl.capture_update(["a b c"], [0], resolve("tiny-bert"), rank=4, trained_steps=2)
    with pytest.raises(ValueError, match="without \\[CLS\\]"):
        span.span_attack(later, ll.Knowledge(length=10_000))


def test_several_rounds_of_one_client_recover_a_sentence_longer_than_the_stacked_rank():
    """r = 1 on query and value: 2 rows a round for 12 inputs. One round leaves most words out; four rounds of
    the same client's gradient, each under that round's global adapter, span enough to give it back exactly."""
    text = "please send the money to my old bank account today"  # 10 tokens, 12 inputs > 2r = 2
    updates = [ll.fl.capture_update([text], [1], resolve("tiny-bert"), rank=1, trained_steps=r) for r in (20, 25, 30, 35)]
    known = ll.Knowledge(length=10)
    one = span.span_attack(updates[0], known, sweeps=0, span_tokens=False)  # the per-position test alone: 2 of 12
    four = span.span_attack(updates[0], ll.Knowledge(length=10, other_rounds=updates[1:]))
    assert one.texts != [text] and four.texts == [text] and four.loss < span.CERTIFIED


def test_the_first_layer_tables_do_not_depend_on_the_number_of_labels():
    """Why ``public_inputs`` is kept per model, seed and device only: the head is built after the embeddings."""
    model = resolve("tiny-bert")
    two, five = model.input_tables(2, 0), model.input_tables(5, 0)
    assert torch.equal(two.words, five.words) and torch.equal(two.positions, five.positions)
    assert all(torch.equal(a, b) for a, b in zip(two.norm.state_dict().values(), five.norm.state_dict().values()))
