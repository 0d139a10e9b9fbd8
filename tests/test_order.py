"""The word-order prior: counts from shipped text, batch threading and prior-scored swaps."""
import pytest

from lora_leak_lib import models
from lora_leak_lib.attacks import order


@pytest.fixture(scope="module")
def prior():
    return order.default_prior()


def ids(text):
    return models.resolve("tiny-bert").tokenizer(text)["input_ids"][1:-1]


def test_prior_is_built_from_shipped_text_not_the_benchmark():
    texts = order.public_texts()
    assert len(texts) > 100 and all(not t.startswith("#") for t in texts)
    assert not any("rt-polarity" in t for t in texts)


def test_prior_prefers_english_order(prior):
    assert prior.score(ids("the film is too long")) > prior.score(ids("long too is film the"))
    assert prior.log_prob(ids("of")[0], ids("the")[0]) > prior.log_prob(ids("the")[0], ids("of")[0])


def test_unknown_tokens_get_a_finite_zipf_floor(prior):
    rare = ids("xylophone")
    assert all(prior.log_prob(101, t) > -40 for t in rare)
    assert prior.unigram[1996] > prior.unigram[20000]  # 'the' is more likely than a rare word


def test_assemble_batch_threads_columns_into_sentences(prior):
    a, b = ids("the film is good"), ids("my money is gone")
    columns = [[a[i], b[i]] for i in range(4)] + [[102]]
    sentences = order.assemble_batch(columns, 2, prior, 102)
    assert sorted(sentences) == sorted([a, b])


def test_assemble_batch_shares_a_token_that_both_sentences_use(prior):
    a, b = ids("the film is good"), ids("the money is gone")
    columns = [sorted({a[i], b[i]}) for i in range(4)] + [[102]]
    sentences = order.assemble_batch(columns, 2, prior, 102)
    assert [s[0] for s in sentences] == [a[0], a[0]] and all(len(s) == 4 for s in sentences)
    assert {s[1] for s in sentences} == {a[1], b[1]} and {s[3] for s in sentences} == {a[3], b[3]}


def test_bad_inputs_raise(prior):
    with pytest.raises(ValueError, match="at least one sentence"):
        order.build_prior([])
    with pytest.raises(ValueError, match="batch size"):
        order.assemble_batch([[1]], 0, prior)
