"""Attack an update, score what came back against the private sentences (matching once), and both in one call.

Every attack on a simulated message is reported as ``SentenceResult`` rows, built in one place (``result_rows``);
``SentenceResult.as_json`` turns a row into the keys the recorded results use.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Sequence

from transformers import PreTrainedTokenizerBase

from .. import metrics
from ..checks import DEFAULT_TRAINED_STEPS, MAX_TRAINED_STEPS, check_trained_steps  # noqa: F401 (re-exported)
from ..attacks import Attack, Knowledge, KnownDefence, Reconstruction, SharedUpdate, get_attack
from ..defenses.registry import check_defence

def reference_ids(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
    """The token ids of each private sentence without special tokens: what a perfect attack returns."""
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


def longest(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> int:
    """The longest sentence's length in tokens without special tokens: what a strong attacker is told."""
    return max(len(ids) for ids in reference_ids(texts, tokenizer))


def score(references: Sequence[str], reconstruction: Reconstruction,
          tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """One row per private sentence: ROUGE and token accuracy against its Hungarian-matched reconstruction,
    with ``original``, ``reconstruction`` and ``seconds`` (the attack's time per sentence)."""
    rows = metrics.score_batch(list(references), reconstruction.texts, reference_ids(references, tokenizer),
                               reconstruction.token_ids)
    for row in rows:
        row["seconds"] = reconstruction.seconds / len(references)
    return rows


def known_defence(name: str, value: float | int | None, shared: SharedUpdate) -> KnownDefence:
    """What a server that knows the client's defence (``name`` at ``value``) can say of it, for the message it
    holds: the registry's noise estimate where the defence has one (``DefenceSpec.noise``)."""
    spec = check_defence(name)
    noise = None if spec.noise is None or value is None else spec.noise(value, shared.update, shared.batch_size)
    return KnownDefence(name, value, noise if isinstance(noise, dict) else None if noise is None else float(noise))


@dataclass(frozen=True, kw_only=True)
class SentenceResult(Mapping):
    """One private sentence, what the attack rebuilt (Hungarian-matched), its scores and the set-up it ran under.

    Read it by attribute (``row.token_accuracy``) or by key (``row["token_accuracy"]``, so ``metrics.summarize``
    reads a list of them); ``as_json()`` is the plain dict written to results files.
    """

    original: str
    reconstruction: str
    token_accuracy: float
    precision: float
    recall: float
    exact_match: float
    rouge1: float
    rouge2: float
    rougeL: float
    seconds: float
    """The attack's time per sentence of the message (its wall time over the batch)."""
    tokens: int
    """The private sentence's length in tokens, without special tokens."""
    model: str
    rank: int
    trained_steps: int
    """Training steps of the global adapter before the attacked round (0: the first round, ``B = 0``)."""
    attack: str
    batch_size: int
    sentences: int
    """Private sentences scored against this message (the batch, or every sentence drawn over the watched rounds)."""
    observed_rounds: int = 1
    protocol: str = "fedsgd"
    local_steps: int = 1
    optimizer: str = "sgd"
    server: str = "honest"
    resampled: bool = False
    residual: float | None = None
    """The attack's final objective (``Reconstruction.loss``): 0 up to rounding is a certified reconstruction."""
    attack_seconds: float = 0.0
    span_test_seconds: float | None = None

    def __getitem__(self, key: str):
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def as_json(self) -> dict:
        """The row as the plain dict the results files hold."""
        return asdict(self)


def result_rows(references: Sequence[str], reconstruction: Reconstruction, shared: SharedUpdate,
                knowledge: Knowledge, attack: str, **watch) -> list[SentenceResult]:
    """Score ``reconstruction`` against the private sentences of ``shared`` and describe the set-up: one row each.

    ``watch`` holds what the message does not say (``server``, ``resampled``, ``span_test_seconds``).
    """
    setup, tokenizer = shared.setup, shared.setup.model.tokenizer
    return [SentenceResult(**scores, tokens=len(tokenizer.tokenize(scores["original"])), model=setup.model.name,
                           rank=setup.rank, trained_steps=shared.round, attack=attack, batch_size=shared.batch_size,
                           sentences=len(references), observed_rounds=1 + len(knowledge.other_rounds),
                           protocol=setup.protocol, local_steps=setup.local_steps, optimizer=setup.optimizer,
                           residual=reconstruction.loss, attack_seconds=reconstruction.seconds, **watch)
            for scores in score(references, reconstruction, tokenizer)]


def attack_update(shared: SharedUpdate, references: Sequence[str], attack: str | Attack = "lora-best",
                  knowledge: Knowledge | None = None, **knobs) -> list[SentenceResult]:
    """Attack an update one already holds and score it against the sentences it was computed on.

    ``attack`` is a registry name (with ``knobs``) or any object with ``reconstruct(shared, knowledge)``:
    bring your own. ``knowledge=None`` tells the attacker the longest sentence's length, the strong
    attacker of LAMP and DAGER; pass ``Knowledge()`` for an attacker who knows nothing more.
    """
    if not references:
        raise ValueError("give the private sentences the update was computed on, to score the attack against.")
    method = get_attack(attack, **knobs) if isinstance(attack, str) else attack
    if knowledge is None:
        knowledge = Knowledge(length=longest(references, shared.setup.model.tokenizer))
    name = attack if isinstance(attack, str) else getattr(attack, "name", type(attack).__name__)
    return result_rows(references, method.reconstruct(shared, knowledge), shared, knowledge, name)
