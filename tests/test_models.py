"""The model registry: offline loading, eager attention, parameter counts from configs, clear errors."""
import pytest
import torch

from lora_leak_lib import families, lora, models


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_tiny_bert_loads_offline_with_eager_attention_and_no_dropout():
    model = models.resolve("tiny-bert").load(seed=0)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_labels) == (2, 128, 2)
    assert config._attn_implementation == "eager"
    assert config.hidden_dropout_prob == 0.0 and config.attention_probs_dropout_prob == 0.0
    assert not model.training
    assert families.max_tokens(model) == 512


def test_tiny_bert_is_the_same_model_for_the_same_seed():
    a, b, c = (models.resolve("tiny-bert").load(seed=s) for s in (0, 0, 1))
    for (name, p), q, r in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.classifier.weight, c.classifier.weight)


def test_minilm_loads_offline_pretrained():
    model = models.resolve("minilm").load()
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    assert model.config._attn_implementation == "eager"
    assert abs(lora.count_parameters(model) - 22.7e6) < 0.1e6
    # pretrained, not random: the word embeddings of MiniLM have a known scale far from BERT's 0.02 init
    assert abs(float(model.bert.embeddings.word_embeddings.weight.detach().std()) - 0.02) > 0.005


def test_tiny_bert_and_minilm_share_the_uncased_wordpiece_tokenizer():
    tiny, mini = models.resolve("tiny-bert").tokenizer, models.resolve("minilm").tokenizer
    assert tiny.vocab_size == mini.vocab_size == 30522
    text = "my password is sunflower1987"
    assert tiny(text)["input_ids"] == mini(text)["input_ids"]
    assert tiny.decode(tiny(text)["input_ids"], skip_special_tokens=True) == text


def test_eager_attention_allows_the_double_backward_of_gradient_matching():
    model = models.resolve("tiny-bert").load(seed=0)
    embeddings = torch.randn(1, 5, 128, device=model.classifier.weight.device, requires_grad=True)
    loss = model(inputs_embeds=embeddings).logits.logsumexp(-1).sum()
    (grad,) = torch.autograd.grad(loss, model.classifier.weight, create_graph=True)
    (second,) = torch.autograd.grad(grad.square().sum(), embeddings)
    assert float(second.abs().sum()) > 0


@pytest.mark.parametrize("call", [models.resolve, models.check_model_name])
def test_unknown_name_is_one_line_listing_the_known_names(call):
    with pytest.raises(ValueError) as error:
        call("gpt-5")
    message = str(error.value)
    assert "\n" not in message and "'gpt-5'" in message
    assert all(name in message for name in models.MODELS)


@pytest.mark.parametrize("use", ["load", "tokenizer", "check_available"])
def test_hub_only_name_offline_is_one_line_naming_the_offline_models(use):
    model = models.resolve("bert-base-uncased")  # resolving a hub name needs no hub: using it does
    with pytest.raises(ValueError) as error:
        value = getattr(model, use)
        value() if callable(value) else value
    message = str(error.value)
    assert "\n" not in message and "internet" in message
    assert "tiny-bert" in message and "minilm" in message


def test_hub_names_pass_the_check_when_online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models, "hub_reachable", lambda endpoint: True)  # as on a machine with internet
    assert models.resolve("bert-base-uncased").check_available().hub_id == "bert-base-uncased"
    assert not models.hub_offline()


def test_architecture_counts_parameters_without_weights():
    for name in ("tiny-bert", "minilm"):
        meta = models.resolve(name).architecture()
        assert next(meta.parameters()).device.type == "meta"
        assert lora.count_parameters(meta) == lora.count_parameters(models.resolve(name).load(seed=0))
    assert lora.count_parameters(models.resolve("bert-base-uncased").architecture()) == 109_483_778  # BERT-base + head
    assert models.resolve("bert-large-uncased").config().num_hidden_layers == 24


def test_a_name_resolves_to_one_object_and_a_resolved_model_to_itself():
    model = models.resolve("minilm")
    assert models.resolve("minilm") is model and models.resolve(model) is model
    assert model == models.resolve("minilm") and hash(model) == hash(models.resolve("minilm"))
    import pickle

    assert pickle.loads(pickle.dumps(model)) is model  # a Flower job unpickles it by resolving the name again
