"""scripts/gpu_check.py at toy sizes on the CPU: every part it runs on a GPU machine must work before device time
is spent on it (the device is lent rarely, for minutes)."""

import json
import subprocess
import sys

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out


def test_7b_shape_part_runs_and_reports(tiny_llama, synthetic_dir, tmp_path):
    out = tmp_path / "gpu_check"
    cmd = [sys.executable, "scripts/gpu_check.py", "--smoke", "--device", "cpu", "--parts", "7b", "--llama",
           str(tiny_llama), "--data", str(synthetic_dir), "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1",
                                                                          "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    a = report["7b_shape"]
    train = [r for r in a["train"] if r["path"] == "ours"]
    assert {(r["batch"], r["checkpointing"]) for r in train} == {(1, False), (2, False), (1, True), (2, True)}
    assert [r["path"] for r in a["train"]].count("reference") == 1
    for r in a["train"] + a["score"]:
        assert r["samples_per_s"] > 0 and r["peak_memory_gib"] > 0
    assert all(r["estimate_gib"] > 0 for r in a["train"])
    md = (out / "report.md").read_text()
    assert "## a. 7B shape" in md and md.count("| train | ours |") == 4
