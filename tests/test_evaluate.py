"""``lora-leak evaluate``: the suites, a test-sized run through the quick suite's code path (row by row), resume, the
README's own attack brought in by import path, every bad input (one line, status 2, nothing written), and the
fingerprint that says a recorded JSON is stale. The quick suite itself runs end to end in one slow test."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from itertools import product

import pytest

import lora_leak_lib as ll
from lora_leak_lib import cli
from lora_leak_lib.defenses import DEFENCES
from lora_leak_lib.experiments import evaluate as ev
from lora_leak_lib.experiments import fingerprint as fp

TINY = ll.models.TINY_BERT
MAIN = ev.EvaluationSetting(model=TINY, tokens=8)
SMALL = ev.Suite(
    name="test", main=MAIN, settings=(replace(MAIN, trained_steps=0),),
    defences=(ev.DefenceSetting("none"), ev.DefenceSetting("noise", 1e-4), ev.DefenceSetting("dp-sgd", 1.0),
              ev.DefenceSetting("secure-agg", 2)),
    attacks=("span",), messages=1, recipe=ll.experiments.sweep.Recipe(model=TINY, n_clients=2, rounds=2))
"""A test-sized suite, run by the quick suite's code path: a message, a training and a protocol defence on
``tiny-bert`` after 20 steps of training, the baseline also in the first round (where the span attack refuses)."""

RECORD_KEYS = {"suite", "date", "machine", "fingerprint", "command", "plan", "threshold", "keep", "utility", "rows",
               "runs", "complete"}
ROW_KEYS = {"key": str, "setting": dict, "setting_label": str, "defence": str, "defence_label": str,
            "defence_kind": str, "brought_in": bool, "attack": str, "aware": bool, "sentences": int, "seconds": float,
            "device": str, "utility": float, "undefended_utility": float, "utility_model": str, "utility_learns": bool,
            "same_as_unaware": bool, "results": list}
SCORES = ("rouge1", "rouge2", "rougeL", "token_accuracy", "exact_rate")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def check_record(record: dict, suite: ev.Suite) -> None:
    """The record's shape, row by row: every key, its type, scores in [0, 1], both awarenesses of every cell and
    attack, every verdict naming an attack."""
    assert RECORD_KEYS <= set(record) and record["suite"] == suite.name and record["complete"] is True
    assert {"cpu", "cores", "threads", "load_average", "gpu"} <= set(record["machine"])
    assert set(record["fingerprint"]) == {"sha256", "files"} and record["command"].startswith("lora-leak evaluate")
    rows = record["rows"]
    assert [row["key"] for row in rows] == [ev.row_key(*r) for r in suite.rows()]  # every row once, in order
    for row in rows:
        for key, kind in ROW_KEYS.items():
            assert isinstance(row[key], kind), (key, row[key])
        assert row["value"] is None or isinstance(row["value"], (int, float))
        assert row["epsilon"] is None or row["epsilon"] > 0
        if row["error"] is None:
            assert row["sentences"] >= 1 and len(row["results"]) == row["sentences"]
            assert all(0.0 <= row[key] <= 1.0 for key in SCORES), row
            assert {r["attack"] for r in row["results"]} == {row["attack"]}
        else:
            assert isinstance(row["error"], str) and all(row[key] is None for key in SCORES)
        assert 0.0 <= row["utility"] <= 1.0 and 0.0 <= row["undefended_utility"] <= 1.0
    for setting, defence in suite.cells():
        for attack in suite.attacks:
            assert {row["aware"] for row in rows if (row["setting_label"], row["defence_label"], row["attack"])
                    == (setting.label(), defence.label, attack)} == {False, True}
    for verdict in ev.verdicts(record):
        if verdict["rouge1"] is not None:
            assert verdict["attack"] in suite.attacks and isinstance(verdict["aware"], bool)
            assert verdict["rouge1"] == max(r["rouge1"] for r in rows
                                            if r["defence_label"] == verdict["label"] and r["rouge1"] is not None)


# --- (a) the suites --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ev.SUITES)
def test_every_suite_runs_every_registered_defence_with_unique_rows(name):
    suite = ev.get_suite(name)
    keys = [ev.row_key(*row) for row in suite.rows()]
    assert keys and len(keys) == len(set(keys))
    quick = name == "quick"
    assert {d.name for d in suite.defences} == set(DEFENCES)
    assert (suite.recipe.model.name == "minilm") == (not quick)  # the recorded suites' utility learns
    for defence, spec in DEFENCES.items():  # at the registry's values for the suite (the CPU-sized minilm: fewer)
        values = [d.value for d in suite.defences if d.name == defence]
        if name == "minilm":
            assert values == list(ev.MINILM_VALUES.get(defence, spec.sweep_values(False)))
            assert set(values) <= set(spec.sweep_values(False))  # points of the full grid
        else:
            assert values == spec.sweep_values(quick)
    assert all(ll.attacks.ATTACKS[a].rebuilds_text for a in suite.attacks)
    assert tuple(ev.SUITES) == cli.EVALUATION_SUITES


def test_the_full_suite_crosses_the_issues_axes_sparingly():
    suite = ev.get_suite("full")
    settings = [suite.main, *suite.settings]
    seen = lambda field: {getattr(s, field) for s in settings}  # noqa: E731
    assert {s.model.name for s in settings} == {"tiny-bert", "minilm", "mpnet-base"}
    assert (seen("tokens"), seen("batch_size"), seen("trained_steps"), seen("observed_rounds"), seen("rank")) == (
        {16, 32, 64, 128}, {1, 2, 4, 8}, {0, ll.experiments.DEFAULT_TRAINED_STEPS}, {1, 4}, {8, 16, 64})
    assert {(s.protocol, s.optimizer) for s in settings} == {("fedsgd", "sgd"), ("fedavg", "sgd"), ("fedavg", "adam")}
    assert len(settings) < 3 * 4 * 4 * 2 * 2 * 3 * 3 / 20  # not the product of the axes
    assert {d.name for d in suite.spread} == set(DEFENCES)  # one setting of each defence off the main setting
    assert set(suite.attacks) == set(ll.attacks.attack_names(lora_text=True)) and suite.recipe.model.name == "minilm"


@pytest.mark.parametrize("changes, words", [
    (dict(tokens=0), "tokens must be a positive integer"), (dict(rank=500), "larger than tiny-bert's hidden size"),
    (dict(tokens=600), "takes at most 510 tokens besides"),
    (dict(trained_steps=1000, observed_rounds=4), "observed_rounds - 1"),
    (dict(protocol="fedprox"), "unknown protocol"), (dict(optimizer="lion"), "unknown optimizer"),
])
def test_an_evaluation_setting_refuses_what_it_cannot_simulate(changes, words):
    with pytest.raises(ValueError, match=words):
        replace(MAIN, **changes)


def test_an_unknown_suite_lists_the_names():
    with pytest.raises(ValueError, match="unknown suite 'nope': choose one of quick, minilm, full"):
        ev.get_suite("nope")


# --- (b) a test-sized run, row by row; (c) resume ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """The test-sized suite run once, killed after 4 rows by the row limit, then resumed to the end."""
    out = tmp_path_factory.mktemp("evaluate") / "small.json"
    said: list[str] = []
    first = ev.run_suite(SMALL, out, seed=0, progress=False, limit=4, say=said.append)
    killed = json.loads(out.read_text())
    assert not out.with_suffix(".md").exists()  # the table and figure come with the last row
    record = ev.run_suite(SMALL, out, seed=0, progress=False, say=said.append)
    return {"out": out, "killed": killed, "first": first, "record": record, "said": said}


def test_a_small_run_writes_every_row_with_its_shape(small_run):
    record = small_run["record"]
    check_record(record, SMALL)
    assert json.loads(small_run["out"].read_text()) == record
    rows = {(r["defence_label"], r["setting"]["trained_steps"], r["aware"]): r for r in record["rows"]}
    assert rows[("none", 20, False)]["rouge1"] == 1.0  # the span attack rebuilds an undefended sentence
    assert rows[("none", 0, False)]["error"].startswith("ValueError")  # and refuses the first round
    assert rows[("secure-agg 2", 20, True)]["sentences"] == 2  # the server attacks the aggregate of two clients
    assert rows[("dp-sgd 1", 20, False)]["epsilon"] > 0 and rows[("noise 0.0001", 20, False)]["epsilon"] is None
    assert {r["defence_kind"] for r in record["rows"]} == {"message", "training", "protocol"}
    assert not any(r["utility_learns"] for r in record["rows"])  # tiny-bert's random weights: said in every row
    # told a defence that leaves no noise, an attack learns nothing it reads: the aware row is the unaware one
    same = {k[0] for k, r in rows.items() if k[2] and r["same_as_unaware"]}
    assert same == {"none", "secure-agg 2"} and rows[("noise 0.0001", 20, True)]["same_as_unaware"] is False
    assert rows[("secure-agg 2", 20, True)]["results"] == rows[("secure-agg 2", 20, False)]["results"]


def test_the_table_names_the_attack_behind_each_verdict_and_warns_about_tiny_bert(small_run):
    table = ev.markdown(small_run["record"])
    assert "| none | 100.0% | span (unaware, aware) |" in table
    assert "random weights: its accuracy is not a utility measure" in table
    recommended = {r["defence"]: r["recommendation"] for r in ev.recommend(small_run["record"])}
    assert set(recommended) == {"noise", "dp-sgd", "secure-agg"}
    assert small_run["out"].with_suffix(".md").read_text() == table + "\n"
    assert small_run["out"].with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_a_killed_run_resumes_without_running_a_row_twice(small_run):
    killed, record = small_run["killed"], small_run["record"]
    assert len(killed["rows"]) == 4 and killed["complete"] is False
    assert record["rows"][:4] == killed["rows"]  # the rows done before the kill are kept, not run again
    assert any(line.startswith("resuming") and "4 rows done, 6 to go" in line for line in small_run["said"])
    assert len(record["runs"]) == 2


def test_a_resumed_row_is_the_row_a_full_run_writes(small_run, tmp_path):
    out = tmp_path / "again.json"
    record = small_run["record"]
    out.write_text(json.dumps({**record, "rows": record["rows"][:-3], "complete": False}))
    again = ev.run_suite(SMALL, out, seed=0, progress=False, say=lambda line: None)
    for mine, theirs in zip(again["rows"][-3:], record["rows"][-3:]):  # seeded per row: the same scores
        assert {k: mine[k] for k in ("key", "error", *SCORES)} == {k: theirs[k] for k in ("key", "error", *SCORES)}


def test_other_code_starts_the_record_over_and_says_so(small_run, tmp_path):
    out = tmp_path / "stale.json"
    record = json.loads(small_run["out"].read_text())
    name = next(iter(record["fingerprint"]["files"]))
    record["fingerprint"]["files"][name] = "0" * 64
    out.write_text(json.dumps(record))
    said: list[str] = []
    again = ev.run_suite(SMALL, out, seed=0, progress=False, limit=1, say=said.append)
    assert said == [f"{out} was recorded by other code ({name} changed): starting over."]
    assert len(again["rows"]) == 1 and json.loads(out.read_text())["fingerprint"] == fp.fingerprint()


# --- (d) bring your own -----------------------------------------------------------------------------------------------

@pytest.fixture
def small_suite_on_the_command_line(monkeypatch):
    """``--suite test`` runs the test-sized suite through the whole command."""
    monkeypatch.setitem(ev.SUITES, "test", lambda data_folder: SMALL)
    monkeypatch.setattr(cli, "EVALUATION_SUITES", (*cli.EVALUATION_SUITES, "test"))


def test_the_readmes_own_attack_and_a_brought_defence_are_scored_by_import_path(small_suite_on_the_command_line,
                                                                                  tmp_path, capsys):
    out = tmp_path / "byo.json"
    argv = ["evaluate", "--suite", "test", "--attack", "bring_your_own:PlainDLG", "--defence", "noise",
            "bring_your_own:halve", "--out", str(out)]
    assert cli.main(argv) == 0
    record = json.loads(out.read_text())
    suite = SMALL.choose(attacks=["bring_your_own:PlainDLG"],
                         defences=ev.choose_defences(["noise", "bring_your_own:halve"]))
    check_record(record, suite)
    assert {r["attack"] for r in record["rows"]} == {"bring_your_own:PlainDLG"}
    assert [d for d in dict.fromkeys(r["defence_label"] for r in record["rows"])] == [
        "none", "noise 0.0001", "bring_your_own:halve"]
    assert all(r["error"] is None for r in record["rows"])  # the README's class ran on every message
    brought = [r for r in record["rows"] if r["brought_in"]]
    assert brought and all(r["defence_kind"] == "message" and r["value"] is None for r in brought)
    printed = capsys.readouterr().out
    assert "| bring_your_own:halve |" in printed and "bring_your_own:PlainDLG (" in printed
    assert record["command"] == ("lora-leak evaluate --suite test --attack bring_your_own:PlainDLG --defence noise "
                                 f"--defence bring_your_own:halve --out {out} --seed 0")


def test_a_brought_defence_transforms_every_message_a_victim_sends():
    defence = ev.load_defence("bring_your_own:halve")
    plain = ev.defended_messages([[ll.data.Example("a quiet film about a long war", 1)]], MAIN,
                                 ev.DefenceSetting("none"), recipe=SMALL.recipe, public=ll.data.course_sentences())
    halved = ev.defended_messages([[ll.data.Example("a quiet film about a long war", 1)]], MAIN, defence,
                                  recipe=SMALL.recipe, public=ll.data.course_sentences())
    for name, tensor in plain.messages[0].update.items():
        assert ll.fl.cosine_similarity({name: halved.messages[0].update[name]}, {name: tensor}) == pytest.approx(1.0)
    assert ll.defenses.update_norm(halved.messages[0].update) == pytest.approx(
        0.5 * ll.defenses.update_norm(plain.messages[0].update), rel=1e-5)


def test_a_protocol_defence_changes_the_victims_set_up_as_its_registry_entry_says():
    assert ev.DefenceSetting("local-steps", 2).setup_changes(SMALL.recipe) == dict(
        protocol="fedavg", local_steps=2, optimizer="sgd", lr=SMALL.recipe.local_lr)
    assert ev.DefenceSetting("secure-agg", 2).setup_changes(SMALL.recipe) == {}  # its clients: the training run's
    victim = [[ll.data.Example("a quiet film about a long war", 1)]]
    for defence, wanted in ((ev.DefenceSetting("rank", 2), dict(rank=2, alpha=4.0, train_head=True)),
                            (ev.DefenceSetting("no-head"), dict(rank=8, alpha=16.0, train_head=False)),
                            (ev.DefenceSetting("frozen-layers", 1), dict(rank=8, frozen_layers=1))):
        message = ev.defended_messages(victim, MAIN, defence, recipe=SMALL.recipe,
                                       public=ll.data.course_sentences()).messages[0]
        assert {key: getattr(message.setup, key) for key in wanted} == wanted, defence


def test_the_aware_attacker_is_told_the_defence_and_the_noise_it_left():
    told = []

    class Spy:
        def reconstruct(self, shared, knowledge):
            told.append(knowledge.defence)
            return ll.get_attack("span").reconstruct(shared, knowledge)

    defence = ev.DefenceSetting("noise", 1e-4)
    victims = ev.draw_victims(SMALL, ll.data.course_sentences())[(TINY, MAIN.tokens)]
    watched = ev.cell_messages(MAIN, defence, messages=1, recipe=SMALL.recipe, victims=victims)
    rows = [ev.attack_row(watched, MAIN, defence, "span", Spy(), aware=aware) for aware in (False, True)]
    assert told[0] is None and told[1] == ll.attacks.KnownDefence("noise", 1e-4) and told[1].noise == 1e-4
    assert [row["aware"] for row in rows] == [False, True] and rows[0]["key"] != rows[1]["key"]


# --- (e) bad input: one line, status 2, nothing written ---------------------------------------------------------------

BAD = [  # (name, argv after "evaluate", words in the one line)
    ("unknown suite", ["--suite", "nope"], "unknown suite 'nope': choose one of quick, minilm, full"),
    ("unknown attack", ["--attack", "nope"], "unknown attack 'nope'"),
    ("attack without text", ["--attack", "labels"], "does not rebuild text from a LoRA update"),
    ("unknown defence", ["--defence", "nope"], "unknown defence 'nope'"),
    ("not an import path", ["--attack", "my attack:Thing"], "is not an import path"),
    ("no such module", ["--attack", "no_such_module_here:Thing"], "cannot import 'no_such_module_here'"),
    ("no such class", ["--attack", "bring_your_own:Missing"], "has no 'Missing'"),
    ("not an attack", ["--attack", "bring_your_own:NotAnAttack"], "has no reconstruct(shared, knowledge) method"),
    ("not a defence", ["--defence", "bring_your_own:not_a_defence"], "must return the update's tensors"),
    ("out is a folder", ["--out", "{tmp}"], "is a folder"),
    ("out under a file", ["--out", "{tmp}/a_file/record.json"], "is not a writable folder"),
    ("no data folder", ["--data", "{tmp}/no_such_folder"], "no folder at"),
    ("too few long sentences", ["--suite", "full"], "pass a Rotten Tomatoes folder with --data"),
]


@pytest.mark.parametrize("name, argv, words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_status_2_and_writes_nothing(capsys, tmp_path, name, argv, words):
    (tmp_path / "a_file").write_text("not a folder")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "record.json")]
    assert cli.main(["evaluate", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("lora-leak: ") and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_the_command_line_answers_what_needs_no_model_before_torch_loads(tmp_path):
    (tmp_path / "a_file").write_text("x")
    before_torch = [["evaluate", "--suite", "nope"], ["evaluate", "--attack", "my attack:X"],
                    ["evaluate", "--defence", "a.b:"], ["evaluate", "--out", str(tmp_path)],
                    ["evaluate", "--out", str(tmp_path / "a_file" / "r.json")]]
    probe = ("import json, sys\nfrom lora_leak_lib import cli\n"
             f"statuses = [cli.main(argv) for argv in {before_torch!r}]\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'numpy', 'peft'})\n"
             "print(json.dumps([statuses, heavy]))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [[2] * len(before_torch), []]
    assert all(line.startswith("lora-leak: ") for line in done.stderr.splitlines())


# --- (f) the fingerprint ----------------------------------------------------------------------------------------------

@pytest.fixture
def source_copy(tmp_path):
    """A copy of the fingerprinted sources, laid out as the package."""
    root = tmp_path / "lora_leak_lib"
    for path in fp.fingerprinted_files():
        target = root / path.relative_to(fp.PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    return root


def test_the_fingerprint_covers_the_attacks_the_defences_and_their_simulation():
    files = set(fp.fingerprint()["files"])
    for name in ("attacks/lora_best.py", "attacks/span.py", "attacks/first_round.py", "defenses/registry.py",
                 "defenses/federated.py", "fl.py", "lora.py", "message.py", "training.py", "experiments/core.py",
                 "experiments/multi_round.py", "experiments/sweep.py", "experiments/evaluate.py"):
        assert f"lora_leak_lib/{name}" in files
    assert "lora_leak_lib/cli.py" not in files and "lora_leak_lib/course/book.py" not in files


def test_the_fingerprint_changes_with_an_attack_and_a_stale_record_fails_its_check(source_copy, tmp_path):
    recorded = {"fingerprint": fp.fingerprint(source_copy),
                "command": "lora-leak evaluate --suite full --out results.json --seed 0"}
    assert recorded["fingerprint"] == fp.fingerprint()  # the copy is the package's code
    fp.check_fingerprint(recorded, root=source_copy)  # current: no error
    span = source_copy / "attacks" / "span.py"
    span.write_text(span.read_text() + "\n# a change to the attack\n")
    assert fp.fingerprint(source_copy)["sha256"] != recorded["fingerprint"]["sha256"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(recorded))
    with pytest.raises(ValueError) as failed:  # shown failing once, on a stale JSON
        fp.check_fingerprint(path, root=source_copy)
    assert str(failed.value) == (f"the recorded evaluation {path} is stale: lora_leak_lib/attacks/span.py changed "
                                 "since it was recorded; regenerate it with `lora-leak evaluate --suite full --out "
                                 "results.json --seed 0`.")
    with pytest.raises(ValueError, match="has no fingerprint"):
        fp.check_fingerprint({"command": "lora-leak evaluate"})


# --- the quick suite itself -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_quick_suite_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "quick.json"
    assert cli.main(["evaluate", "--suite", "quick", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    check_record(record, ev.get_suite("quick"))
    assert {(r["defence"], r["value"]) for r in record["rows"]} == {
        (name, value) for name, spec in DEFENCES.items() for value in spec.sweep_values(quick=True)}
    assert "## Verdict per defence setting" in capsys.readouterr().out
    assert out.with_suffix(".md").exists() and out.with_suffix(".png").exists()
    fp.check_fingerprint(out)


def test_suite_rows_are_every_cell_by_every_attack_unaware_then_aware():
    rows = SMALL.rows()
    assert len(rows) == len(SMALL.cells()) * len(SMALL.attacks) * 2
    assert [aware for *_, aware in rows[:2]] == [False, True]
    assert list(product([MAIN], SMALL.defences)) == SMALL.cells()[:len(SMALL.defences)]
