"""The LoRA leakage table: settings (model, length, batch, rank, round) and one scored run per setting."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from .. import data, metrics, models
from ..attacks import check_attack_name
from .core import DEFAULT_TRAINED_STEPS, SentenceResult
from .multi_round import attack_texts


@dataclass(frozen=True)
class Setting:
    """One row of the leakage table: which model, sentence length, batch, rank, round, attack and parts shared."""

    model: models.PublicModel
    tokens: int
    batch_size: int = 1
    rank: int = 8
    trained_steps: int = DEFAULT_TRAINED_STEPS
    attack: str = "lora-best"
    train_head: bool = True

    def label(self) -> str:
        head = "" if self.train_head else ", head frozen"
        return (f"{self.model.name}, {self.tokens} tokens, batch {self.batch_size}, r={self.rank}, "
                f"{'round 0' if self.trained_steps == 0 else f'{self.trained_steps} steps trained'}{head}")


BENCHMARK = (
    *(Setting(models.resolve(name), tokens, **changes) for name, tokens, changes in (
        ("tiny-bert", 16, {}), ("minilm", 16, {}), ("minilm", 32, {}), ("minilm", 64, {}),
        ("minilm", 16, dict(batch_size=4)), ("tiny-bert", 16, dict(trained_steps=0)), ("mpnet-base", 16, {}),
        ("mpnet-base", 32, {}), ("mpnet-base", 64, {}), ("tiny-gpt2", 16, {}))),
)
"""The settings of the leakage table's targets (LoRA r=8 on each family's query and value projections; GPT-2's
fused c_attn): the first six are the CPU table's, then BERT-base scale (MPNet) and a decoder."""


def dlg_step_knobs(attack: str, dlg_steps: int) -> dict[str, int]:
    """The DLG step budget as the attack's ``steps`` knob (none for an attack without DLG, the span test)."""
    return {"steps": dlg_steps} if "steps" in check_attack_name(attack).knob_names() else {}


def run_leakage_setting(setting: Setting, examples: Sequence[data.Example], count: int, seed: int = 0,
                dlg_steps: int = 200) -> dict:
    """Attack ``count`` sentences cut to ``setting.tokens`` tokens (in batches) and average the scores."""
    tokenizer = setting.model.tokenizer
    chosen = data.truncate_to_tokens(tokenizer, list(examples), setting.tokens, count)
    rows: list[SentenceResult] = []
    for i in range(0, count - setting.batch_size + 1, setting.batch_size):
        batch = chosen[i:i + setting.batch_size]
        rows += attack_texts([e.text for e in batch], [e.label for e in batch], setting.model, rank=setting.rank,
                             trained_steps=setting.trained_steps, attack=setting.attack, seed=seed,
                             train_head=setting.train_head, **dlg_step_knobs(setting.attack, dlg_steps))
    summary = metrics.summarize(rows)
    keys = ("token_accuracy", "rouge1", "rouge2", "rougeL", "exact_match", "seconds")
    return {**asdict(setting), "model": setting.model.name, "sentences": len(rows),
            **{k: summary[k]["mean"] for k in keys if k in summary}, "rows": [row.as_json() for row in rows]}
