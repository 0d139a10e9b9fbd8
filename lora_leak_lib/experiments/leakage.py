"""The LoRA leakage table: settings (model, length, batch, rank, round) and one scored run per setting."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from .. import data, metrics, models
from ..attacks import check_attack_name
from .core import DEFAULT_ROUNDS
from .multi_round import attack_texts


@dataclass(frozen=True)
class Setting:
    """One row of the leakage table: which model, sentence length, batch, rank, round, attack and parts shared."""

    model: str
    tokens: int
    batch_size: int = 1
    rank: int = 8
    rounds: int = DEFAULT_ROUNDS
    attack: str = "lora-best"
    train_head: bool = True

    def label(self) -> str:
        head = "" if self.train_head else ", head frozen"
        return (f"{self.model}, {self.tokens} tokens, batch {self.batch_size}, r={self.rank}, "
                f"{'round 0' if self.rounds == 0 else f'{self.rounds} steps trained'}{head}")


BENCHMARK = (
    Setting("tiny-bert", 16), Setting("minilm", 16), Setting("minilm", 32), Setting("minilm", 64),
    Setting("minilm", 16, batch_size=4), Setting("tiny-bert", 16, rounds=0),
    Setting("mpnet-base", 16), Setting("mpnet-base", 32), Setting("mpnet-base", 64), Setting("tiny-gpt2", 16),
)
"""The settings of the leakage table's targets (LoRA r=8 on each family's query and value projections; GPT-2's
fused c_attn): the first six are the CPU table's, then BERT-base scale (MPNet) and a decoder."""


def dlg_step_knobs(attack: str, dlg_steps: int) -> dict[str, int]:
    """The knob that sets an attack's DLG step budget, whatever the attack calls it (none for the span test)."""
    names = check_attack_name(attack).knob_names()
    return {k: dlg_steps for k in ("dlg_steps", "steps") if k in names}


def run_setting(setting: Setting, examples: Sequence[data.Example], count: int, seed: int = 0,
                dlg_steps: int = 200) -> dict:
    """Attack ``count`` sentences cut to ``setting.tokens`` tokens (in batches) and average the scores."""
    tokenizer = models.load_tokenizer(setting.model)
    chosen = data.truncate_to_tokens(tokenizer, list(examples), setting.tokens, count)
    rows: list[dict] = []
    for i in range(0, count - setting.batch_size + 1, setting.batch_size):
        batch = chosen[i:i + setting.batch_size]
        rows += attack_texts([e.text for e in batch], [e.label for e in batch], setting.model, setting.rank,
                             setting.rounds, setting.attack, seed, setting.train_head,
                             **dlg_step_knobs(setting.attack, dlg_steps))
    summary = metrics.summarize(rows)
    keys = ("token_accuracy", "rouge1", "rouge2", "rougeL", "exact_match", "seconds")
    return {**asdict(setting), "sentences": len(rows),
            **{k: summary[k]["mean"] for k in keys if k in summary}, "rows": rows}
