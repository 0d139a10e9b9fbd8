"""The first round's span: dL/dB's row spaces pin every input when a message has fewer inputs than the rank,
at round 0 (B = 0) and at every round of FFA-LoRA (A frozen)."""
from __future__ import annotations

import pytest

import lora_leak_lib as ll
from lora_leak_lib.attacks import Knowledge, get_attack
from lora_leak_lib.attacks import first_round as fr
from lora_leak_lib.attacks.case import Case
from lora_leak_lib.experiments import evaluate as ev
from lora_leak_lib.models import resolve

TEXT = "my salary is paid on the first friday"  # 8 word pieces: 10 inputs with [CLS] and [SEP]


def test_each_row_space_holds_exactly_the_inputs_a_projects():
    """dL/dB = s·Σ δ_t (A x_t)ᵀ: the row space has one direction per input, and each A x_t lies in it."""
    shared = ll.fl.capture_update([TEXT], [1], resolve("minilm"), rank=16, trained_steps=0)
    case = Case(shared, Knowledge())
    ids = case.tokenizer(TEXT)["input_ids"]
    x = case.inputs.vectors(ids, list(range(len(ids))))
    spaces = fr.row_spaces(shared)
    assert [s.basis.shape[0] for s in spaces] == [len(ids)] * len(spaces) and fr.readable(spaces)
    assert fr.certificate(spaces, x) < 1e-8                      # the true inputs explain every row space
    assert fr.certificate(spaces, x[:-1]) > 1e-2                 # one input short: they do not


@pytest.mark.parametrize("rank, trained_steps, freeze_a", [(16, 0, False), (64, 0, False), (16, 20, True)])
def test_a_message_with_fewer_inputs_than_the_rank_comes_back_exact(rank, trained_steps, freeze_a):
    """Round 0 at r = 16 and 64, and FFA-LoRA after 20 steps (B ≠ 0, A frozen: the same span), length unknown."""
    shared = ll.fl.capture_update([TEXT], [1], resolve("minilm"), rank=rank, trained_steps=trained_steps,
                                  freeze_a=freeze_a)
    assert all(".lora_A." not in name for name in shared.update) == freeze_a
    row = ll.experiments.attack_update(shared, [TEXT], "lora-best", Knowledge())[0]
    assert row["reconstruction"] == TEXT and row["residual"] < ll.attacks.CERTIFIED


def test_a_message_with_as_many_inputs_as_the_rank_is_left_to_dlg():
    """tiny-bert at r = 8 with 10 inputs: every dL/dB fills R^8, so the span test has nothing to test; the attack
    says so and lora-best runs DLG instead."""
    shared = ll.fl.capture_update([TEXT], [1], resolve("tiny-bert"), rank=8, trained_steps=0)
    assert not fr.readable(fr.row_spaces(shared))
    with pytest.raises(ValueError, match="at least r inputs"):
        get_attack("first-round").reconstruct(shared, Knowledge(length=8))
    found = get_attack("lora-best", steps=4).reconstruct(shared, Knowledge(length=8))
    assert found.attack == "lora-best" and len(found.token_ids[0]) == 8


def test_a_batch_comes_back_whole_and_threaded_by_layer_one():
    """Two sentences at r = 64: layer 0's row spaces give every (token, position) and certify them, but not which
    sentence each token belongs to (``first-round`` leaves that to the word-order prior); layer 1's row spaces see
    whole sentences and thread them (``lora-best``)."""
    texts = ["my salary is paid on friday", "the nurse called me back"]
    shared = ll.fl.capture_update(texts, [1, 0], resolve("minilm"), rank=64, trained_steps=0)
    found = get_attack("first-round").reconstruct(shared, Knowledge(length=6))
    tokenizer = resolve("minilm").tokenizer
    truth = {(p, t) for s in texts for p, t in enumerate(tokenizer.encode(s, add_special_tokens=False))}
    assert {(p, t) for s in found.token_ids for p, t in enumerate(s)} == truth
    assert found.loss < ll.attacks.CERTIFIED
    rows = ll.experiments.attack_update(shared, texts, "lora-best", Knowledge(length=6))
    assert [r["reconstruction"] for r in rows] == texts


def test_ffa_lora_trains_and_sends_b_only():
    setup = ll.fl.FederatedSetup(model=resolve("tiny-bert"), rank=4, freeze_a=True)
    names = list(ll.gradients.trainable_state(setup.build_model()))
    assert names and not any(".lora_A." in n for n in names) and any(".lora_B." in n for n in names)
    assert "ffa-lora" in ll.defenses.DEFENCES



def test_lora_kept_off_the_first_layers_sends_nothing_of_them_and_lora_best_falls_back_to_dlg():
    """The ``frozen-layers`` defence: no adapter on layer 0, so no input span to test; the strongest attack then runs
    DLG on what is sent (the span attack refuses in one line), and a bad count is one line too."""
    model = resolve("tiny-bert")
    text = "a quiet film about a long war"
    setup = ll.fl.FederatedSetup(model=model, frozen_layers=1)
    names = [n for n, p in setup.build_model().named_parameters() if p.requires_grad and "lora_" in n]
    assert names and not any(".layer.0." in n for n in names) and all(".layer.1." in n for n in names)
    watched = ev.defended_messages([[ll.data.Example(text, 1)]], ev.EvaluationSetting(model=model, tokens=8),
                                   ev.DefenceSetting("frozen-layers", 1), recipe=ll.experiments.sweep.Recipe(),
                                   public=ll.data.course_sentences())
    message, knowledge = watched.messages[0], ll.attacks.Knowledge(length=7)
    with pytest.raises(ValueError, match="no lora_A of layer 0"):
        ll.get_attack("span").reconstruct(message, knowledge)
    rebuilt = ll.get_attack("lora-best", steps=20).reconstruct(message, knowledge)
    assert rebuilt.attack == "lora-best" and len(rebuilt.texts) == 1
    with pytest.raises(ValueError, match="frozen_layers must be an integer from 0 to 1"):
        ll.fl.FederatedSetup(model=model, frozen_layers=2).build_model()
