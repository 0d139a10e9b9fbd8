"""Label inference from the head-bias gradient, on real tiny-bert gradients and on exact hand-made ones."""
import random

import pytest
import torch

from lora_leak_lib import data, gradients, lora, models, training
from lora_leak_lib.attacks.labels import classes_present, head_bias_gradient, infer_labels
from lora_leak_lib.models import resolve

BIAS = "base_model.model.classifier.modules_to_save.default.bias"


def _fresh_model():
    return lora.apply_lora(models.resolve("tiny-bert").load(seed=0), rank=4)


@pytest.fixture(scope="module")
def fresh():
    return _fresh_model()


@pytest.fixture(scope="module")
def trained():
    """An adapter and head after some federated rounds: predictions far from uniform."""
    model = _fresh_model()
    training.train_adapter(model, resolve("tiny-bert").tokenizer, data.course_sentences(), steps=40, lr=1e-2, seed=0)
    return model.eval()


def _update_and_probs(model, batch):
    tokenizer = models.resolve("tiny-bert").tokenizer
    encoded = data.encode(tokenizer, [e.text for e in batch])
    labels = torch.tensor([e.label for e in batch])
    update = gradients.shared_gradients(model, encoded["input_ids"], encoded["attention_mask"], labels)
    with torch.no_grad():
        probs = model(**encoded).logits.softmax(-1).double()
    return update, probs


def _batches(size, count, seed=0):
    sentences = data.course_sentences()
    rng = random.Random(seed)
    return [rng.sample(sentences, size) for _ in range(count)]


@pytest.mark.parametrize("which", ["fresh", "trained"])
def test_batch_of_one_is_exact_for_both_classes(request, which):
    model = request.getfixturevalue(which)
    sentences = data.course_sentences()
    for label in (0, 1):
        chosen = [e for e in sentences if e.label == label][:8]
        for example in chosen:
            update, _ = _update_and_probs(model, [example])
            assert infer_labels(update) == [label], example.text
            assert classes_present(update) == {label}


def test_batch_counts_are_exact_while_predictions_stay_near_uniform(fresh):
    for size in (2, 4, 8):
        for batch in _batches(size, 6, seed=size):
            update, probs = _update_and_probs(fresh, batch)
            # the stated condition: the batch's mean prediction is within 1/(2n) of uniform
            assert float((probs.mean(0) - 0.5).abs().max()) < 1 / (2 * size)
            assert infer_labels(update, size) == sorted(e.label for e in batch)


def test_balanced_batch_is_counted_not_collapsed(fresh):
    sentences = data.course_sentences()
    batch = [e for e in sentences if e.label == 0][:4] + [e for e in sentences if e.label == 1][:4]
    update, _ = _update_and_probs(fresh, batch)
    assert infer_labels(update, 8) == [0] * 4 + [1] * 4


def test_after_training_negative_entries_name_only_classes_present(trained):
    missed = 0
    for size in (2, 4, 8):
        for batch in _batches(size, 6, seed=10 + size):
            update, probs = _update_and_probs(trained, batch)
            truth = sorted(e.label for e in batch)
            assert classes_present(update) <= set(truth)  # never a class that is absent
            missed += len(set(truth) - classes_present(update))
            # with the batch's true mean prediction as prior, the count formula is exact
            assert infer_labels(update, size, mean_probs=probs.mean(0)) == truth
    assert missed > 0  # the sign alone can miss a present class once the model is confident


def _hand_made_update(probs, labels):
    """``dL/db = mean_i (p_i − onehot(y_i))`` exactly."""
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), probs.shape[1]).double()
    return {BIAS: (probs - onehot).mean(0)}


def test_three_classes_and_weight_deltas():
    probs = torch.tensor([[0.2, 0.5, 0.3], [0.4, 0.3, 0.3], [0.3, 0.3, 0.4], [0.1, 0.1, 0.8]], dtype=torch.float64)
    labels = [2, 0, 2, 1]
    update = _hand_made_update(probs, labels)
    assert infer_labels(update, 4, mean_probs=probs.mean(0)) == [0, 1, 2, 2]
    lr = 0.05
    delta = {BIAS: -lr * update[BIAS]}
    assert infer_labels(delta, 4, kind="delta", lr=lr, mean_probs=probs.mean(0)) == [0, 1, 2, 2]
    assert classes_present(delta, kind="delta") == classes_present(update)
    single = _hand_made_update(probs[:1], [1])
    assert infer_labels({BIAS: -lr * single[BIAS]}, kind="delta") == [1]
    guess = infer_labels(delta, 4, kind="delta")  # no lr: classes present, then a guess
    assert len(guess) == 4 and classes_present(update) <= set(guess)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="no classifier bias"):
        head_bias_gradient({"lora_A": torch.zeros(2)})
    update = {BIAS: torch.tensor([-0.5, 0.5])}
    with pytest.raises(ValueError, match="positive integer"):
        infer_labels(update, 0)
    with pytest.raises(ValueError, match="'gradient' or 'delta'"):
        infer_labels(update, kind="grad")
    with pytest.raises(ValueError, match="one probability per class"):
        infer_labels(update, 2, mean_probs=torch.ones(3) / 3)
