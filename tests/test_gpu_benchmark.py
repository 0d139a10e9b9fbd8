"""``benchmarks/gpu.py``: the commands it runs on a GPU machine, its errors, and the record each step writes.

No tensor is made here: the script is checked through ``--dry-run``, its argument parser and trivial commands.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _load_gpu():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu = _load_gpu()


def dry_run(capsys, *options: str) -> list[str]:
    """The commands ``--dry-run`` prints, after checking its last line says where the record goes."""
    assert gpu.main(["--dry-run", *options]) == 0
    out, err = capsys.readouterr()
    *commands, last = out.splitlines()
    assert err == "" and last.startswith("# the record goes to benchmarks/results/gpu.json; notebooks run")
    return commands


def test_dry_run_lists_the_unit_suite_every_notebook_in_full_mode_and_both_tables(capsys):
    lines = dry_run(capsys)
    unit, notebook_lines, article, leakage = lines[0], lines[1:1 + len(NOTEBOOKS)], lines[-3], lines[-2:]
    assert len(lines) == 1 + len(NOTEBOOKS) + 1 + 2
    assert unit.startswith("LORA_LEAK_DEVICE=cuda ") and " -m pytest tests -q -o addopts= " in unit
    assert unit.endswith("--ignore=tests/test_flower.py")  # left out by default
    for line, notebook in zip(notebook_lines, NOTEBOOKS):
        assert line.startswith("LORA_LEAK_MODE=full LORA_LEAK_DEVICE=cuda ")
        assert line.endswith(f"-m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider "
                             f"notebooks/{notebook.name}")
    assert "benchmarks/article_replication.py" in article and article.endswith("article_replication_gpu.json")
    assert all("benchmarks/lora_leakage.py" in line and line.endswith("_gpu.json") for line in leakage)
    rows = {int(r) for line in leakage for r in line.split("--settings ")[1].split()[0].split(",")}
    assert rows == set(range(6))  # the README's leakage table, every row once
    assert all(line.startswith("LORA_LEAK_MODE=full LORA_LEAK_DEVICE=cuda ") for line in [article, *leakage])


def test_unit_suite_uses_xdist_when_it_is_there_and_keeps_flower_on_request(monkeypatch):
    parse = gpu.build_parser().parse_args
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: object() if name == "xdist" else None)
    unit = gpu.plan(parse(["--steps", "unit", "--workers", "6"]))[0]
    assert unit.command[-3:] == ["-n", "6", "--ignore=tests/test_flower.py"]
    assert unit.left_out == ("tests/test_flower.py",) and unit.env == {"LORA_LEAK_DEVICE": "cuda"}
    assert "-n" not in gpu.plan(parse(["--steps", "unit", "--workers", "0"]))[0].command
    kept = gpu.plan(parse(["--steps", "unit", "--no-ignore-flower"]))[0]
    assert kept.left_out == () and not any(part.startswith("--ignore") for part in kept.command)
    monkeypatch.setattr(gpu.importlib.util, "find_spec", lambda name: None)
    assert "-n" not in gpu.plan(parse(["--steps", "unit"]))[0].command


def test_notebooks_are_chosen_by_number_in_course_order(capsys):
    lines = dry_run(capsys, "--steps", "notebooks", "--notebooks", "05,00")
    assert [line.rsplit("/", 1)[1][:2] for line in lines] == ["00", "05"]


@pytest.mark.parametrize("options, message", [
    (["--notebooks", "42"], "argument --notebooks: no notebook numbered 42: choose from 00, "),
    (["--steps", "unit,bench"], "argument --steps: no step bench: choose from unit, notebooks, article, leakage"),
    (["--parallel", "0"], "argument --parallel: '0' is not a whole number of at least 1"),
])
def test_a_bad_option_is_one_line_and_status_2(capsys, options, message):
    with pytest.raises(SystemExit) as exit_:
        gpu.main([*options, "--dry-run"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1


def test_without_cuda_it_says_so_in_one_line_and_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(gpu.torch.cuda, "is_available", lambda: False)
    assert gpu.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "no CUDA GPU" in err


def test_a_step_records_its_command_time_status_and_budget():
    trivial = gpu.Step("trivial", [sys.executable, "-c", "pass"], {"LORA_LEAK_DEVICE": "cuda"}, notebook=True)
    entry = gpu.run_step(trivial, timeout=60, budget=300)
    assert set(entry) == {"step", "command", "seconds", "status", "within_budget", "left_out", "output_tail"}
    assert entry["step"] == "trivial" and entry["status"] == "passed" and entry["within_budget"] is True
    assert entry["command"].startswith("LORA_LEAK_DEVICE=cuda ") and entry["command"].endswith("-c pass")
    assert isinstance(entry["seconds"], float) and entry["seconds"] >= 0 and entry["left_out"] == []
    failing = gpu.Step("failing", [sys.executable, "-c", "print('why'); raise SystemExit(3)"], {}, notebook=True)
    entry = gpu.run_step(failing, timeout=60, budget=300)
    assert entry["status"] == "failed (3)" and entry["within_budget"] is False and "why" in entry["output_tail"]
    slow = gpu.Step("slow", [sys.executable, "-c", "import time; time.sleep(1.5)"], {}, notebook=True)
    over = gpu.run_step(slow, timeout=60, budget=1)
    assert over["status"] == "passed" and over["within_budget"] is False  # it sleeps past its budget on any machine
    table = gpu.run_step(gpu.Step("table", [sys.executable, "-c", "pass"], {}), timeout=60, budget=300)
    assert table["within_budget"] is None  # the budget is a notebook's
    hung = gpu.run_step(gpu.Step("hung", [sys.executable, "-c", "import time; time.sleep(60)"], {}), 1, 300)
    assert hung["status"] == "timed out after 1 s" and hung["seconds"] >= 1


def test_the_record_is_written_after_every_step(tmp_path, capsys):
    env_check = "import os, sys; sys.exit(os.environ['LORA_LEAK_MODE'] != 'full')"
    steps = [gpu.Step("unit", [sys.executable, "-c", "pass"], {}),
             *[gpu.Step(f"notebook {i}", [sys.executable, "-c", env_check], {"LORA_LEAK_MODE": "full"},
                        notebook=True) for i in range(3)],
             gpu.Step("article", [sys.executable, "-c", "raise SystemExit(1)"], {})]
    out = tmp_path / "gpu.json"
    record = {"card": "test", "steps": []}
    gpu.run_all(steps, Namespace(parallel=2, timeout=60, budget=300), record, out)
    written = json.loads(out.read_text())
    assert written == record and written["card"] == "test"
    assert [s["step"] for s in written["steps"]][0] == "unit" and written["steps"][-1]["step"] == "article"
    assert sorted(s["step"] for s in written["steps"][1:4]) == ["notebook 0", "notebook 1", "notebook 2"]
    assert [s["status"] for s in written["steps"]] == ["passed"] * 4 + ["failed (1)"]
    assert len(capsys.readouterr().out.splitlines()) == len(steps)  # one line as each step ends


def test_ctrl_c_kills_the_steps_still_running(tmp_path):
    interrupts = "import os, signal, time; os.kill(os.getppid(), signal.SIGINT); time.sleep(600)"
    steps = [gpu.Step("interrupts", [sys.executable, "-c", interrupts], {}, notebook=True),
             *[gpu.Step(f"hangs {i}", [sys.executable, "-c", "import time; time.sleep(600)"], {}, notebook=True)
               for i in range(3)]]
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        gpu.run_all(steps, Namespace(parallel=2, timeout=1200, budget=300), {"steps": []}, tmp_path / "gpu.json")
    # the running ones killed (left alone they sleep 600 s), the queued never started
    assert time.perf_counter() - start < 300 and not gpu.RUNNING
