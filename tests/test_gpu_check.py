"""scripts/gpu_check.py at toy sizes on the CPU: every part it runs on a GPU machine must work before device time
is spent on it (the device is lent rarely, for minutes)."""

import argparse
import json
import subprocess
import sys

import pytest
import torch

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
    assert all(0 < r["estimate_seq_len"] < 2 * a["mean_prompt_tokens"] for r in a["train"])  # its widest batch
    md = (out / "report.md").read_text()
    assert "## a. 7B shape" in md and md.count("| train | ours |") == 4


def _gpu_check():
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check

    return gpu_check


def test_a_failing_part_is_recorded_and_fails_the_check(tiny_llama, tmp_path):
    gpu_check = _gpu_check()
    out = tmp_path / "check"
    rc = gpu_check.main(["--smoke", "--device", "cpu", "--parts", "7b", "--llama", str(tiny_llama), "--data",
                         str(tmp_path / "no_such_split"), "--out", str(out), "--mirror", str(tmp_path / "mirror")])
    assert rc == 1
    report = json.loads((out / "report.json").read_text())
    assert "no_such_split" in report["7b_shape"]["error"]
    assert gpu_check.failures(report) == ["7b_shape"]
    md = (tmp_path / "mirror" / "report.md").read_text()  # the mirror ($OUT on the device) holds the same files
    assert md == (out / "report.md").read_text() and "## 7b_shape: failed" in md


def test_merge_keeps_the_parts_of_an_earlier_call(tiny_llama, synthetic_dir, tmp_path):
    """A check split over two calls on one machine: the second call's report keeps the first call's parts."""
    gpu_check = _gpu_check()
    out = tmp_path / "check"
    out.mkdir()
    earlier = json.loads((ROOT / "results/gpu/nvidia-h200/report.json").read_text())
    (out / "report.json").write_text(json.dumps(earlier))
    rc = gpu_check.main(["--smoke", "--device", "cpu", "--parts", "7b", "--llama", str(tiny_llama), "--data",
                         str(synthetic_dir), "--out", str(out), "--merge"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["bf16_stability"] == earlier["bf16_stability"]
    assert report["small_model"] == earlier["small_model"]
    assert report["7b_shape"]["sizes"] == gpu_check.TOY  # this call's part replaced the earlier one
    assert report["commands"][:-1] == earlier["commands"] and "--merge" in report["commands"][-1]
    md = (out / "report.md").read_text()
    assert "## a. 7B shape" in md and "## b. bf16 stability" in md and "## c. SmolLM2 throughput" in md


def test_parts_that_need_smollm2_weights_are_refused_without_them(tmp_path, capsys):
    gpu_check = _gpu_check()
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--parts", "7b,bf16", "--llama", str(tmp_path), "--out", str(tmp_path)])
    assert "carry gpu_pack/2" in capsys.readouterr().err


def test_training_batch_sweep_measures_each_batch(tiny_llama, synthetic_dir):
    gpu_check = _gpu_check()
    args = argparse.Namespace(smoke=True, data=str(synthetic_dir))
    sweep = gpu_check.train_batch_sweep(args, torch.device("cpu"), str(tiny_llama))
    assert [r["batch"] for r in sweep] == [2, 4]
    assert all(r["samples_per_s"] > 0 and r["step_s"] > 0 for r in sweep)
    md = "\n".join(gpu_check.md_small({"returncode": 0, "command": "", "train_batches": sweep}, 1e12))
    assert "| batch | samples/s | s per step | peak GiB |" in md and md.count("\n| 2 |") == 1


def test_a_part_writes_what_it_has_measured_before_it_ends(tiny_llama, synthetic_dir, tmp_path, monkeypatch):
    """A device call can stop at its time limit inside a part: part b writes its padding probe before its training
    runs, and a part that then fails keeps the probe next to its error."""
    gpu_check = _gpu_check()
    out = tmp_path / "check"
    seen = []

    def stage0(cmd, timeout):  # the first subprocess of part b: look at the report, then fail
        seen.append(json.loads((out / "report.json").read_text())["bf16_stability"])
        seen.append((out / "report.md").read_text())
        raise RuntimeError("stage 0 stopped")

    monkeypatch.setattr(gpu_check, "call", stage0)
    rc = gpu_check.main(["--smoke", "--device", "cpu", "--parts", "bf16", "--llama", str(tiny_llama), "--data",
                         str(synthetic_dir), "--out", str(out)])
    assert rc == 1 and len(seen) == 2
    assert seen[0]["unfinished"] is True and set(seen[0]["padding_probe"]) == {"64", "192", "200"}
    assert "stage 0 exit not run" in seen[1] and "| 64 |" in seen[1] and "(unfinished: the call stopped" in seen[1]
    b = json.loads((out / "report.json").read_text())["bf16_stability"]
    assert "stage 0 stopped" in b["error"] and b["padding_probe"] == seen[0]["padding_probe"]
    assert "unfinished" not in b


def test_part_c_writes_its_batch_sweep_before_benchmark_runs(tiny_llama, synthetic_dir, tmp_path, monkeypatch):
    """The sweep answers the training target in about a minute; benchmark.py's compiles may take the rest of the
    call, so the sweep is measured and written first."""
    gpu_check = _gpu_check()
    out = tmp_path / "check"
    seen = []

    def benchmark(cmd, timeout):  # part c's subprocess: look at the report, then stop as at the call's limit
        assert "benchmark.py" in cmd[1]
        seen.append(json.loads((out / "report.json").read_text())["small_model"])
        seen.append((out / "report.md").read_text())
        return 124

    monkeypatch.setattr(gpu_check, "call", benchmark)
    rc = gpu_check.main(["--smoke", "--device", "cpu", "--parts", "small", "--llama", str(tiny_llama), "--data",
                         str(synthetic_dir), "--out", str(out)])
    assert rc == 1 and len(seen) == 2  # benchmark.py did not finish: the check says so
    assert seen[0]["unfinished"] is True and [r["batch"] for r in seen[0]["train_batches"]] == [2, 4]
    assert "| batch | samples/s | s per step | peak GiB |" in seen[1] and "(unfinished: the call stopped" in seen[1]
    c = json.loads((out / "report.json").read_text())["small_model"]
    assert c["returncode"] == 124 and c["train_batches"] == seen[0]["train_batches"] and "report" not in c
    assert gpu_check.failures(json.loads((out / "report.json").read_text())) == ["small_model"]
    assert "benchmark.py exit 124" in (out / "report.md").read_text()


def test_ranking_part_runs_and_reports(tiny_llama, synthetic_dir, tmp_path):
    """Part d needs only a tokenizer (the model is SmolLM2's shape, TOY under --smoke, with random weights)."""
    gpu_check = _gpu_check()
    out = tmp_path / "check"
    rc = gpu_check.main(["--smoke", "--device", "cpu", "--parts", "rank", "--tokenizer", str(tiny_llama), "--data",
                         str(synthetic_dir), "--out", str(out)])
    assert rc == 0
    d = json.loads((out / "report.json").read_text())["ranking"]
    for kind in ("binllm", "text_only"):
        x = d["report"][kind]
        assert x["token_bound"] > 1 and x["max_abs_score_diff"] < 1e-4 and x["shared"]["8"]["samples_per_s"] > 0
    md = (out / "report.md").read_text()
    assert "## d. Ranking" in md and md.count("| binllm |") == 2
