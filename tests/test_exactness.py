"""The exactness rule the course teaches (experiments.exactness): its verdicts at each limit, and its promise of
exactness kept by the attack on live runs."""
import pytest

import lora_leak_lib as ll
from lora_leak_lib.attacks import Knowledge, get_attack
from lora_leak_lib.experiments import exactness
from lora_leak_lib.experiments.exactness import DETERMINED, EXACT, SEARCH_ONLY, TOKENS_ONLY


@pytest.fixture(scope="module")
def tiny():
    return ll.resolve("tiny-bert")


def test_each_limit_gives_its_verdict(tiny):
    assert exactness.first_layer_modules(tiny) == 2 and tiny.hidden_size == 128
    assert exactness.predict(tiny, 8, 4).verdict == EXACT            # 8 inputs ≤ 2 modules × r = 8 rows
    assert exactness.predict(tiny, 9, 4).verdict == DETERMINED       # past the rank, 2·9 + 1 + 8 < 128
    assert exactness.predict(tiny, 47, 8).verdict == DETERMINED      # 94 + 1 + 16 = 111 < 128
    assert exactness.predict(tiny, 56, 8).verdict == SEARCH_ONLY  # 112 + 1 + 16 = 129: past the width
    assert exactness.predict(tiny, 56, 8, watched=4).verdict == EXACT  # four rounds' spans: 64 rows
    assert exactness.predict(tiny, 7, 8, first_round=True).verdict == EXACT
    assert exactness.predict(tiny, 8, 8, first_round=True).verdict == SEARCH_ONLY
    assert exactness.predict(tiny, 10, 8, batch=2).verdict == TOKENS_ONLY
    assert exactness.predict(tiny, 10, 8, first_layer_adapted=False).verdict == SEARCH_ONLY
    wide = exactness.predict(ll.resolve("minilm"), 62, 1)
    assert wide.verdict == DETERMINED and wide.width == 384 and "d = 384" in str(wide)


@pytest.mark.parametrize("bad", [dict(inputs=0), dict(rank=-1), dict(batch=1.5)])
def test_a_bad_count_is_one_line(tiny, bad):
    arguments = dict(inputs=10, rank=8) | bad
    with pytest.raises(ValueError, match="must be a positive integer"):
        exactness.predict(tiny, **arguments)


@pytest.mark.parametrize("tokens, rank, steps", [(6, 4, 20), (14, 8, 20), (5, 8, 0)])
def test_what_the_rule_calls_exact_comes_back_exact(tiny, tokens, rank, steps):
    """Inside the rank (a trained round) and below r inputs (the first round) the attack reads every word."""
    assert exactness.predict(tiny, tokens + 2, rank, first_round=steps == 0).verdict == EXACT
    example = ll.data.truncate_to_tokens(tiny.tokenizer, ll.data.course_sentences(), tokens, 1)[0]
    shared = ll.fl.capture_update([example.text], [example.label], tiny, rank=rank, trained_steps=steps, seed=0)
    rebuilt = get_attack("lora-best").reconstruct(shared, Knowledge(length=tokens))
    row = ll.experiments.result_rows([example.text], rebuilt, shared, Knowledge(length=tokens), "lora-best")[0]
    assert row.token_accuracy == 1.0


def test_joined_messages_have_the_length_asked(tiny):
    examples = ll.data.course_sentences()
    messages = ll.data.joined_to_tokens(tiny.tokenizer, examples, 40, 2)
    assert [ll.data.n_tokens(tiny.tokenizer, m.text) for m in messages] == [40, 40]
    with pytest.raises(ValueError, match="ask for fewer or shorter"):
        ll.data.joined_to_tokens(tiny.tokenizer, examples[:2], 400, 1)
