"""What decides whether one round's LoRA update gives a message back word for word: the rule the course teaches,
written once, from the attack as it is (``lora-best``).

A trained round's first-layer ``lora_A`` gradients span ``k = min(inputs, modules·r)`` directions of the first
layer's inputs (``modules`` adapted projections read that input; notebook 01). Three limits decide:

- **the rank, for the per-position search**: while the span holds every input (``inputs ≤ modules·r``), each
  position's own token is the one input inside it: *exact*, whatever the width;
- **the width, for the token set**: past the rank the span still lies in the span of the sentence's tokens, its
  positions and ``β``; while ``2·inputs + 1 + k < d`` only the sentence's tokens explain it (``span_tokens.fits``):
  the span *determines* the sentence at any rank, and the attack's pursuit searches for it (it can miss); past the
  width the first layer fixes nothing (*search only*: a local search on later layers may still find it);
- **the first round** (``B = 0``, and every round of FFA-LoRA): only ``dL/dB`` is sent, whose row space in R^r is
  spanned by ``A·x_t``; with fewer inputs than ``r`` it leaves part of R^r empty and pins every input (*exact*);
  with ``r`` inputs or more it fills R^r and nothing is pinned (DLG's search: *search only*).

A batch (or a secure aggregate) shares one span: its token union is determined, who said what is not. Watched
rounds add their spans (``k`` grows with their number). Without LoRA on the first layer there is no input span.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..models import PublicModel

EXACT, DETERMINED, TOKENS_ONLY, SEARCH_ONLY = "exact", "determined", "tokens only", "search only"
VERDICTS = (EXACT, DETERMINED, TOKENS_ONLY, SEARCH_ONLY)
"""From most to least: read by construction; fixed by the first layer's span (the pursuit may miss); the batch's
token union; nothing the first layer fixes (a search on later layers, or DLG, may still find it)."""


@dataclass(frozen=True)
class Prediction:
    """The rule's verdict for one setting, the limit that decides it, and the quantities it compared."""

    verdict: str
    reason: str
    inputs: int
    span: int
    width: int

    def __str__(self) -> str:
        return f"{self.verdict}: {self.reason}"


def first_layer_modules(model: PublicModel) -> int:
    """How many adapted projections read the first layer's input (their ``lora_A`` rows share one span)."""
    family = model.family
    return sum(1 for target in family.lora_targets if target in family.layer_inputs)


def predict(model: PublicModel, inputs: int, rank: int, *, first_round: bool = False, batch: int = 1,
            watched: int = 1, first_layer_adapted: bool = True) -> Prediction:
    """The rule's verdict for ``batch`` messages of ``inputs`` first-layer inputs each ([CLS] and [SEP] counted)
    sent at LoRA rank ``rank`` and read over ``watched`` rounds: ``first_round`` for ``B = 0`` (or FFA-LoRA's
    frozen ``A``), ``first_layer_adapted=False`` for LoRA kept off the first layer."""
    for name, value in (("inputs", inputs), ("rank", rank), ("batch", batch), ("watched", watched)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    width, total = model.hidden_size, inputs * batch
    if not first_layer_adapted:
        return Prediction(SEARCH_ONLY, "no LoRA on the first layer: no input span to test (DLG's search)",
                          inputs, 0, width)
    if first_round:
        span = min(total, rank)
        if total < rank:
            verdict = EXACT if batch == 1 else TOKENS_ONLY
            return Prediction(verdict, f"first round: {total} inputs < r = {rank} leave dL/dB's row space short of "
                                       f"R^r", inputs, span, width)
        return Prediction(SEARCH_ONLY, f"first round: {total} inputs ≥ r = {rank} fill R^r (DLG's search)",
                          inputs, span, width)
    rows = first_layer_modules(model) * rank * watched
    span = min(total, rows)
    if batch > 1:
        fits = (batch + 1) * inputs + 1 + span < width
        return Prediction(TOKENS_ONLY if fits else SEARCH_ONLY,
                          f"a batch of {batch}: one span for all, the token union "
                          + ("is fixed, who said what is not" if fits else f"past the width d = {width}"),
                          inputs, span, width)
    if inputs <= rows:
        return Prediction(EXACT, f"the span holds every input ({inputs} inputs ≤ {rows} rows)", inputs, span,
                          width)
    if 2 * inputs + 1 + span < width:
        return Prediction(DETERMINED, f"past the rank, inside the width (2·{inputs} + 1 + {span} < d = {width}): "
                                      "the tokens explain the span", inputs, span, width)
    return Prediction(SEARCH_ONLY, f"past the width (2·{inputs} + 1 + {span} ≥ d = {width}): the first layer "
                                   "fixes nothing, a search on later layers may",
                      inputs, span, width)
