"""Adaptive attacks: a server that knows the client's defence (``Knowledge.defence``) reads what stands above it."""
from __future__ import annotations

from dataclasses import replace

import pytest

import lora_leak_lib as ll
from lora_leak_lib.attacks import Knowledge, KnownDefence, get_attack
from lora_leak_lib.defenses import defend_message
from lora_leak_lib.models import resolve

TEXT = "my salary is paid on the first friday"


@pytest.fixture(scope="module")
def round0():
    return ll.fl.capture_update([TEXT], [1], resolve("minilm"), rank=16, trained_steps=0)


def test_each_defence_says_what_a_server_can_know_of_its_noise(round0):
    known = ll.experiments.known_defence
    assert known("noise", 1e-3, round0).noise == 1e-3
    assert known("dp-sgd", 2.0, round0).noise == 2.0 * ll.defenses.DP_CLIP / round0.batch_size
    steps = known("quantise", 8, round0).noise          # per tensor: each has its own scale
    assert set(steps) == set(round0.update) and len(set(steps.values())) > 1
    assert known("clip", 1.0, round0).noise is None and known("rank", 4, round0).noise is None
    assert KnownDefence("noise", 1e-3, 1e-3) == KnownDefence("noise", 1e-3)  # what it is, not what it implies
    with pytest.raises(ValueError, match="standard deviation"):
        KnownDefence("noise", 1e-3, -1.0)


@pytest.mark.parametrize("defence, value", [("quantise", 8), ("noise", 1e-6)])
def test_the_first_round_span_is_read_above_a_known_defence(round0, defence, value):
    """Quantisation and noise fill every dL/dB row space, so an attacker who ignores them finds nothing to test;
    one who knows them keeps the directions that stand above their noise, and the message comes back."""
    defended = replace(round0, update=defend_message(round0.update, defence, value, 0))
    with pytest.raises(ValueError, match="fills its rank"):
        get_attack("first-round").reconstruct(defended, Knowledge(length=8))
    aware = Knowledge(length=8, defence=ll.experiments.known_defence(defence, value, defended))
    row = ll.experiments.attack_update(defended, [TEXT], "lora-best", aware)[0]
    assert row["reconstruction"] == TEXT


def test_noise_that_hides_every_direction_is_said_so(round0):
    defended = replace(round0, update=defend_message(round0.update, "noise", 1.0, 0))
    aware = Knowledge(length=8, defence=ll.experiments.known_defence("noise", 1.0, defended))
    with pytest.raises(ValueError, match="stands above the known defence's noise"):
        get_attack("first-round").reconstruct(defended, aware)


def test_a_known_noise_that_drowns_a_trained_round_is_read_as_the_unaware_attack_reads_it():
    """DP-SGD at σ = 1 on one sentence: noise of std 1 per entry, a thousand times a trained round's lora_A gradient
    on MiniLM. The aware attack keeps nothing above it (``Case.drowned``, not a first round), so ``lora-best`` reads
    the message as the unaware attack does instead of running round 0's DLG (minutes on a CPU)."""
    trained = ll.fl.capture_update([TEXT], [1], resolve("minilm"), rank=8, trained_steps=5)
    defended = replace(trained, update=defend_message(trained.update, "dp-sgd", 1.0, 0))
    aware = Knowledge(length=8, defence=ll.experiments.known_defence("dp-sgd", 1.0, defended))
    case = ll.attacks.case.Case(defended, aware)
    assert case.drowned and case.first_round and not ll.attacks.case.Case(defended, Knowledge(length=8)).drowned
    told, unaware = (get_attack("lora-best").reconstruct(defended, k) for k in (aware, Knowledge(length=8)))
    assert told.token_ids == unaware.token_ids
