"""``bench/gpu_suite.py``'s machinery, without its stages: each stage a child process under
its own time limit (killed at it: ``timeout``, what it printed kept), an exception an
``error`` with its message, the JSON rewritten after each stage and merged by a rerun. The
children here are one-line Python scripts, so the whole file runs in a few seconds."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHILDREN = {  # stage -> the child's code
    "fast": "print('RESULT fast_rate 12.5'); print('RESULT fast_label 3.1 ms/step aten::mm')",
    "slow": "import time; print('RESULT slow_first 1', flush=True); time.sleep(60)",
    "bad": "print('RESULT bad_first 2'); raise ValueError('no such device')",
    "crash": "import os; os._exit(3)",
}


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "bench" / "gpu_suite.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(suite, names, out: Path, limits=None):
    limits = {name: 20 for name in CHILDREN} | (limits or {})
    return suite.run_suite(names, out, lambda name: [sys.executable, "-c", CHILDREN[name]],
                           limits, {"device": "cpu", "torch": "none"})


def test_statuses_results_and_the_json(suite, tmp_path, capsys):
    out = tmp_path / "deep" / "suite.json"
    _run(suite, ["fast", "slow", "bad", "crash"], out, limits={"slow": 1.5})
    doc = json.loads(out.read_text())
    stages = doc["stages"]
    assert doc["device"] == "cpu" and doc["date"]
    assert stages["fast"]["status"] == "ok"
    assert stages["fast"]["results"] == {"fast_rate": 12.5, "fast_label": "3.1 ms/step aten::mm"}
    assert stages["slow"]["status"] == "timeout"
    assert stages["slow"]["results"] == {"slow_first": 1.0}  # printed before the kill: kept
    assert 1.5 <= stages["slow"]["seconds"] < 15 and stages["slow"]["limit_s"] == 1.5
    assert stages["bad"]["status"] == "error" and "no such device" in stages["bad"]["error"]
    assert stages["bad"]["results"] == {"bad_first": 2.0}
    assert stages["crash"]["status"] == "error"
    printed = capsys.readouterr().out
    for line in ("RESULT fast_rate 12.5", "RESULT fast_status ok", "RESULT slow_status timeout",
                 "RESULT bad_status error", "RESULT crash_status error"):
        assert line in printed


def test_a_rerun_of_one_stage_merges(suite, tmp_path):
    out = tmp_path / "suite.json"
    _run(suite, ["fast", "bad"], out)
    first = json.loads(out.read_text())
    _run(suite, ["fast"], out)
    again = json.loads(out.read_text())
    assert again["stages"]["bad"] == first["stages"]["bad"]  # not rerun: kept as it was
    assert again["stages"]["fast"]["status"] == "ok"


def test_parse_result(suite):
    assert suite.parse_result("RESULT fair_w10000_ratio 2.51\n") == ("fair_w10000_ratio", 2.51)
    assert suite.parse_result("RESULT profile_op_1 3.0 ms/step aten::mm") == \
        ("profile_op_1", "3.0 ms/step aten::mm")
    assert suite.parse_result("  topk  sae_steer 644000 tok/s") is None
    assert suite.parse_result("RESULT lonely") is None


def test_the_command_line_records_a_timeout(tmp_path):
    """The real CLI: a stage whose limit is shorter than its imports times out, and the
    JSON still names the device and torch version; the command's exit status says so."""
    import subprocess

    out = tmp_path / "suite.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--quick",
                          "--stage", "tf32", "--limit", "tf32=0.2", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 1, run.stderr[-2000:]  # a stage not ok: the command fails
    assert "RESULT tf32_status timeout" in run.stdout
    doc = json.loads(out.read_text())
    assert doc["stages"]["tf32"]["status"] == "timeout" and doc["quick"] is True
    assert doc["device"] == "cpu" and doc["torch"]


def test_a_bad_limit_is_refused(suite):
    with pytest.raises(SystemExit):
        suite.parse_args(["--limit", "nosuchstage=10"])
