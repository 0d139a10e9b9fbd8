"""The interactive attack lab: type a sentence, pick model, rank, attack and defence, and watch it leak.

All logic lives in plain functions (``run_lab``, ``render_comparison``, ``render_loss_curve``) that tests
call without a browser; ``attack_lab()`` only wires them to core ipywidgets, using the API that ipywidgets
7.7 (Colab) and 8.x (JupyterLab 4) share: ``observe``, ``on_click``, ``HTML``, ``VBox``/``HBox``, ``Layout``.
"""
from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from . import config, fl, metrics, models
from .attacks import ATTACKS, Attack, Knowledge, Reconstruction, SharedUpdate, attack_names, get_attack, lora_a_is_zero
from .defenses import DEFENCES, defend_message, lab_defences
from .checks import check_trained_steps
from .experiments.multi_round import SERVERS, Watch, watched_messages

RANKS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_TEXT = "my new pin is 4921 and the card works perfectly now"
LAB_MAX_TOKENS = 64
"""Longest sentence the lab takes (word pieces, without [CLS]/[SEP]); the library functions take longer ones."""
StepCallback = Callable[[int, float, list[str]], None]

LAB_DLG_LR = 0.1
"""Adam's step for DLG in the lab. On notebook 09's sentence (tiny-bert, r=8, 20 steps trained), 150 steps at 0.1
reached 92% token accuracy where DLG's default 0.03 reached 0%."""
LAB_KNOBS: dict[str, dict[str, object]] = {
    "lora-best": {"steps": config.steps(quick=150, full=400)},
    "dlg": {"steps": config.steps(quick=150, full=400), "lr": LAB_DLG_LR, "snapshot_every": 10, "refine_sweeps": 1},
}
"""The lab's knobs per attack on top of the registry's defaults: DLG set up for the live view."""


def lab_attacks() -> tuple[str, ...]:
    """The attacks the lab offers: every attack of the registry that rebuilds text."""
    return attack_names(lora_text=True)


def lab_attack(name: str, seed: int = 0) -> Attack:
    """An attack from the registry by name, with DLG set up for the live view (frequent snapshots, seeded)."""
    knobs = dict(LAB_KNOBS.get(name, {}))
    if "seed" in ATTACKS[name].knob_names():
        knobs["seed"] = seed
    return get_attack(name, **knobs)


def _needs_length(attack: str, shared: SharedUpdate) -> bool:
    """DLG cannot guess the length under LoRA; ``lora-best`` runs DLG in the first round."""
    return attack == "dlg" or (attack == "lora-best" and lora_a_is_zero(shared.update))


def lab_models() -> list[str]:
    """Models the lab offers: the offline ones whose package is installed, the hub ones when the hub may be used."""
    return [name for name, spec in models.MODELS.items()
            if (models.available([name]) if spec.offline else not models.hub_offline())]


def check_choice(value: object, choices: Sequence[object], what: str) -> None:
    """Raise one ``ValueError`` naming the choices unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: choose one of {', '.join(map(str, choices))}.")


def check_lab_text(text: str, model: models.PublicModel = models.TINY_BERT) -> list[int]:
    """The token ids (without [CLS]/[SEP]) of a lab sentence, or one clear error: empty, or too long."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("type a sentence first: the text is empty.")
    ids = model.tokenizer.encode(text.strip(), add_special_tokens=False)
    if not ids:
        raise ValueError("the text holds no word the tokenizer knows: type a sentence with words.")
    if len(ids) > LAB_MAX_TOKENS:
        raise ValueError(f"the sentence has {len(ids)} word pieces; the lab takes at most {LAB_MAX_TOKENS}: "
                         "shorten it.")
    return ids


def defend(shared: SharedUpdate, defence: str = "none", strength: float | None = None,
           seed: int = 0) -> SharedUpdate:
    """The message after the client's defence: a copy of ``shared`` with its update transformed."""
    check_choice(defence, lab_defences(), "defence")
    if defence == "none":
        return shared
    return replace(shared, update=defend_message(shared.update, defence, strength, seed))


@dataclass
class LabResult:
    """One lab run: the sentence, what the attack rebuilt, the scores and the path it took."""

    original: str
    reconstruction: str
    original_tokens: list[str]
    recovered_tokens: list[str]
    scores: dict[str, float]
    true_label: int
    recovered_label: int | None
    model_name: str
    rank: int
    attack: str
    defence: str
    seconds: float
    losses: list[float] = field(default_factory=list)

    def metrics_line(self, seconds: bool = True) -> str:
        """The scores in one line, as the lab shows them (``seconds=False`` leaves out the run time)."""
        s = self.scores
        label = "—" if self.recovered_label is None else (
            "right" if self.recovered_label == self.true_label else "wrong")
        return (f"token accuracy {s['token_accuracy']:.0%} · ROUGE-1 {s['rouge1']:.2f} · ROUGE-2 {s['rouge2']:.2f}"
                f" · ROUGE-L {s['rougeL']:.2f} · label {label}" + (f" · {self.seconds:.1f} s" if seconds else ""))


def run_lab(text: str, model_name: str = "tiny-bert", *, rank: int = 8, attack: str = "lora-best",
            defence: str = "none", trained_steps: int = 20, seed: int = 0, strength: float | None = None,
            label: int = 0, known_length: bool = True, on_step: StepCallback | None = None,
            server: str = "honest") -> LabResult:
    """Simulate one client's LoRA gradient on ``text`` once the global adapter has trained
    ``trained_steps`` steps (0: the first round, ``B = 0``), defend it, attack it.

    ``on_step(step, loss, texts)`` sees the attack's progress (the live view uses it). ``known_length``
    tells the attacker the number of word pieces (the strong-attacker assumption of LAMP and DAGER).
    ``server="malicious"`` sends the client a crafted adapter (a random ``B``: even round 0 leaks).
    """
    model = models.resolve(model_name)  # the lab's edge: the name becomes the public model here
    model.check_available()
    check_choice(rank, RANKS, "rank")
    check_choice(attack, lab_attacks(), "attack")
    check_choice(defence, lab_defences(), "defence")
    check_choice(label, (0, 1), "label")
    check_choice(server, SERVERS, "server")
    check_trained_steps(trained_steps)
    reference = check_lab_text(text, model)
    start = time.perf_counter()
    if server == "honest":
        shared = fl.capture_update([text.strip()], [label], model, rank=rank, trained_steps=trained_steps, seed=seed)
    else:
        shared = watched_messages([text.strip()], [label], model, rank=rank, trained_steps=trained_steps,
                                  watch=Watch(server=server), seed=seed)[0][0]
    shared = defend(shared, defence, strength, seed)
    knowledge = Knowledge(length=len(reference)) if known_length else Knowledge()  # word pieces, no [CLS]/[SEP]
    if not known_length and _needs_length(attack, shared):
        raise ValueError("DLG needs the sentence length under LoRA: tick 'attacker knows the length' "
                         "or use the span attack after some training (steps trained > 0), which finds it itself.")
    config.set_seed(seed)
    rebuilt = lab_attack(attack, seed).reconstruct(shared, knowledge, on_step)
    return _result(text.strip(), reference, rebuilt, label, model, rank, attack, defence,
                   time.perf_counter() - start, rebuilt.loss_history)


def _result(text: str, reference: list[int], rebuilt: Reconstruction, label: int, model: models.PublicModel,
            rank: int, attack: str, defence: str, seconds: float, losses: Sequence[float]) -> LabResult:
    tokenizer = model.tokenizer
    recovered = list(rebuilt.token_ids[0]) if rebuilt.token_ids else []
    reference_text = tokenizer.decode(reference)
    scores = metrics.sentence_scores(reference_text, rebuilt.texts[0] if rebuilt.texts else "", reference, recovered)
    return LabResult(text, rebuilt.texts[0] if rebuilt.texts else "", tokenizer.convert_ids_to_tokens(reference),
                     tokenizer.convert_ids_to_tokens(recovered), scores, label,
                     rebuilt.labels[0] if rebuilt.labels else None, model.name, rank, attack, defence, seconds,
                     [float(x) for x in losses])


GREEN, RED, GREY = "#c8f7c5", "#ffd6d6", "#eeeeee"


def render_comparison(original_tokens: Sequence[str], recovered_tokens: Sequence[str], reconstruction: str = "",
                      done: bool = False) -> str:
    """HTML of the token-by-token comparison: original above, reconstruction below, matches in green.

    The reconstruction's text sits in ``.lora-leak-reconstruction`` (with ``data-done`` once the attack has
    finished) so that a browser test can read it from the page.
    """
    n = max(len(original_tokens), len(recovered_tokens), 1)
    cells_top, cells_bottom = [], []
    for i in range(n):
        a = original_tokens[i] if i < len(original_tokens) else ""
        b = recovered_tokens[i] if i < len(recovered_tokens) else ""
        colour = GREEN if a and a == b else (RED if b else GREY)
        cells_top.append(f"<td style='padding:2px 6px;background:{GREY}'>{html.escape(a)}</td>")
        cells_bottom.append(f"<td style='padding:2px 6px;background:{colour}'>{html.escape(b)}</td>")
    hits = sum(1 for a, b in zip(original_tokens, recovered_tokens) if a == b)
    head = "<th style='text-align:left;padding-right:8px'>{}</th>"
    state = "done" if done else "running"
    return (
        "<div style='overflow-x:auto'><table style='border-collapse:separate;border-spacing:2px;"
        "font-family:monospace'>"
        f"<tr>{head.format('original')}{''.join(cells_top)}</tr>"
        f"<tr>{head.format('attack')}{''.join(cells_bottom)}</tr></table>"
        f"<div>{hits} of {len(original_tokens)} tokens in place</div>"
        f"<div>reconstruction: <span class='lora-leak-reconstruction' data-done='{str(done).lower()}' "
        f"data-state='{state}'>{html.escape(reconstruction)}</span></div></div>"
    )


def render_loss_curve(losses: Sequence[float], title: str = "matching loss", width: int = 480,
                      height: int = 180, ylabel: str = "loss") -> str:
    """An inline SVG line plot of the attack's loss per step, log scale, titled and with labelled axes."""
    values = [v for v in losses if math.isfinite(v) and v > 0]
    if not values:
        return f"<div><b>{html.escape(title)}</b>: no loss yet</div>"
    logs = [math.log10(v) for v in values]
    low, high = min(logs), max(logs)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5  # one value (or a flat run): centre it
    left, bottom, right, top = 58, height - 28, width - 12, 40
    xs = [left + (right - left) * i / max(len(logs) - 1, 1) for i in range(len(logs))]
    ys = [bottom - (bottom - top) * (v - low) / (high - low) for v in logs]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    side = ("start", 6) if len(values) == 1 else ("end", -6)
    mark = (f"<circle cx='{xs[-1]:.1f}' cy='{ys[-1]:.1f}' r='3' fill='#1f77b4'/>"
            f"<text x='{xs[-1] + side[1]:.1f}' y='{ys[-1] - 6:.1f}' text-anchor='{side[0]}'>{values[-1]:.2e}</text>")
    axis = f"attack step ({len(values)} step{'s' if len(values) > 1 else ''})"
    return (
        f"<svg width='{width}' height='{height}' style='font:11px sans-serif' role='img'>"
        f"<text x='{width / 2}' y='14' text-anchor='middle' font-weight='bold'>{html.escape(title)}</text>"
        f"<line x1='{left}' y1='{bottom}' x2='{right}' y2='{bottom}' stroke='black'/>"
        f"<line x1='{left}' y1='{top}' x2='{left}' y2='{bottom}' stroke='black'/>"
        f"<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='{points}'/>{mark}"
        f"<text x='{left - 4}' y='{top + 4}' text-anchor='end'>{10 ** high:.1e}</text>"
        f"<text x='{left - 4}' y='{bottom}' text-anchor='end'>{10 ** low:.1e}</text>"
        f"<text x='{(left + right) / 2}' y='{height - 4}' text-anchor='middle'>{axis}</text>"
        f"<text x='{left}' y='{top - 8}'>{html.escape(ylabel)} (log scale)</text></svg>"
    )


def render_error(message: str) -> str:
    """One line in the lab's status area for a problem the learner can fix."""
    return f"<span class='lora-leak-error' style='color:#b00020'>⚠ {html.escape(message)}</span>"


class Lab:
    """The lab's widgets and the button handler; ``attack_lab()`` builds one and the notebook displays it."""

    def __init__(self, text: str = DEFAULT_TEXT, model_name: str = "tiny-bert", rank: int = 8,
                 attack: str = "lora-best", defence: str = "none", trained_steps: int = 20, seed: int = 0) -> None:
        import ipywidgets as w

        check_choice(model_name, lab_models(), "model")
        check_choice(rank, RANKS, "rank")
        check_choice(attack, lab_attacks(), "attack")
        check_choice(defence, lab_defences(), "defence")
        self.result: LabResult | None = None
        wide = {"description_width": "initial"}
        self.text = w.Textarea(value=text, description="sentence", layout=w.Layout(width="95%", height="48px"),
                               style=wide)
        self.text.add_class("lora-leak-text")
        self.model = w.Dropdown(options=lab_models(), value=model_name, description="model", style=wide)
        self.rank = w.Dropdown(options=list(RANKS), value=rank, description="LoRA rank", style=wide)
        self.attack = w.Dropdown(options=list(lab_attacks()), value=attack, description="attack", style=wide)
        self.attack.add_class("lora-leak-attack")
        self.defence = w.Dropdown(options=lab_defences(), value=defence, description="defence", style=wide)
        self.strength = w.FloatText(value=0.0, description="strength", style=wide, disabled=True,
                                    layout=w.Layout(width="180px"))
        self.trained_steps = w.IntSlider(value=trained_steps, min=0, max=100, description="steps trained", style=wide)
        self.label = w.Dropdown(options=[("negative", 0), ("positive", 1)], value=0, description="label",
                                style=wide)
        self.server = w.Dropdown(options=list(SERVERS), value="honest", description="server", style=wide)
        self.known_length = w.Checkbox(value=True, description="attacker knows the length", indent=False)
        self.button = w.Button(description="Run attack", button_style="danger", icon="play")
        self.button.add_class("lora-leak-run")
        self.help = w.HTML()
        self.status = w.HTML()
        self.status.add_class("lora-leak-status")
        self.view = w.HTML()
        self.view.add_class("lora-leak-result")
        self.curve = w.HTML()
        self.metrics = w.HTML()
        self.metrics.add_class("lora-leak-metrics")
        self.seed = seed
        self.defence.observe(self._defence_changed, names="value")
        self.attack.observe(self._explain, names="value")
        self.button.on_click(self.run)
        self._defence_changed()
        self._explain()
        self.widget = w.VBox([
            self.text,
            w.HBox([self.model, self.rank, self.label]),
            w.HBox([self.attack, self.defence, self.strength]),
            w.HBox([self.trained_steps, self.server, self.known_length]),
            w.HBox([self.button, self.status]),
            self.help, self.view, self.curve, self.metrics,
        ])

    def _defence_changed(self, change: dict | None = None) -> None:
        spec = DEFENCES[self.defence.value]
        self.strength.disabled = not spec.needs_value
        self.strength.value = float(spec.lab_default) if spec.needs_value else 0.0
        self._explain()

    def _explain(self, change: dict | None = None) -> None:
        strength = DEFENCES[self.defence.value].knob or "no defence"
        self.help.value = (f"<small>attack: {html.escape(ATTACKS[self.attack.value].description)}; "
                           f"defence: {html.escape(strength)}</small>")

    def on_step(self, step: int, loss: float, texts: list[str]) -> None:
        """The attack callback: show the current guess token by token and the loss so far."""
        tokenizer = models.resolve(self.model.value).tokenizer
        guess = texts[0] if texts else ""
        self._losses.append(loss)
        self.view.value = render_comparison(self._reference, tokenizer.tokenize(guess), guess)
        self.curve.value = render_loss_curve(self._losses, f"{self.attack.value}: loss so far",
                                             ylabel=ATTACKS[self.attack.value].loss)
        self.status.value = f"step {step} · loss {loss:.3g}"

    def run(self, button: object = None) -> LabResult | None:
        """The button handler: run the lab with the current choices; a problem becomes one line, not a traceback."""
        self.button.disabled = True
        self._losses: list[float] = []
        self.metrics.value = ""
        try:
            model = models.resolve(self.model.value)
            self._reference = model.tokenizer.convert_ids_to_tokens(check_lab_text(self.text.value, model))
            self.view.value = render_comparison(self._reference, [], "")
            self.status.value = "capturing the client's update…"
            result = run_lab(self.text.value, self.model.value, rank=self.rank.value, attack=self.attack.value,
                             defence=self.defence.value, trained_steps=self.trained_steps.value, seed=self.seed,
                             strength=None if self.strength.disabled else self.strength.value,
                             label=self.label.value, known_length=self.known_length.value, on_step=self.on_step,
                             server=self.server.value)
        except ValueError as error:
            self.status.value = render_error(str(error))
            return None
        except Exception as error:  # a bug, but the lab should still say so in one line
            self.status.value = render_error(f"{type(error).__name__}: {error}")
            return None
        finally:
            self.button.disabled = False
        self.view.value = render_comparison(result.original_tokens, result.recovered_tokens,
                                            result.reconstruction, done=True)
        self.curve.value = render_loss_curve(result.losses, f"{result.attack}: loss per step",
                                             ylabel=ATTACKS[result.attack].loss)
        self.metrics.value = f"<b>{html.escape(result.metrics_line())}</b>"
        self.status.value = "done"
        self.result = result
        return result

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def attack_lab(**defaults: object) -> Lab:
    """The interactive lab (ipywidgets); keyword arguments set the starting choices, e.g. ``rank=4``."""
    return Lab(**defaults)
