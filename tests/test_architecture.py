"""The library's shape: layers that point one way, one attack registry read by every caller, one attack contract
(no import circle at any depth: test_import_graph)."""
from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import cli, commands, widgets
from lora_leak_lib.models import resolve
from test_import_graph import import_graph

ROOT = Path(ll.__file__).parent
REPO = ROOT.parent


def inside(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_layers_point_one_way():
    lib = "lora_leak_lib"
    parties = [f"{lib}.{m}" for m in ("message", "training", "fl", "attacks", "defenses")]
    for name, imports in import_graph().items():  # imports at any depth, functions included
        if inside(name, *parties):
            assert not any(inside(m, f"{lib}.experiments", f"{lib}.cli", f"{lib}.widgets", f"{lib}.flower")
                           for m in imports), name
        if name == f"{lib}.message":
            assert not any(inside(m, *parties[1:]) for m in imports), imports
        if inside(name, f"{lib}.attacks"):
            assert not any(inside(m, f"{lib}.fl", f"{lib}.defenses", f"{lib}.training") for m in imports), name
        if not inside(name, f"{lib}.course", f"{lib}.cli", f"{lib}.commands"):  # the course tooling sits on top
            assert not any(inside(m, f"{lib}.course") for m in imports), name


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _choices(parser, option: str) -> tuple[str, ...]:
    action = next(a for a in parser._actions if option in a.option_strings)
    return tuple(action.choices)


def test_every_menu_of_attacks_comes_from_the_one_registry():
    names = ll.attacks.attack_names(lora_text=True)
    assert names[0] == "lora-best" and set(names) <= set(ll.attacks.ATTACKS)
    other = next(name for name in ll.attacks.ATTACKS if name not in names)  # one that rebuilds no text
    with pytest.raises(ValueError, match=f"attack '{other}' does not rebuild text .*choose one of {', '.join(names)}"):
        commands.attack(cli.build_parser().parse_args(["attack", "--attack", other, "--text", "hi"]))
    assert widgets.lab_attacks() == names
    for script in ("lora_leakage.py",):
        assert _choices(_load_script(REPO / "benchmarks" / script).build_parser(), "--attack") == names
    assert "get_attack(\"dlg\"" in (REPO / "benchmarks" / "full_gradient.py").read_text()  # its variants: DLG knobs
    assert all(s.attack in ll.attacks.ATTACKS for s in ll.experiments.BENCHMARK)


def test_every_menu_of_defences_comes_from_the_one_registry():
    assert widgets.attack_lab().defence.options == tuple(ll.defenses.lab_defences())
    assert {d.name for d in ll.experiments.sweep.settings(quick=False)} == set(ll.defenses.DEFENCES)


def test_unknown_attacks_and_knobs_get_one_clear_error():
    with pytest.raises(ValueError, match="unknown attack 'nope': choose one of lora-best"):
        ll.get_attack("nope")
    with pytest.raises(ValueError, match="attack 'span' has no knob 'steps'"):
        ll.get_attack("span", steps=3)


@pytest.fixture(scope="module")
def trained():
    text = "my new pin is 4921"
    shared = ll.fl.capture_update([text], [1], resolve("tiny-bert"), rank=8, trained_steps=20)
    return shared, text, ll.Knowledge(length=len(ll.experiments.reference_ids([text], resolve("tiny-bert").tokenizer)[0]))


CHEAP_KNOBS = {"dlg": dict(steps=12, snapshot_every=4), "lora-best": dict(later_iterations=3),
               "later-layers": dict(iterations=3)}


WIDER = {"first-round": 16}
"""Attacks that need a rank above the message's inputs (6 word pieces and [CLS]/[SEP]: 8, the fixture's rank)."""


@pytest.mark.parametrize("name", [n for n, spec in ll.attacks.ATTACKS.items() if spec.lora])
def test_every_attack_keeps_the_one_contract(trained, name):
    shared, text, knowledge = trained
    if name in WIDER:
        shared = ll.fl.capture_update([text], [1], resolve("tiny-bert"), rank=WIDER[name], trained_steps=20)
    seen = []
    rec = ll.get_attack(name, **CHEAP_KNOBS.get(name, {})).reconstruct(
        shared, knowledge, lambda step, loss, texts: seen.append((step, loss, texts)))
    assert isinstance(rec, ll.Reconstruction) and rec.attack == name
    assert all(step >= 1 and loss == rec.loss_history[step - 1] for step, loss, _ in seen)
    assert [s for s, _ in rec.snapshots] == [s for s, _, _ in seen]
    assert rec.labels == [1]  # read from the head (iDLG) by every attack that reports labels
    if ll.attacks.ATTACKS[name].rebuilds_text:
        assert len(rec.texts) == len(rec.token_ids) == 1 and rec.loss is not None


def test_the_token_set_attack_works_on_full_fine_tuning_only():
    full = ll.fl.capture_full_update(["my pin is 4821"], [0])
    rec = ll.get_attack("token-set").reconstruct(full)
    assert rec.token_ids == [sorted(set(ll.experiments.reference_ids(["my pin is 4821"], resolve("tiny-bert").tokenizer)[0]))]
    with pytest.raises(ValueError, match="full fine-tuning"):
        ll.get_attack("token-set").reconstruct(ll.fl.capture_update(["my pin"], [0], trained_steps=2))


def test_the_attack_model_has_exactly_the_shared_tensors_as_parameters(trained):
    shared, text, _ = trained
    model = shared.attack_model()
    assert [n for n, _ in model.named_parameters()] == list(shared.update)
    encoded = ll.models.resolve("tiny-bert").tokenizer([text], return_tensors="pt").to(model.device)
    loss = torch.nn.functional.cross_entropy(model(**encoded).logits, torch.tensor([1], device=model.device))
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for g, (name, sent) in zip(grads, shared.update.items()):
        assert torch.allclose(g, sent.to(g.device), rtol=1e-4, atol=1e-7), name  # the true sentence gives it back


def test_models_load_once_and_leave_the_random_state_as_a_fresh_build(capfd):
    torch.manual_seed(123)
    first = ll.models.resolve("minilm").load(seed=4)
    after_first = torch.rand(3)
    capfd.readouterr()
    second = ll.models.resolve("minilm").load(seed=4)
    assert torch.equal(torch.rand(3), after_first)  # same random state after a copy as after a build
    assert capfd.readouterr().err == ""
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert first is not second


def readme_example() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Bring your own attack", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_brings_its_own_dlg_loop_using_documented_names_only():
    code = readme_example()
    assert "lora_leak_lib." not in code.replace("import lora_leak_lib as ll", "")  # no submodule internals
    for used in set(re.findall(r"\bll\.([\w.]+)", code)):
        target = ll
        for part in used.split("."):
            target = getattr(target, part)
        assert (target.__doc__ or "").strip(), f"ll.{used} has no docstring"
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    rows = namespace["rows"]
    assert len(rows) == 1 and 0.0 <= rows[0]["token_accuracy"] <= 1.0 and rows[0]["original"]


FRONT_ENDS = {"models", "cli", "commands", "widgets"}
"""Where a model's name may be read: the registry that resolves it, the command line (both halves) and the lab."""


def name_readers(source: str) -> list[str]:
    """Functions (and dataclass fields) of ``source`` that take a model's name, or resolve one inside a function.
    A result record (a class with ``as_json``) may hold the name of the model it ran on: it is written, not read."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            found += [f"{node.name}({a.arg})" for a in args if a.arg == "model_name" or
                      "model" in a.arg and isinstance(a.annotation, ast.Name) and a.annotation.id == "str"]
            found += [f"{node.name} calls {ast.unparse(call.func)}" for call in ast.walk(node)
                      if isinstance(call, ast.Call) and ast.unparse(call.func) in
                      ("resolve", "models.resolve", "check_model_name", "models.check_model_name")]
        writes = any(isinstance(f, ast.FunctionDef) and f.name == "as_json" for f in (node.body if isinstance(node, ast.ClassDef) else ()))
        if isinstance(node, ast.ClassDef) and not writes:  # a result record (``as_json``) writes the name it ran on
            found += [f"{node.name}.{field.target.id}" for field in node.body if isinstance(field, ast.AnnAssign)
                      and isinstance(field.target, ast.Name) and "model" in field.target.id
                      and ast.unparse(field.annotation) == "str"]
    return found


def test_the_name_check_sees_every_way_of_taking_a_name():
    fake = '''
def train(model, model_name, steps): ...
def attack(shared, model: str = "tiny-bert"): ...
def sweep(setup):
    return models.resolve(setup.name)
@dataclass
class Recipe:
    model: str = "tiny-bert"
def fine(model: models.PublicModel, tokenizer): ...
class Row:
    model: str
    def as_json(self): ...
'''
    assert name_readers(fake) == ["train(model_name)", "attack(model)", "sweep calls models.resolve", "Recipe.model"]


def test_no_function_below_the_front_ends_takes_a_model_name():
    """A name is resolved once, at the edge (CLI, lab, notebook, benchmark), into a ``PublicModel``; below,
    every function reads that object."""
    offenders = {str(path.relative_to(ROOT)): found for path in sorted(ROOT.rglob("*.py"))
                 if path.stem not in FRONT_ENDS and (found := name_readers(path.read_text(encoding="utf-8")))}
    assert not offenders, offenders


def test_importing_the_library_loads_neither_the_integration_nor_the_course_tooling():
    import subprocess
    import sys

    code = "import sys, lora_leak_lib as ll; [getattr(ll, name) for name in ll.__all__]; " \
           "print(sorted(m for m in sys.modules if m.startswith(('lora_leak_lib.flower', 'lora_leak_lib.course', 'flwr'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", loaded


def test_every_attack_module_registers_an_attack_or_serves_one():
    """Research no attack uses lives in benchmarks/ (``import lora_leak_lib.attacks`` imports every module of the
    package to find its attacks): each module registers an attack or is imported by another library module."""
    sources = {path: path.read_text(encoding="utf-8") for path in ROOT.rglob("*.py")}
    for path, source in sources.items():
        if path.parent != ROOT / "attacks" or path.stem in ("__init__", "base", "registry"):
            continue
        imported = re.compile(rf"from \.{path.stem} import|from \.\.attacks\.{path.stem} import|attacks\.{path.stem}\b")
        users = [other for other, text in sources.items() if other != path and imported.search(text)]
        assert "@register(" in source or users, f"{path.name}: no attack registered, imported by no library module"


def test_no_module_is_named_like_a_standard_library_module():
    """``attacks/threading.py`` shadowed ``threading`` for every relative import beside it."""
    clashes = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if p.stem in sys.stdlib_module_names)
    assert not clashes, clashes


def public_definitions(root: Path) -> dict[str, list[str]]:
    """Each public top-level function, class and UPPER_CASE constant of the package, with the modules defining it."""
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else []
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
            for name in names:
                if not name.startswith("_"):
                    found.setdefault(name, []).append(str(path.relative_to(root)))
    return found


def test_no_two_public_definitions_share_a_name():
    """One word per idea: a name defined in two modules meant two things (``run_setting``, ``OPTIMIZERS``, ...).
    ``main``, a program's entry point, is the one name every program may have."""
    twice = {name: where for name, where in public_definitions(ROOT).items() if len(where) > 1 and name != "main"}
    assert not twice, twice


def test_the_duplicate_name_check_sees_functions_classes_and_constants(tmp_path):
    for name, source in (("a", "def run(): ...\nclass Row: ...\nLIMIT = 1\n"), ("b", "def run(): ...\nLIMIT: int = 2\n")):
        (tmp_path / f"{name}.py").write_text(source)
    assert public_definitions(tmp_path) == {"run": ["a.py", "b.py"], "Row": ["a.py"], "LIMIT": ["a.py", "b.py"]}


FRONT_DOORS = {  # the library's entry points with many knobs, and the arguments they still take by position
    "fl.capture_update": 3, "fl.run_federated": 4, "flower.run_flower": 3, "experiments.attack_texts": 3,
    "experiments.multi_round.attack_watched": 3, "experiments.multi_round.watched_messages": 3,
    "experiments.replication.article_updates": 2, "widgets.run_lab": 2,
}


@pytest.mark.parametrize("path, positional", FRONT_DOORS.items())
def test_front_doors_with_many_knobs_take_them_by_keyword(path, positional):
    """``capture_update(texts, labels, model, rank=8, trained_steps=20)``: a call says what each number is."""
    import inspect

    function = ll
    for part in path.split("."):
        function = getattr(function, part)
    kinds = [p.kind for p in inspect.signature(function).parameters.values() if p.kind is not p.VAR_KEYWORD]
    assert all(k is inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds[:positional]), path
    assert all(k is inspect.Parameter.KEYWORD_ONLY for k in kinds[positional:]), path


def test_every_simulated_attack_reports_one_typed_row_written_as_the_recorded_keys():
    """``SentenceResult``: read by attribute or key, summarised like a dict, written with the recorded files' keys."""
    import json
    from dataclasses import fields

    rows = ll.experiments.attack_texts(["a quiet film", "loud and long"], [1, 0], resolve("tiny-bert"), rank=8,
                                       trained_steps=2, attack="span")
    assert all(isinstance(r, ll.experiments.SentenceResult) for r in rows)
    row = rows[0]
    assert row["token_accuracy"] == row.token_accuracy and dict(row) == row.as_json()
    assert (row.model, row.rank, row.trained_steps, row.attack, row.batch_size, row.sentences) == \
        ("tiny-bert", 8, 2, "span", 2, 2)
    written = json.loads(json.dumps(row.as_json()))
    assert list(written) == [f.name for f in fields(row)]
    recorded = ll.data.recorded("lora_leakage.json")["rows"][0]["rows"][0]
    assert set(recorded) <= set(written)  # the recorded rows (texts left out) use the same keys
    assert ll.metrics.summarize(rows)["token_accuracy"]["n"] == 2
    with pytest.raises(KeyError):
        row["rounds"]
