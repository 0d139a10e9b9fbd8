"""environment.yml and pyproject.toml describe the same environment, the console script exists, and the wheel
(`lora-leak colab --bundle`) carries the library and its data into a fresh virtual environment."""
import re
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from lora_leak_lib import cli

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}
NOT_PACKAGES = {"python", "pip"}


def _name(requirement: str) -> str:
    """``"rouge-score>=0.1.2"`` -> ``"rouge-score"``, normalised like pip (lower case, ``_`` and ``.`` as ``-``)."""
    name = re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0]
    name = re.sub(r"[-_.]+", "-", name.lower())
    return CONDA_NAMES.get(name, name)


def conda_requirements(text: str) -> list[str]:
    """The entries under ``dependencies:`` (conda and the nested ``pip:`` list), read line by line."""
    entries, inside = [], False
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if not line.startswith((" ", "-")):
            inside = stripped == "dependencies:"
            continue
        item = re.match(r"\s*-\s+(.+)$", stripped)
        if inside and item and not item.group(1).endswith(":"):
            entries.append(item.group(1).strip().strip("'\""))
    return entries


def test_line_parser_reads_nested_pip_lists():
    text = "name: x\nchannels:\n  - conda-forge\ndependencies:\n  - python=3.11\n  - pytorch>=2.4  # cpu\n" \
           "  - pip\n  - pip:\n      - peft>=0.20\n"
    assert conda_requirements(text) == ["python=3.11", "pytorch>=2.4", "pip", "peft>=0.20"]


def test_line_parser_agrees_with_pyyaml_when_installed():
    yaml = pytest.importorskip("yaml")
    spec = yaml.safe_load((ROOT / "environment.yml").read_text())
    flat = []
    for entry in spec["dependencies"]:
        flat.extend(entry["pip"] if isinstance(entry, dict) else [entry])
    assert conda_requirements((ROOT / "environment.yml").read_text()) == flat


def test_environment_yml_and_pyproject_name_the_same_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = list(project["dependencies"])
    for name, extra in project.get("optional-dependencies", {}).items():
        if name != "base":  # installed with --no-deps after the environment (see its first line and the README)
            pip_side.extend(extra)
    conda_side = conda_requirements((ROOT / "environment.yml").read_text())
    pip_names = {_name(r) for r in pip_side}
    conda_names = {_name(r) for r in conda_side} - NOT_PACKAGES
    assert "torch" in pip_names and "peft" in pip_names and "nbval" in pip_names
    assert conda_names - pip_names == set(), "in environment.yml only"
    assert pip_names - conda_names == set(), "in pyproject.toml only"


def test_console_script_and_notebook_tests_are_configured():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["project"]["scripts"]["lora-leak"] == "lora_leak_lib.cli:main"
    assert "--nbval-lax" in config["tool"]["pytest"]["ini_options"]["addopts"]
    assert "notebooks" in config["tool"]["pytest"]["ini_options"]["testpaths"]


def test_pyproject_names_every_package_of_the_library_and_maps_data_into_it():
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lora_leak_lib").rglob("__init__.py")}
    assert set(tool["packages"]) == folders | {"lora_leak_lib._data", "lora_leak_lib._results"}
    assert tool["package-dir"] == {"lora_leak_lib._data": "data", "lora_leak_lib._results": "benchmarks/results"}
    assert {p.name for p in (ROOT / "data").iterdir()} >= {"course_sentences.tsv", "public_text.txt"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The wheel `lora-leak colab --bundle` writes."""
    out = tmp_path_factory.mktemp("dist")
    assert cli.main(["colab", "--bundle", "--out", str(out)]) == 0
    (wheel,) = out.glob("lora_leak-*.whl")
    return wheel


@pytest.mark.slow  # builds a wheel or a virtual environment
def test_the_bundle_holds_every_module_and_the_course_data(bundle):
    names = set(zipfile.ZipFile(bundle).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "lora_leak_lib").rglob("*.py")}
    assert modules <= names
    assert {f"lora_leak_lib/_data/{p.name}" for p in (ROOT / "data").iterdir()} <= names
    assert {f"lora_leak_lib/_results/{p.name}" for p in (ROOT / "benchmarks/results").glob("*.json")} <= names


def environment_venv(path: Path) -> Path:
    """A fresh virtual environment at ``path`` that sees the packages of the environment these tests run in.

    ``python -m venv --system-site-packages`` would show the *base* interpreter's packages, which inside a virtual
    environment (as users on Debian and Ubuntu must work) lack torch or the MiniLM weights. Instead the new
    environment gets a ``.pth`` file naming this environment's site folders, after its own: a package installed into
    it (the wheel) comes first, and everything else is what the tests already run with. Nothing is downloaded.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    here = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")} | set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        here.add(site.getusersitepackages())
    python = path / "bin" / "python"
    theirs = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True).stdout.strip()
    Path(theirs, "outer_environment.pth").write_text("".join(f"{p}\n" for p in sorted(here) if Path(p).is_dir()))
    return python


@pytest.mark.slow  # builds a wheel or a virtual environment
def test_a_nested_environment_sees_this_one(tmp_path):
    """The venv the bundle test builds imports torch and the MiniLM weights' package from the environment the tests
    run in (a venv inside a venv included), and its own site folder comes first."""
    python = environment_venv(tmp_path / "venv")
    code = ("import sys, torch, sysconfig, importlib.metadata as m; print(torch.__file__); "
            "print(sysconfig.get_paths()['purelib']); print(sys.prefix)")
    torch_file, purelib, prefix = subprocess.run([python, "-c", code], capture_output=True, text=True,
                                                 check=True).stdout.split()
    import torch

    assert Path(torch_file) == Path(torch.__file__)
    assert Path(prefix) == tmp_path / "venv" and Path(purelib).is_relative_to(tmp_path / "venv")


@pytest.mark.slow  # builds a wheel or a virtual environment
def test_the_bundle_installs_in_a_fresh_venv_and_the_demo_runs_there(bundle, tmp_path):
    """No clone: the venv sees this environment's torch and transformers (``--no-index``: nothing is downloaded,
    so a missing dependency fails here instead of pulling a CUDA build), but lora_leak_lib comes from the wheel,
    run from a folder outside the repository."""
    venv = tmp_path / "venv"
    python, elsewhere = environment_venv(venv), tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", str(bundle)], check=True, cwd=elsewhere)
    read = "import lora_leak_lib.data as d; print(d.DATA_DIR, len(d.course_sentences()))"
    found = subprocess.run([python, "-c", read], cwd=elsewhere, capture_output=True, text=True, check=True).stdout.split()
    assert Path(found[0]).is_relative_to(venv) and Path(found[0]).name == "_data" and int(found[1]) >= 45
    demo = subprocess.run([venv / "bin" / "lora-leak", "demo"], cwd=elsewhere, capture_output=True, text=True)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "server rebuilds" in demo.stdout
