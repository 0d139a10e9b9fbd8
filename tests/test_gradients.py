"""What a client shares: trainable tensors only, sizes that add up, deltas, and one layer's gradients."""
import pytest
import torch

from lora_leak_lib import data, gradients, lora, models


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return lora.apply_lora(models.resolve("tiny-bert").load(seed=0), rank=4)


@pytest.fixture(scope="module")
def batch():
    tokenizer = models.resolve("tiny-bert").tokenizer
    sentences = data.course_sentences()[:3]
    encoded = data.encode(tokenizer, [e.text for e in sentences])
    return encoded["input_ids"], encoded["attention_mask"], torch.tensor([e.label for e in sentences])


def test_shared_update_holds_only_trainable_parameters(model, batch):
    update = gradients.shared_gradients(model, *batch)
    params = dict(model.named_parameters())
    assert list(update) == gradients.trainable_names(model)
    assert all(params[n].requires_grad for n in update)
    frozen = [n for n, p in params.items() if not p.requires_grad]
    assert frozen and not set(frozen) & set(update)  # embeddings, W of every layer, ... never travel
    assert not any("base_layer" in n or "embeddings" in n for n in update)
    assert all(update[n].shape == params[n].shape for n in update)
    assert all(p.grad is None for p in model.parameters())  # sharing leaves the model untouched


def test_describe_update_bytes_add_up(model, batch):
    update = gradients.shared_gradients(model, *batch)
    rows = gradients.describe_update(update)
    assert [r.name for r in rows] == list(update)
    assert all(r.bytes == 4 * r.numel == 4 * update[r.name].numel() for r in rows)  # float32
    assert gradients.update_bytes(update) == sum(r.bytes for r in rows)
    assert sum(r.numel for r in rows) == lora.count_parameters(model, trainable_only=True)


def test_weight_delta_and_state_round_trip(model):
    before = gradients.trainable_state(model)
    after = {n: t + 1.0 for n, t in before.items()}
    delta = gradients.weight_delta(before, after)
    assert all(torch.allclose(d, torch.ones_like(d)) for d in delta.values())
    gradients.load_trainable_state(model, after)
    assert all(torch.equal(gradients.trainable_state(model)[n], after[n]) for n in after)
    gradients.load_trainable_state(model, before)
    with pytest.raises(ValueError, match="different tensor names"):
        gradients.weight_delta(before, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="do not match trainable"):
        gradients.load_trainable_state(model, {"bert.embeddings.word_embeddings.weight": torch.zeros(1)})


def test_short_names_are_readable():
    assert gradients.short_name("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.default.weight") \
        == "layer.0.attention.self.query.lora_A"
    assert gradients.short_name("base_model.model.classifier.modules_to_save.default.bias") == "classifier.bias"


def test_relative_error_and_matrix_rank():
    a = torch.tensor([3.0, 4.0])
    assert gradients.relative_error(a, a) == 0.0
    assert gradients.relative_error(a * 1.1, a) == pytest.approx(0.1)
    assert gradients.relative_error(torch.zeros(2), torch.zeros(2)) == 0.0
    torch.manual_seed(0)
    for rank in (1, 3, 7):
        M = torch.randn(20, rank, dtype=torch.float64) @ torch.randn(rank, 30, dtype=torch.float64)
        assert gradients.matrix_rank(M) == rank
        assert gradients.matrix_rank(M.float()) == rank
    with pytest.raises(ValueError, match="2-D"):
        gradients.matrix_rank(torch.zeros(3))


def test_layer_gradients_obey_the_identities_on_a_real_query_layer():
    torch.manual_seed(0)
    model = lora.apply_lora(models.resolve("tiny-bert").load(seed=0), rank=8).double()
    layer = gradients.find_lora_layer(model, "layer.0.attention.self.query")
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.1)
    tokenizer = models.resolve("tiny-bert").tokenizer
    encoded = data.encode(tokenizer, ["my pin is 4821 and my card expires next may"])
    n = encoded["input_ids"].shape[1]
    lg = gradients.layer_gradients(model, "layer.0.attention.self.query", encoded["input_ids"],
                                   encoded["attention_mask"], torch.tensor([1]))
    assert lg.X.shape == (n, 128) and lg.G.shape == lg.W.shape == (128, 128)
    assert lg.dA.shape == (8, 128) and lg.dB.shape == (128, 8) and lg.scaling == 2.0
    dA, dB = lora.lora_gradients(lg.G, lg.A, lg.B, lg.scaling)
    assert gradients.relative_error(dA, lg.dA) < 1e-5
    assert gradients.relative_error(dB, lg.dB) < 1e-5
    assert not layer.base_layer.weight.requires_grad  # W is frozen again afterwards
    # G = Σ_t δ_t x_tᵀ: one rank-one term per token, so the ranks are capped by the token count
    assert gradients.matrix_rank(lg.G) == n
    assert gradients.matrix_rank(lg.dA) == gradients.matrix_rank(lg.dB) == min(n, 8)


def test_find_lora_layer_names_a_real_layer(model):
    with pytest.raises(ValueError, match="LoRA layers match 'key'"):
        gradients.find_lora_layer(model, "key")
    with pytest.raises(ValueError, match="apply LoRA first"):
        gradients.find_lora_layer(models.resolve("tiny-bert").load(seed=0), "query")


def test_captured_fraction_measures_the_input_inside_a_row_space():
    torch.manual_seed(0)
    X = torch.randn(5, 30, dtype=torch.float64)
    assert gradients.captured_fraction(X, torch.randn(7, 5, dtype=torch.float64) @ X) == pytest.approx(1.0)
    assert gradients.captured_fraction(X, torch.randn(3, 5, dtype=torch.float64) @ X) < 0.9
    assert gradients.captured_fraction(X, torch.zeros(2, 30, dtype=torch.float64)) == 0.0
    partial = gradients.captured_fraction(X, X[:2])
    assert 0.2 < partial < 0.7  # two of five random rows: about 2/5 of the energy, more with overlaps
    with pytest.raises(ValueError, match="same d"):
        gradients.captured_fraction(X, torch.zeros(2, 7))
