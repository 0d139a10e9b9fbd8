"""docs/RESULTS.md is what ``benchmarks/report.py`` writes from benchmarks/results/*.json: no number copied by hand."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = _load_script(REPO / "benchmarks" / "report.py")


def test_results_doc_is_current():
    problem = report.check(REPO / "benchmarks" / "results", REPO / "docs" / "RESULTS.md")
    assert problem is None, problem


def test_every_results_file_has_a_table():
    text = (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        assert report.kind_of(path.name) is not None, f"{path.name}: no section of benchmarks/report.py reads it"
        assert f"`benchmarks/results/{path.name}`" in text


def test_check_names_a_stale_copy_and_passes_once_rewritten(tmp_path, capsys):
    results, out = tmp_path / "results", tmp_path / "RESULTS.md"
    shutil.copytree(REPO / "benchmarks" / "results", results)
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (REPO / "docs" / "RESULTS.md").read_text(encoding="utf-8")
    assert report.main(["--check", "--results", str(results), "--out", str(out)]) == 0

    data = json.loads((results / "lora_leakage.json").read_text(encoding="utf-8"))
    data["rows"][0]["token_accuracy"] = 0.5  # a new run of one setting
    (results / "lora_leakage.json").write_text(json.dumps(data), encoding="utf-8")
    capsys.readouterr()
    assert report.main(["--check", "--results", str(results), "--out", str(out)]) == 1
    assert str(out) in capsys.readouterr().err  # names the stale file

    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    assert "| 50.0% |" in out.read_text(encoding="utf-8")
    assert report.main(["--check", "--results", str(results), "--out", str(out)]) == 0


def test_check_fails_on_a_hand_edit_and_on_a_missing_file(tmp_path):
    out = tmp_path / "RESULTS.md"
    results = REPO / "benchmarks" / "results"
    assert report.check(results, out) is not None  # missing
    out.write_text(report.render(results).replace("100.0%", "99.9%", 1), encoding="utf-8")
    assert report.check(results, out) is not None


def test_every_recorded_evaluation_is_the_current_codes():
    """A recorded ``lora-leak evaluate`` run that this file, the notebooks or the README read was made by the
    attack, defence and simulation code as it is now (its fingerprint); a change to any of them fails here until
    the run is recorded again (the error names the file and the command)."""
    from lora_leak_lib.experiments.fingerprint import check_fingerprint

    records = sorted((REPO / "benchmarks" / "results").glob("evaluate*.json"))
    assert records, "benchmarks/results holds no lora-leak evaluate record: run `lora-leak evaluate --suite quick`"
    for path in records:
        check_fingerprint(path)
