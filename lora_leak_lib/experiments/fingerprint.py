"""A fingerprint of the code behind a recorded evaluation: the attacks, the defences and the simulation they run on.

``fingerprint()`` hashes (sha256) the source of every file in ``FINGERPRINTED``, read from the installed package,
one hash per file and one over them all; ``lora-leak evaluate`` records it in its JSON. ``check_fingerprint`` compares
a recorded fingerprint with the code as it is now and raises one clear error naming the first file that changed
and the command that regenerates the record. Nothing here imports torch.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

PACKAGE = Path(__file__).resolve().parents[1]
"""The installed ``lora_leak_lib`` folder: the files hashed are the ones the library runs."""

FINGERPRINTED = ("attacks/*.py", "defenses/*.py", "fl.py", "lora.py", "message.py", "training.py",
                 "experiments/core.py", "experiments/multi_round.py", "experiments/sweep.py", "experiments/evaluate.py")
"""What an evaluation's numbers depend on, as patterns relative to the package: every attack, every defence, the
simulation of the messages they act on (LoRA itself, FFA-LoRA's frozen ``A`` included) and the utility run."""


def fingerprinted_files(root: Path = PACKAGE, patterns: tuple[str, ...] = FINGERPRINTED) -> list[Path]:
    """The files the fingerprint covers under ``root``, sorted by their path relative to it."""
    found = {path for pattern in patterns for path in root.glob(pattern) if path.is_file()}
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(root: Path = PACKAGE, patterns: tuple[str, ...] = FINGERPRINTED) -> dict:
    """``{"sha256": hash over every file, "files": {"lora_leak_lib/<path>": sha256 of its bytes}}``."""
    files = {f"{root.name}/{path.relative_to(root).as_posix()}": _digest(path.read_bytes())
             for path in fingerprinted_files(root, patterns)}
    return {"sha256": _digest(json.dumps(files, sort_keys=True).encode()), "files": files}


def stale_files(recorded: Mapping, current: Mapping) -> list[str]:
    """The files whose hash differs between two fingerprints (changed, added or removed), sorted."""
    old, new = dict(recorded.get("files", {})), dict(current.get("files", {}))
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


def check_fingerprint(record: Mapping | str | Path, root: Path = PACKAGE,
                      patterns: tuple[str, ...] = FINGERPRINTED) -> None:
    """Raise one ``ValueError`` when a recorded evaluation (its JSON dict or file) was made by other attack, defence
    or simulation code than the package's now: it names the first stale file and the command that regenerates it."""
    where = ""
    if isinstance(record, (str, Path)):
        where = f"{record} "
        try:
            record = json.loads(Path(record).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read the recorded evaluation {record}: {error}.") from error
    recorded = record.get("fingerprint")
    command = record.get("command") or "lora-leak evaluate --suite full"
    if not isinstance(recorded, Mapping) or "files" not in recorded:
        raise ValueError(f"the recorded evaluation {where}has no fingerprint: regenerate it with `{command}`.")
    stale = stale_files(recorded, fingerprint(root, patterns))
    if stale:
        more = f" (and {len(stale) - 1} more)" if len(stale) > 1 else ""
        raise ValueError(f"the recorded evaluation {where}is stale: {stale[0]}{more} changed since it was recorded; "
                         f"regenerate it with `{command}`.")
