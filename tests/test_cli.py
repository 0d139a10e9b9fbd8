"""The ``lora-leak demo`` command: readable output, exit status 0, and one-line errors with status 2."""
import pytest

from lora_leak_lib import cli, data


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_demo_runs_and_prints_what_crosses_the_wire(capsys):
    assert cli.main(["demo"]) == 0
    out, err = capsys.readouterr()
    example = data.course_sentences()[6]
    assert "What crosses the wire" in out
    assert "layer.0.attention.self.query.lora_A  [8, 128]" in out
    assert "classifier.bias" in out and "base_layer" not in out
    assert example.text in out
    assert f"true label       : {data.LABELS[example.label]}" in out
    assert "(right)" in out  # batch-1 label inference is exact
    assert "every dL/dA zero : True" in out
    assert err == ""


def test_demo_takes_another_sentence_and_rank(capsys):
    assert cli.main(["demo", "--index", "1", "--rank", "2"]) == 0
    out = capsys.readouterr().out
    assert data.course_sentences()[1].text in out and "[2, 128]" in out


@pytest.mark.parametrize("argv, words", [
    (["demo", "--model", "gpt-5"], "unknown model 'gpt-5'"),
    (["demo", "--model", "bert-base-uncased"], "needs internet"),
    (["demo", "--rank", "0"], "positive integer"),
    (["demo", "--index", "999"], "out of range"),
])
def test_bad_input_is_one_line_and_status_2(capsys, argv, words):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("lora-leak: ") and words in err
