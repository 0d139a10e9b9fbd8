"""The defence registry is the one place a defence is declared: the sweep reads every behaviour from its entry."""
from __future__ import annotations

import ast
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib.attacks import get_attack
from lora_leak_lib.defenses import registry
from lora_leak_lib.defenses.registry import DefenceSpec
from lora_leak_lib.experiments import sweep

SWEEP = Path(sweep.__file__)


@pytest.fixture
def scale_defence(monkeypatch):
    """A toy message defence, ``scale``: every client multiplies its update by the knob. One registry entry."""
    calls: list[tuple[float, float]] = []  # (knob, norm of the update it was given)

    def scale(update, value, seed):
        calls.append((value, ll.defenses.update_norm(update)))
        return OrderedDict((n, value * t) for n, t in update.items())

    monkeypatch.setitem(registry.DEFENCES, "scale", DefenceSpec(
        "scale", "factor on the update", "message", scale, lab_default=0.5, quick=(0.5,), full=(0.5, 0.25)))
    return calls


def test_a_message_defence_is_one_registry_entry(scale_defence):
    recipe = sweep.Recipe(n_clients=2, rounds=1, batch_size=2, n_victims=1, seed=0)
    assert [d.value for d in sweep.settings(quick=True) if d.name == "scale"] == [0.5]
    assert [d.value for d in sweep.settings(quick=False) if d.name == "scale"] == [0.5, 0.25]
    assert "scale" in ll.defenses.lab_defences()
    attacked = []

    def attack(shared, knowledge):
        attacked.append(shared)
        return get_attack("span").reconstruct(shared, knowledge)

    defence = sweep.Defence("scale", 0.5)
    scale_defence.clear()  # checking a knob runs the transformation once on a test tensor
    result = sweep.run_setting(defence, recipe, attack)
    # every training message (rounds × clients) and the victim's went through the toy transformation
    assert len(scale_defence) == recipe.rounds * recipe.n_clients + recipe.n_victims
    assert {value for value, _ in scale_defence} == {0.5}
    # the server attacked the victim's scaled message
    assert len(attacked) == 1
    assert ll.defenses.update_norm(attacked[0].update) == pytest.approx(0.5 * scale_defence[-1][1], rel=1e-5)
    assert (result.defence, result.label, result.n_sentences, result.epsilon) == ("scale", "scale 0.5", 1, None)
    assert len(result.accuracy_curve) == recipe.rounds + 1 and result.attack_error is None
    baseline = sweep.SettingResult("none", None, "none", result.accuracy, 0.5, [0.5], 1.0, 1.0, 1)
    assert [row["defence"] for row in sweep.recommendations([baseline, result])] == ["scale"]


def test_a_protocol_defence_changes_the_run_through_its_entry(monkeypatch):
    monkeypatch.setitem(registry.DEFENCES, "wide", DefenceSpec(
        "wide", "clients per round", "protocol", integer_at_least=2, quick=(3,), full=(3, 6),
        overrides=lambda value, recipe: dict(n_clients=value, rank=2), victim_sentences=lambda value: 2))
    recipe = sweep.Recipe(n_clients=2, n_victims=2)
    kwargs = sweep.Defence("wide", 3).run_kwargs(recipe)
    assert (kwargs["n_clients"], kwargs["rank"], kwargs["protocol"]) == (3, 2, "fedsgd")
    assert kwargs["make_client"] is ll.fl.Client
    groups = sweep.victim_groups(sweep.Defence("wide", 3), recipe, ll.data.course_sentences())
    assert [[len(client) for client in group] for group in groups] == [[2], [2]]
    with pytest.raises(ValueError, match="wide \\(clients per round\\) must be an integer of at least 2, got 1"):
        sweep.Defence("wide", 1)


def defence_names_compared(source: str) -> list[tuple[int, str]]:
    """Defence names the source compares anything with (``==``, ``!=``, ``in``, ``match``), with their lines."""
    names = set(registry.DEFENCES)
    found = []

    def constants(node: ast.AST) -> list[ast.Constant]:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [c for element in node.elts for c in constants(element)]
        return [node] if isinstance(node, ast.Constant) else []

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.MatchValue):
            operands = [node.value]
        elif isinstance(node, ast.Dict):  # a table keyed by defence name is dispatch too
            operands = [k for k in node.keys if k is not None]
        else:
            continue
        found += [(c.lineno, c.value) for op in operands for c in constants(op) if c.value in names]
    return found


def test_the_sweep_never_branches_on_a_defence_name():
    assert defence_names_compared(SWEEP.read_text(encoding="utf-8")) == []
    # the check finds what it looks for
    assert defence_names_compared('if name == "dp-sgd" or d.name in ("rank", "batch"):\n    pass\n') == [
        (1, "dp-sgd"), (1, "rank"), (1, "batch")]
    assert defence_names_compared('grid = {"clip": [1.0]}\n') == [(1, "clip")]


def test_every_defence_in_the_registry_is_swept_in_registry_order():
    for quick in (True, False):
        settings = sweep.settings(quick=quick)
        assert list(dict.fromkeys(d.name for d in settings)) == list(registry.DEFENCES)
        assert settings[0].name == registry.BASELINE


def test_central_dp_runs_through_its_entry_and_is_not_a_message_defence():
    """Central DP in the sweep: plain clients, a server that noises each round's mean (so training changes), and
    the victim's message attacked as it was sent."""
    recipe = sweep.Recipe(n_clients=2, rounds=2, batch_size=2, n_victims=1, seed=0)
    kwargs = sweep.Defence("central-dp", 1e-2).run_kwargs(recipe)
    assert kwargs["make_client"] is ll.fl.Client and kwargs["make_server"].keywords["central_noise"] == 1e-2
    noisy = sweep.run_setting(sweep.Defence("central-dp", 1e-2), recipe)
    plain = sweep.run_setting(sweep.Defence("none"), recipe)
    assert noisy.accuracy_curve[0] == plain.accuracy_curve[0] and noisy.attack_error is None
    with pytest.raises(ValueError, match="changes the protocol, not one message"):
        ll.defenses.defend_message(OrderedDict(x=torch.ones(3)), "central-dp", 1e-3)


def test_the_server_adds_central_noise_to_the_mean_only():
    setup = ll.fl.FederatedSetup(model=ll.resolve("tiny-bert"), rank=2, protocol="fedsgd", lr=0.5)
    state = ll.gradients.trainable_state(setup.build_model())
    quiet = ll.defenses.federated.DefendedServer(setup, state)
    loud = ll.defenses.federated.DefendedServer(setup, state, central_noise=1e-2, seed=0)
    for server in (quiet, loud):
        server.broadcast(0)
        for client in (0, 1):
            update = OrderedDict((n, torch.full_like(t, 0.1 * (client + 1))) for n, t in state.items())
            server.receive(ll.message.SharedUpdate(update=update, global_state=state, setup=setup, client_id=client,
                                                   round=0, n_examples=1, batch_size=1))
    assert quiet.captured(1, 0).update.keys() == loud.captured(1, 0).update.keys()
    assert all(torch.equal(quiet.captured(1, 0).update[n], loud.captured(1, 0).update[n]) for n in state)
    noised, plain = loud.aggregate(0), quiet.aggregate(0)
    step = {n: noised[n] - plain[n] for n in state}
    spread = torch.cat([s.flatten() for s in step.values()]).std().item() / 0.5  # FedSGD steps -lr · mean
    assert spread == pytest.approx(1e-2, rel=0.1)
