"""Model families: every registry entry is read through its family (no BERT path outside it), encoders and
decoders alike; the first layer's inputs the attacks compute are the ones the model really feeds its LoRA."""
import pytest
import torch
from transformers import MPNetConfig

import lora_leak_lib as ll
from lora_leak_lib import cli, experiments, families, fl, lora, models
from lora_leak_lib.attacks import EmbeddingInputs, Knowledge, first_layer_rows, get_attack
from lora_leak_lib.models import resolve


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_entry_finds_its_parts_through_its_family(name):
    family = models.resolve(name).family
    model = lora.apply_lora(models.resolve(name).architecture(), rank=2)  # the meta device: no weights, no download
    base = families.base_of(model)
    for path in (family.word_embeddings, family.position_embeddings, family.input_norm):
        assert base.get_submodule(path) is not None
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    rows = [n for n in names if family.layer_rows_pattern(0).search(n)]
    assert rows and all("lora_A" in n for n in rows)
    assert len(rows) == len(family.lora_targets)  # one lora_A per targeted projection of layer 0
    assert not any(family.layer_rows_pattern(0).search(n) for n in names if ".1." in n.split("lora_A")[0][-30:]
                   and f"{family.layer_prefix.format(1)}" in n)
    head = [n for n in names if "lora_" not in n]
    assert bool(head) == (family.head is not None)  # a decoder trains no head beside the adapter
    assert models.resolve(name).text_limit == models.resolve(name).config().max_position_embeddings - family.position_offset - 2


def test_the_registry_holds_an_encoder_at_bert_base_scale_offline_and_a_decoder():
    assert models.MODELS["mpnet-base"].offline and models.resolve("mpnet-base").family.name == "mpnet"
    assert lora.count_parameters(models.resolve("mpnet-base").architecture()) == 109_488_002
    assert models.resolve("tiny-gpt2").family.is_decoder and models.MODELS["tiny-gpt2"].offline
    assert models.resolve("gpt2").family.is_decoder and not models.MODELS["gpt2"].offline
    assert lora.count_parameters(models.resolve("gpt2").architecture()) == 124_439_808  # GPT-2 small, tied head


def _small_mpnet() -> torch.nn.Module:
    """A random two-layer MPNet: the family's code paths at a test's cost (mpnet-base has the same layout)."""
    torch.manual_seed(0)
    config = MPNetConfig(vocab_size=30527, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         max_position_embeddings=514)
    return families.FAMILIES["mpnet"].model_class(config).eval().to(ll.config.device())  # where the library's models live


@pytest.mark.parametrize("build", [lambda: models.resolve("tiny-bert").load(seed=0),
                                   lambda: models.resolve("tiny-gpt2").load(seed=0), _small_mpnet],
                         ids=["bert", "gpt2", "mpnet"])
def test_the_first_layer_inputs_in_closed_form_are_what_the_model_feeds_its_lora(build):
    model = lora.apply_lora(build(), rank=2)
    family = families.family_of(model.get_base_model())
    reader = next(m for n, m in families.base_of(model).named_modules()
                  if n.startswith(family.layer_prefix.format(0)) and n.endswith(family.layer_inputs[0]))
    seen = []
    hook = reader.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    ids = torch.tensor([[5, 1996, 3185, 2001, 6]], device=next(model.parameters()).device)
    with torch.no_grad():
        model(input_ids=ids)
    hook.remove()
    inputs = EmbeddingInputs.from_tables(families.input_tables(model))
    closed_form = inputs.vectors(ids[0], torch.arange(ids.shape[1], device=ids.device))
    assert torch.allclose(closed_form.float(), seen[0][0], atol=1e-5)


def test_a_decoder_client_trains_on_its_next_tokens_and_sends_only_lora():
    shared = fl.capture_update(["the film is quiet and kind"], [0], resolve("tiny-gpt2"), rank=2, trained_steps=2)
    assert shared.update and all("lora_" in n for n in shared.update)
    assert any(n.endswith("c_attn.lora_A.default.weight") for n in shared.update)
    model = shared.attack_model()
    encoded = ll.data.encode(models.resolve("tiny-gpt2").tokenizer, ["the film is quiet and kind"])
    logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits  # no type ids:
    # GPT-2 would add wte[token_type_ids] to every position
    loss = models.resolve("tiny-gpt2").family.loss(logits, encoded["input_ids"], encoded["attention_mask"])
    again = torch.autograd.grad(loss, list(model.parameters()))
    for (name, sent), mine in zip(shared.update.items(), again):
        assert torch.allclose(sent, mine, atol=1e-6 * float(sent.abs().max()) + 1e-12), name


def test_federated_averaging_runs_on_a_decoder():
    history = fl.run_federated(resolve("tiny-gpt2"), n_clients=2, rounds=1, progress=False)
    assert len(history.loss) == 2 and history.loss[1] < history.loss[0]  # next-token loss falls
    assert 0.0 <= history.accuracy[1] <= 1.0


def test_the_span_attack_rebuilds_a_decoder_clients_text_exactly():
    row = experiments.attack_texts(["a gentle film about two brothers"], None, resolve("tiny-gpt2"), rank=8, trained_steps=5,
                                   attack="span")[0]
    assert row["token_accuracy"] == 1.0 and row["reconstruction"] == "a gentle film about two brothers"


def test_dlg_matches_a_decoder_gradient_and_its_own_text_scores_zero():
    shared = fl.capture_update(["a quiet film"], [0], resolve("tiny-gpt2"), rank=2, trained_steps=2)
    attack = get_attack("dlg", steps=3, restarts=1)
    result = attack.reconstruct(shared, Knowledge(length=3))
    assert len(result.token_ids[0]) == 3 and result.labels == [] and len(result.loss_history) == 3
    from lora_leak_lib.attacks.text_problem import TextProblem
    problem = TextProblem.build(shared, Knowledge(length=3))
    truth = models.resolve("tiny-gpt2").tokenizer.encode("a quiet film", add_special_tokens=False)
    assert problem.discrete_distance([truth], None, "l2", 0.0) < 1e-12
    assert problem.discrete_distance([truth[::-1]], None, "l2", 0.0) > 1e-9


def test_labels_and_the_head_leak_say_a_decoder_has_none():
    shared = fl.capture_update(["a quiet film"], [0], resolve("tiny-gpt2"), rank=2, trained_steps=1)
    for name in ("labels", "head-leak"):
        with pytest.raises(ValueError, match="classifier"):
            get_attack(name).reconstruct(shared, Knowledge())


def test_rows_of_every_family_are_found_and_only_of_the_asked_layer():
    update = {"base_model.model.mpnet.encoder.layer.0.attention.attn.q.lora_A.default.weight": torch.ones(2, 4),
              "base_model.model.mpnet.encoder.layer.10.attention.attn.q.lora_A.default.weight": torch.ones(2, 4),
              "base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight": torch.ones(3, 4),
              "base_model.model.bert.encoder.layer.0.attention.self.value.lora_B.default.weight": torch.ones(4, 2)}
    assert first_layer_rows(update, 0).shape == (5, 4)
    assert first_layer_rows(update, 10).shape == (2, 4)
    with pytest.raises(ValueError, match="layer 1's attention projections"):
        first_layer_rows(update, 1)


def test_the_cli_attacks_a_decoder_and_a_batch(tmp_path, capsys):
    path = tmp_path / "two.txt"
    path.write_text("a quiet film\nloud and long\n")
    assert cli.main(["attack", "--model", "tiny-gpt2", "--text", "a quiet film", "--attack", "span",
                        "--json"]) == 0
    assert '"model": "tiny-gpt2"' in capsys.readouterr().out
    assert cli.main(["attack", "--file", str(path), "--batch", "2", "--json", "--attack", "span"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all('"batch_size": 2' in line for line in lines)
    assert cli.main(["attack", "--file", str(path), "--batch", "3"]) == 2
    assert "not a multiple of --batch 3" in capsys.readouterr().err


def _mpnet_installed() -> bool:
    from importlib import metadata

    try:
        return all(metadata.distribution(name) for name in ll.weights.MPNET_PARTS)
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _mpnet_installed(), reason=f"mpnet-base's weights are not installed: {ll.weights.MPNET_INSTALL}")
def test_mpnet_base_loads_offline_and_leaks_a_sentence_exactly():
    model = models.resolve("mpnet-base").load(seed=0)
    assert type(model).__name__ == "MPNetForSequenceClassification"
    assert lora.count_parameters(model) == 109_488_002 and model.config._attn_implementation == "eager"
    mpnet, bert = models.resolve("mpnet-base").tokenizer, models.resolve("tiny-bert").tokenizer
    text = "a quiet and lovely surprise"
    assert [i - 4 for i in mpnet.encode(text, add_special_tokens=False)] == bert.encode(text, add_special_tokens=False)
    row = experiments.attack_texts([text], [1], resolve("mpnet-base"), trained_steps=1, attack="span")[0]
    assert row["reconstruction"] == text and row["token_accuracy"] == 1.0


def test_no_module_outside_the_registry_names_a_bert_path():
    import re
    from pathlib import Path

    # a BERT attribute (``model.bert``), or a string holding a BERT module path; docstring examples (``...``) aside
    bert_paths = re.compile(r"\.bert\b|[\"'][^\"'`]*(\bbert\.|\.word_embeddings|token_type_emb|attention\.self)")
    root = Path(ll.__file__).parent
    offenders = [f"{path.relative_to(root)}:{number}" for path in root.rglob("*.py") if path.name != "families.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if bert_paths.search(line) and "``" not in line]
    assert not offenders, offenders


def test_the_demo_shows_a_decoder_client_leaking_its_text(capsys):
    assert cli.main(["demo", "--model", "tiny-gpt2"]) == 0
    out = capsys.readouterr().out
    assert "on c_attn" in out and "true label" not in out  # a decoder's client has no label
    sentence = ll.data.course_sentences()[6].text
    assert f"server rebuilds  : {sentence!r}" in out
