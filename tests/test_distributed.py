"""Runs on N processes give the answer of one (CPU, gloo, tiny Llama, synthetic data, BinLLM codes).

- evaluation: 1 and 2 processes score an odd number of rows to the same predictions, AUC and UAUC;
- training: 2 processes x batch b = 1 process x batch 2b (same losses, same adapter), with DDP, with FSDP,
  and with two single-process "nodes" joined by a localhost rendezvous (`--nnodes 2`);
- early stopping stops every rank at the same step.
"""

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from helpers import write_yaml
from minigpt4.batching import TrainBatches
from minigpt4.cli import main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.slow]  # `make test-fast` leaves these out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args, nproc=2, extra=()):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port",
           str(_free_port()), *extra, *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def setup(tiny_llama, synthetic_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    out = d / "runs"
    binmf = write_yaml(d / "binmf.yaml", f"""\
model: {{rec_model: hash, rec_config: {{embedding_size: 32}}}}
datasets: {{synthetic: {{path: {synthetic_dir}}}}}
run: {{init_lr: 1e-2, batch_size_train: 256, max_epoch: 2, seed: 2023, device: cpu, output_dir: {out}, job_id: binmf}}
""")
    main("collab", "stage 0", ["--cfg-path", str(binmf)])
    llm = write_yaml(d / "codes.yaml", f"""\
model:
  llama_model: {tiny_llama}
  prompt_path: prompts/collm_movie.txt
  score_type: yes_minus_no
  rec_model: hash
  rec_config: {{embedding_size: 32, pretrained_path: {out / 'binmf' / 'rec_model.pth'}}}
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.0}}
datasets:
  synthetic:
    path: {synthetic_dir}
run:
  mode: v3
  init_lr: 1e-2
  min_lr: 1e-3
  warmup_steps: 1
  max_epoch: 2
  iters_per_epoch: 2
  batch_size_train: 4
  batch_size_eval: 8
  valid_splits: []
  max_eval_rows: 45
  test_splits: [test]
  device: cpu
  output_dir: {out}
""")
    # the reference: one process, batch 4
    main("llm", "one process", ["--cfg-path", str(llm), "--options", "run.job_id=one"])
    return {"out": out, "yaml": llm}


def _script(name):
    return str(ROOT / name)


def _adapter(run):
    return load_file(str(run / "checkpoint_best" / "adapter_model.safetensors"))


def _losses(run):
    return [rec["train_loss"] for rec in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def _same_training(out, job):
    ref, got = _adapter(out / "one"), _adapter(out / job)
    assert set(ref) == set(got)
    for k in ref:
        np.testing.assert_allclose(got[k].numpy(), ref[k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(_losses(out / job), _losses(out / "one"), rtol=1e-5)
    a = pd.read_csv(out / "one" / "predictions_test.csv")
    b = pd.read_csv(out / job / "predictions_test.csv")
    assert a[["uid", "iid", "label"]].equals(b[["uid", "iid", "label"]])
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-4, atol=1e-5)


class _Rows:  # just enough of a TokenizedSplit
    def __init__(self, n=23):
        self.lengths = np.random.default_rng(0).integers(50, 300, n)

    def __len__(self):
        return len(self.lengths)

    def batch(self, idx, pad_multiple=1):
        return list(idx)


@pytest.mark.parametrize("bucket", [0, 2])
def test_global_batches_do_not_depend_on_the_process_count(bucket):
    one = TrainBatches(_Rows(), 4, seed=7, bucket=bucket)
    accum = TrainBatches(_Rows(), 2, seed=7, accum=2, bucket=bucket)
    ranks = [TrainBatches(_Rows(), 2, seed=7, world=2, rank=r, bucket=bucket) for r in range(2)]
    seen = []
    for _ in range(12):  # past the end of a pass (5 global batches of 4): reshuffled the same way
        rows = sorted(next(one))
        assert rows == sorted(next(ranks[0]) + next(ranks[1])) == sorted(next(accum) + next(accum))
        seen += rows
    assert len(set(seen[:20])) == 20  # a pass visits distinct rows


def test_length_buckets_reduce_padding():
    rows = _Rows(400)
    def padding(bucket):
        batches = TrainBatches(rows, 8, seed=1, bucket=bucket)
        drawn = (next(batches) for _ in range(50))
        return sum(int(rows.lengths[b].max() * len(b) - rows.lengths[b].sum()) for b in drawn)
    assert padding(50) < padding(0) / 4


def test_eval_on_two_processes_matches_one(setup):
    out, args = setup["out"], ["--cfg-path", str(setup["yaml"]), "--options", f"model.ckpt={setup['out'] / 'one'}"]
    main("eval", "eval", [*args, "run.job_id=eval1"])
    _torchrun([_script("eval.py"), *args, "run.job_id=eval2"])
    one = json.loads((out / "eval1" / "metrics.json").read_text())["test"]
    two = json.loads((out / "eval2" / "metrics.json").read_text())["test"]
    assert one["rows"] % 2 == 1  # an odd number of rows over 2 processes: no padding duplicates
    assert two["rows"] == one["rows"] and two["auc"] == pytest.approx(one["auc"], abs=1e-9)
    assert two["uauc"] == pytest.approx(one["uauc"], abs=1e-9)
    a, b = (pd.read_csv(out / j / "predictions_test.csv") for j in ("eval1", "eval2"))
    assert not b.duplicated(["uid", "iid"]).any()
    pd.testing.assert_frame_equal(a, b, atol=1e-5)  # batches differ, so does float rounding


def test_ddp_two_processes_batch_b_equal_one_process_batch_2b(setup):
    stdout = _torchrun([_script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options",
                        "run.job_id=ddp", "run.batch_size_train=2"])
    assert "world size 2 (DDP), batch 2 per process x 1 accumulation = global batch 4" in stdout
    _same_training(setup["out"], "ddp")


def test_ddp_compiled_training_trains_like_one_process(setup):
    """run.compile_train under DDP: the DDP-wrapped model compiled (its gradient buckets split the graph)."""
    stdout = _torchrun([_script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options",
                        "run.job_id=ddp_compiled", "run.batch_size_train=2", "run.compile_train=True"])
    assert "world size 2 (DDP)" in stdout and "compiled (the first step waits for the compiler)" in stdout
    _same_training(setup["out"], "ddp_compiled")


def test_global_batch_size_sets_accumulation(setup):
    """run.global_batch_size=4 with batch 1 on 2 processes: 2 micro-batches accumulated per step."""
    stdout = _torchrun([_script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options",
                        "run.job_id=accum", "run.batch_size_train=1", "run.global_batch_size=4"])
    assert "batch 1 per process x 2 accumulation = global batch 4" in stdout
    _same_training(setup["out"], "accum")


def test_fsdp_two_processes_train_like_one(setup):
    stdout = _torchrun([_script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options",
                        "run.job_id=fsdp", "run.batch_size_train=2", "run.fsdp=True"])
    assert "(FSDP)" in stdout
    _same_training(setup["out"], "fsdp")


def test_two_nodes_on_localhost_train_like_one(setup):
    port = _free_port()
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node),
               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
               _script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options", "run.job_id=nodes",
               "run.batch_size_train=2"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stdout[-2000:] + stderr[-2000:]
    _same_training(setup["out"], "nodes")


def test_early_stopping_stops_every_rank_at_the_same_step(setup):
    # lr 0: valid AUC never improves after the first epoch, so patience 1 stops after epoch 1 of 5
    stdout = _torchrun([_script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options",
                        "run.job_id=early", "run.batch_size_train=2", "run.init_lr=0", "run.min_lr=0",
                        "run.warmup_lr=0", "run.max_epoch=5", "run.patience=1", "run.valid_splits=[valid]"])
    finished = sorted(line for line in stdout.splitlines() if "training finished" in line)
    assert finished == ["rank 0: training finished at epoch 1 step 4", "rank 1: training finished at epoch 1 step 4"]
    assert "early stop" in stdout


def test_a_dead_rank_makes_the_others_exit_with_a_clear_error(setup):
    """Two processes started by hand (no torchrun agent to clean up); rank 1 is killed while training:
    rank 0 must exit with an error naming the cause, well within run.dist_timeout_minutes."""
    import os
    import signal
    import time

    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        cmd = [sys.executable, _script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options",
               "run.job_id=dead_rank", "run.batch_size_train=2", "run.iters_per_epoch=1000", "run.log_freq=1",
               "run.dist_timeout_minutes=2"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    lines = []
    for line in procs[0].stdout:  # wait until training has started
        lines.append(line)
        if " step 2 loss" in line:
            break
    procs[1].send_signal(signal.SIGKILL)
    start = time.time()
    rest, _ = procs[0].communicate(timeout=300)
    waited = time.time() - start
    out = "".join(lines) + rest
    assert procs[0].returncode not in (0, None), out[-2000:]
    assert "another process of this run" in out, out[-2000:]
    assert waited < 120


def test_killed_run_resumes_to_the_uninterrupted_result(setup):
    """SIGKILL mid-epoch (resume points every step), then `run.resume_ckpt_path`: the same losses, adapter and
    test metrics as the uninterrupted run `one`; the log holds each epoch once."""
    import os
    import signal

    out = setup["out"]
    cmd = [sys.executable, _script("train_binllm.py"), "--cfg-path", str(setup["yaml"]), "--options",
           "run.job_id=killed", "run.save_every_steps=1", "run.log_freq=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    import time

    for line in proc.stdout:
        if "epoch 0 step 1 loss" in line:  # mid-epoch 0 (2 steps per epoch)
            break
    latest = out / "killed" / "resume" / "latest"
    while not latest.exists() and proc.poll() is None:  # the step-1 resume point, written just after the log line
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = out / "killed"
    assert not (run / "metrics.json").exists()
    main("llm", "resume", ["--cfg-path", str(run / "config.yaml"), "--options", f"run.resume_ckpt_path={run}"])
    _same_training(out, "killed")
    assert [r["epoch"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())] == [0, 1]
    assert len(json.loads((run / "environment.json").read_text())["resumes"]) == 1  # the code it resumed on
    test = [{k: v for k, v in json.loads((r / "metrics.json").read_text())["test"].items() if "per_s" not in k}
            for r in (run, out / "one")]
    assert test[0] == test[1]


def test_resume_without_a_resume_point_is_config_error(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main("llm", "resume", ["--cfg-path", str(setup["yaml"]), "--options", "run.job_id=x",
                               f"run.resume_ckpt_path={tmp_path}"])
    assert exc.value.code == 2 and "resume_ckpt_path" in capsys.readouterr().err


def test_a_half_written_resume_point_is_never_used(tmp_path):
    from minigpt4.train import resume

    root = tmp_path / "resume"
    (root / "step_5").mkdir(parents=True)
    (root / "step_5" / "progress.json").write_text("{}")
    (root / "latest").write_text("step_5\n")
    (root / "step_9").mkdir()  # a save killed half-way: files missing, `latest` not moved yet
    (root / "step_9" / "rank0.pt").write_bytes(b"partial")
    assert resume.find(tmp_path) == root / "step_5"
