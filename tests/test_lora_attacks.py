"""LoRA attacks by name, the head's pooled output, one scored run (experiments) and the `attack` CLI."""
import json

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import cli
from lora_leak_lib.models import resolve


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_pooled_output_is_read_exactly_from_the_head_gradient():
    text = "i owe the bank four thousand pounds"
    shared = ll.fl.capture_update([text], [1], resolve("tiny-bert"), rank=4, trained_steps=0)
    model = shared.public_model()
    encoded = ll.models.resolve("tiny-bert").tokenizer([text], return_tensors="pt").to(model.device)
    with torch.no_grad():
        pooled = model.get_base_model().bert(**encoded).pooler_output[0].double()
    read = ll.attacks.pooled_output(shared.update)
    assert torch.allclose(read, pooled.to(read.device), atol=1e-4)
    assert ll.attacks.lora_a_is_zero(shared.update)


def test_lora_best_at_round_0_searches_beyond_the_relaxation():
    # round 0: every lora_A gradient is zero; a short run of the shortlist + substitution search with kicks
    # already recovers some words (measured: 5 of 7 tokens at steps=40; 3 of 7 without the kicks)
    text = "the nurse said my results were fine"
    row = ll.experiments.attack_texts([text], [1], resolve("tiny-bert"), rank=8, trained_steps=0, steps=40)[0]
    assert row["token_accuracy"] >= 0.4 and row["tokens"] == 7 and row.trained_steps == 0


def test_get_attack_knows_the_names_and_rejects_others():
    assert ll.get_attack("lora-best").name == "lora-best"
    assert ll.get_attack("span").name == "span"
    with pytest.raises(ValueError, match="unknown attack 'nope': choose one of lora-best"):
        ll.get_attack("nope")


def test_attack_texts_scores_a_trained_round_on_minilm():
    row = ll.experiments.attack_texts(["the nurse said my results were fine"], [1], resolve("minilm"), rank=8, trained_steps=20)[0]
    assert row["reconstruction"] == row["original"]
    assert row["token_accuracy"] == 1.0 and row["rouge1"] == 1.0
    assert {"seconds", "model", "rank", "attack", "rouge2", "rougeL"} <= set(row)


def test_cli_attack_prints_one_json_object(capsys):
    assert cli.main(["attack", "--model", "minilm", "--text", "call me at home tonight", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["original"] == "call me at home tonight" and row["token_accuracy"] == 1.0
    for key in ("reconstruction", "rouge1", "rouge2", "rougeL", "seconds", "model", "rank", "attack"):
        assert key in row


@pytest.mark.parametrize("argv, message", [
    (["attack", "--text", "  "], "the text is empty"),
    (["attack", "--model", "gpt-9", "--text", "hi"], "unknown model 'gpt-9'"),
    (["attack", "--attack", "magic", "--text", "hi"], "unknown attack 'magic'"),
    (["attack", "--text", "word " * 600], "takes at most 510"),
    (["attack"], "exactly one of --text"),
    (["attack", "--file", "/no/such/file.txt"], "no file at"),
    (["bench", "--data", "/no/such/folder"], "no folder at /no/such/folder"),
])
def test_cli_attack_bad_input_is_one_line_and_status_2(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
