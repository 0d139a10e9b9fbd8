"""The private sentences clients hold: the course's own messages, Rotten Tomatoes, and their encoding."""
from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from . import config
from .checks import visible_text


def _installed_or_clone(packaged: str, clone: str) -> Path:
    """A folder ``pyproject.toml`` maps into the installed wheel (``lora_leak_lib/<packaged>``), or the clone's own
    folder ``clone`` (an editable install or a plain clone)."""
    library = Path(__file__).resolve().parent
    return library / packaged if (library / packaged).is_dir() else library.parent / clone


DATA_DIR = _installed_or_clone("_data", "data")
"""The course's data files: the private sentences and the public text of the word-order prior."""
RESULTS_DIR = _installed_or_clone("_results", "benchmarks/results")
"""The benchmarks' recorded results, which notebooks 05 to 09 plot (``recorded``)."""
COURSE_SENTENCES = DATA_DIR / "course_sentences.tsv"
LABELS = ("negative", "positive")


@dataclass(frozen=True)
class Example:
    """One private sentence and its sentiment label (0 negative, 1 positive)."""

    text: str
    label: int


def course_sentences() -> list[Example]:
    """The ~50 private messages written for this course (health, money, passwords, addresses)."""
    if not COURSE_SENTENCES.exists():
        raise ValueError(
            f"{COURSE_SENTENCES} is missing: reinstall the course (`pip install -e .` in a clone, or the wheel "
            "`lora-leak colab --bundle` writes)."
        )
    with COURSE_SENTENCES.open(newline="") as handle:
        return [Example(row["text"], int(row["label"])) for row in csv.DictReader(handle, delimiter="\t")]


def recorded(name: str) -> dict:
    """The results a benchmark recorded (``benchmarks/results/NAME``), which notebooks plot beside their live runs."""
    path = RESULTS_DIR / name
    if not path.is_file():
        raise ValueError(f"no recorded results {name!r} in {RESULTS_DIR}: run the benchmark that writes it "
                         "(benchmarks/), or reinstall the course.")
    return json.loads(path.read_text(encoding="utf-8"))


RT_POLARITY = ("Pang & Lee's public sentence polarity data: `curl -L https://www.cs.cornell.edu/people/pabo/"
               "movie-review-data/rt-polaritydata.tar.gz | tar xz` makes the folder rt-polaritydata")
"""Where the Rotten Tomatoes sentences of the benchmarks come from, and the command that fetches them."""


def rotten_tomatoes(path: str | Path | None = None, limit: int | None = None, seed: int = 0) -> list[Example]:
    """Rotten Tomatoes sentences (Pang & Lee 2005), shuffled with ``seed``.

    ``path`` is a folder holding ``rt-polarity.pos`` and ``rt-polarity.neg`` (``RT_POLARITY`` says where to get
    them). Without it, the Hugging Face ``rotten_tomatoes`` dataset is loaded (needs internet and ``datasets``).
    """
    if path is None:
        examples = _rotten_tomatoes_from_hub()
    else:
        folder = Path(path)
        files = {label: folder / f"rt-polarity.{name}" for label, name in ((1, "pos"), (0, "neg"))}
        missing = [str(f) for f in files.values() if not f.exists()]
        if missing:
            raise ValueError(f"no Rotten Tomatoes file at {missing[0]}: pass the folder holding rt-polarity.pos/.neg "
                             f"({RT_POLARITY}).")
        examples = [Example(line.strip(), label) for label, file in files.items()
                    for line in read_lines(file) if line.strip()]
    random.Random(seed).shuffle(examples)
    return examples[:limit]


def read_lines(path: Path) -> list[str]:
    """The lines of a text file in UTF-8, or in Windows-1252 where it is not UTF-8 (the original release of
    the polarity files); one clear error naming the file when it can be read in neither."""
    raw = path.read_bytes()
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding).split("\n")
        except UnicodeDecodeError:
            continue
    raise ValueError(f"{path} is neither UTF-8 nor Windows-1252 text: save it as UTF-8.")


def _rotten_tomatoes_from_hub() -> list[Example]:
    try:
        from datasets import load_dataset
    except ImportError as error:
        raise ValueError(f"Rotten Tomatoes needs the folder holding rt-polarity.pos/.neg ({RT_POLARITY}), "
                         "or `pip install datasets` and internet.") from error
    split = load_dataset("rotten_tomatoes", split="train")
    return [Example(row["text"], int(row["label"])) for row in split]


def check_text(text: str, tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Return ``text`` stripped of invisible format characters (zero-width spaces, ...) and surrounding space,
    or raise one clear error if nothing is left or (given a ``tokenizer``) every word piece is unknown."""
    visible = visible_text(text)
    if tokenizer is not None:
        ids = tokenizer.encode(visible, add_special_tokens=False)
        if all(i == tokenizer.unk_token_id for i in ids):
            raise ValueError(f"the tokenizer knows no word of {visible[:40]!r} (every piece is "
                             f"{tokenizer.unk_token}, e.g. emoji): write the sentence in words.")
    return visible


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int = 512) -> dict[str, torch.Tensor]:
    """Tokenise a batch with padding, on ``config.device()``; raise one clear error for an empty text or one
    longer than ``max_length``."""
    texts = [check_text(t) for t in texts]
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    if max(lengths) > max_length:
        raise ValueError(
            f"a text has {max(lengths)} tokens but the model takes at most {max_length}: shorten it."
        )
    return {k: v.to(config.device()) for k, v in tokenizer(texts, padding=True, return_tensors="pt").items()}


def n_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    """WordPiece tokens in ``text``, without [CLS] and [SEP]."""
    return len(tokenizer.tokenize(text))


def joined_to_tokens(tokenizer: PreTrainedTokenizerBase, examples: list[Example], length: int,
                     count: int) -> list[Example]:
    """``count`` messages of exactly ``length`` tokens: examples joined in order until long enough (few reviews run
    past 60 tokens), each message taking the label of its last example, then cut (``truncate_to_tokens``)."""
    joined, text = [], ""
    for example in examples:
        text = f"{text} {example.text}".strip()
        if n_tokens(tokenizer, text) >= length:
            joined.append(Example(text, example.label))
            text = ""
        if len(joined) == count:
            break
    return truncate_to_tokens(tokenizer, joined, length, count)


def truncate_to_tokens(tokenizer: PreTrainedTokenizerBase, examples: list[Example], length: int,
                       count: int) -> list[Example]:
    """The first ``count`` examples with at least ``length`` tokens, cut to exactly ``length`` tokens.

    This is how the published attacks bin sentences by length (tokens counted without [CLS]/[SEP]).
    """
    chosen: list[Example] = []
    for example in examples:
        tokens = tokenizer.tokenize(example.text)
        if len(tokens) >= length:
            chosen.append(Example(tokenizer.convert_tokens_to_string(tokens[:length]), example.label))
        if len(chosen) == count:
            break
    if len(chosen) < count:
        raise ValueError(f"only {len(chosen)} sentences have {length} tokens or more: ask for fewer or shorter.")
    return chosen
