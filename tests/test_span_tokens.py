"""One round's first layer gives a long sentence's tokens (positions projected out) and their coefficients its order."""
import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib.attacks import span, span_tokens
from lora_leak_lib.models import resolve

# 46 tokens with [CLS] and [SEP]: far past the 16 stacked rows of one round, with repeated words
TEXT = ("the old gardener told the children that the quiet garden keeps its secrets under the stone wall, "
        "and the children listened while the rain fell on the roof of the shed")


@pytest.fixture(scope="module")
def case():
    model = resolve("minilm")
    shared = ll.fl.capture_update([TEXT], [1], model, rank=8, trained_steps=20)
    ids = model.tokenizer(TEXT)["input_ids"]
    inputs, basis = span.stacked_span(shared)
    return model, ids, inputs, basis


def test_the_token_set_is_the_sentence_s_and_the_coefficients_put_each_token_in_its_place(case):
    model, ids, inputs, basis = case
    assert basis.shape[0] == 16 < len(ids)                             # beyond the stacked rank
    vocab = ll.attacks.allowed_tokens(model.tokenizer)
    special = (model.tokenizer.cls_token_id, model.tokenizer.sep_token_id)
    tokens, left = span_tokens.tokens_in_span(basis, inputs, vocab, len(ids), list(special), span.CERTIFIED)
    assert sorted(tokens) == sorted(set(ids)) and left < span.CERTIFIED
    w, u = span_tokens.coefficients(basis, inputs, tokens, len(ids))
    for p, token in enumerate(ids):                                    # w_v = Σ u_p over v's positions
        if ids.count(token) == 1:
            gap = (w[tokens.index(token)] - u[p]).norm() / u[p].norm()  # MATCH_TOL is a share of the norm
            assert gap < span_tokens.MATCH_TOL
    assert span_tokens.order_tokens(w, u, tokens, {0: special[0], len(ids) - 1: special[1]}) == ids
    found, residual = span_tokens.sentence_from_span(basis, inputs, vocab, len(ids), special, span.CERTIFIED)
    assert found == ids and residual < span.CERTIFIED


def test_order_tokens_matches_repeated_tokens_to_the_sum_of_their_positions():
    generator = torch.Generator().manual_seed(0)
    sentence = [7, 1, 2, 1, 3, 1, 4, 2, 5, 1, 8]                       # token 1 four times, 2 twice
    u = torch.randn(len(sentence), 6, generator=generator, dtype=torch.float64)
    tokens = sorted(set(sentence))
    w = torch.stack([sum(u[p] for p, t in enumerate(sentence) if t == token) for token in tokens])
    assert span_tokens.order_tokens(w, u, tokens, {0: 7, 10: 8}) == sentence
    noisy = w + 1e-4 * torch.randn(w.shape, generator=generator, dtype=torch.float64) * w.norm(dim=1, keepdim=True)
    assert span_tokens.order_tokens(noisy, u, tokens, {0: 7, 10: 8}) == sentence   # rounding within MATCH_TOL


def test_no_room_in_the_width_or_no_certified_set_is_no_answer(case):
    model, ids, inputs, basis = case
    vocab = ll.attacks.allowed_tokens(model.tokenizer)
    special = (model.tokenizer.cls_token_id, model.tokenizer.sep_token_id)
    too_long = (inputs.tokens.shape[1] - basis.shape[0]) // 2
    assert not span_tokens.fits(inputs, basis, too_long)
    assert span_tokens.sentence_from_span(basis, inputs, vocab, too_long, special, span.CERTIFIED) is None
    assert span_tokens.sentence_from_span(basis, inputs, vocab, 12, special, span.CERTIFIED) is None  # too few places


def test_the_span_attack_uses_the_token_set_beyond_the_rank_and_can_do_without(case):
    model, ids, inputs, basis = case
    vocab = ll.attacks.allowed_tokens(model.tokenizer)
    special = (model.tokenizer.cls_token_id, model.tokenizer.sep_token_id)
    assert span.recover_sentence(basis, inputs, vocab, len(ids), special).ids == ids
    without = span.recover_sentence(basis, inputs, vocab, len(ids), special, sweeps=0, span_tokens=False)
    assert without.ids != ids and not without.certified               # per position alone: no certificate
