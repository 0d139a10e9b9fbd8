"""Library entry points refuse bad input with one clear ValueError, never a traceback deep in torch."""
from dataclasses import replace

import pytest

import lora_leak_lib as ll
from lora_leak_lib.models import resolve


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def shared():
    return ll.fl.capture_update(["my pin is 4921"], [1], resolve("tiny-bert"), rank=8, trained_steps=3)


def test_an_update_attacked_with_another_rank_or_model_says_so(shared):
    other_rank = replace(shared, setup=ll.FederatedSetup(model=resolve("tiny-bert"), rank=4, protocol="fedsgd", batch_size=1))
    with pytest.raises(ValueError, match="does not fit the public model"):
        other_rank.public_model()
    with pytest.raises(ValueError, match="does not fit the public model"):
        ll.get_attack("dlg", steps=1).reconstruct(other_rank, ll.Knowledge(length=4))
    other_model = replace(shared, setup=ll.FederatedSetup(model=resolve("minilm"), rank=8, protocol="fedsgd", batch_size=1))
    with pytest.raises(ValueError, match="columns but minilm's inputs have 384"):
        ll.get_attack("span").reconstruct(other_model)


@pytest.mark.parametrize("call, words", [
    (lambda: ll.fl.capture_update(["hi there"], [7]), "label 7 is not a class"),
    (lambda: ll.fl.capture_update(["hi there"], [0, 1]), "one label per text"),
    (lambda: ll.fl.capture_update(["hi there"], [0], trained_steps=-1), "0 or more"),
    (lambda: ll.fl.capture_update(["hi there"], [0], alpha=-1.0), "alpha"),
    (lambda: ll.fl.capture_update(["hi there"], [0], rank=129), "hidden size 128"),
    (lambda: ll.experiments.attack_texts(["hi there"], trained_steps=-2), "the first round"),
    (lambda: ll.training.train_adapter(ll.FederatedSetup().build_model(), resolve("tiny-bert").tokenizer, [], steps=-1), "≥ 0"),
    (lambda: ll.training.train_adapter(ll.FederatedSetup().build_model(), resolve("tiny-bert").tokenizer, [], steps=2), "at least one"),
    (lambda: ll.defenses.dp_sgd_train(ll.FederatedSetup().build_model(), resolve("tiny-bert").tokenizer, [], 1, 1.0, 1.0),
     "at least one private example"),
    (lambda: ll.Knowledge(length=0), "at least 1"),
    (lambda: ll.data.check_text("\u200b"), "invisible"),
])
def test_bad_arguments_raise_one_clear_error(call, words):
    with pytest.raises(ValueError, match=words):
        call()
