"""What a user sees (issue 23): the whole output of a tiny training run, as the entry script prints it to a terminal
log, has no warnings, no log line split by a progress bar, no bare dict, a whole-run time estimate, and ends with
the `finished:` summary."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_yaml
from minigpt4.train.eta import RunClock, rows_to_score

ROOT = Path(__file__).resolve().parent.parent
# a tqdm bar's right end ("…, 1.79s/it]" / "…, ?it/s]") with anything after it on the same line: a split line
SPLIT_BAR = re.compile(r"(?:it/s|s/it)\]\S")


def test_run_clock_adds_steps_and_rows_left():
    clock = RunClock(epochs=2, steps_per_epoch=5, rows_per_step=8, valid_rows=100, test_rows=300)
    assert clock.seconds_left(0, 0) is None and clock.describe(0, 0) == ""
    for _ in range(2):
        clock.stepped(2.0)
    # before any scoring: scoring speed guessed at 3 x the training speed (8 rows / 2 s) = 12 rows/s
    assert clock.score_rows_per_s == pytest.approx(12.0)
    assert clock.seconds_left(2, 0) == pytest.approx(8 * 2.0 + (2 * 100 + 300) / 12.0)
    assert "guessed" in clock.describe(2, 0) and "at most" in clock.describe(2, 0)
    clock.scored(100, 20.0)  # the first validation, measured: 5 rows/s
    assert clock.seconds_left(5, 1) == pytest.approx(5 * 2.0 + (100 + 300) / 5.0)
    assert clock.describe(5, 1) == "run: ~2 min left at most (5 steps x 2.0 s, 400 rows to score at 5.0 rows/s)"
    assert clock.seconds_left(10, 2) == pytest.approx(300 / 5.0)  # only the test left


def test_run_clock_leaves_the_warm_up_step_out_once_others_are_timed():
    clock = RunClock(epochs=1, steps_per_epoch=10, rows_per_step=8, valid_rows=0, test_rows=0)
    clock.stepped(30.0)  # the first step: allocations, lazy initialisation
    assert clock.step_seconds == 30.0
    clock.stepped(2.0)
    clock.stepped(4.0)
    assert clock.step_seconds == pytest.approx(3.0) and clock.seconds_left(3, 0) == pytest.approx(7 * 3.0)


def test_run_clock_without_splits_to_score_says_nothing_about_scoring():
    clock = RunClock(epochs=1, steps_per_epoch=4, rows_per_step=8, valid_rows=0, test_rows=0)
    clock.stepped(3.0)
    assert clock.describe(1, 0) == "run: ~9 s left (3 steps x 3.0 s)"


def test_rows_to_score_counts_each_pair_once():
    class Split:
        def __init__(self, uids, iids):
            import numpy as np

            self.uids, self.iids = np.array(uids), np.array(iids)

    splits = {"test": Split([1, 1, 2], [5, 6, 5]), "test_warm": Split([1], [6]), "test_cold": Split([3], [9])}
    assert rows_to_score(splits, ["test", "test_warm", "test_cold"]) == 4


@pytest.mark.slow  # a subprocess that trains: `make test-fast` leaves it out
def test_tiny_run_output_is_whole_and_quiet(tiny_llama, synthetic_dir, tmp_path):
    cfg = write_yaml(tmp_path / "text.yaml", f"""\
model:
  llama_model: {tiny_llama}
  prompt_path: prompts/tallrec_movie.txt
  score_type: yes_minus_no
  rec_model: hash
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.05}}
datasets:
  synthetic:
    path: {synthetic_dir}
run:
  mode: v2
  init_lr: 1e-3
  warmup_steps: 1
  max_epoch: 2
  iters_per_epoch: 3
  batch_size_train: 4
  batch_size_eval: 16
  log_freq: 1
  max_eval_rows: 40
  test_splits: [test, test_warm, test_cold]
  output_dir: {tmp_path / "runs"}
  job_id: text
""")
    done = subprocess.run([sys.executable, str(ROOT / "train_collm_mf_din.py"), "--cfg-path", str(cfg)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-3000:]
    assert not re.search(r"warn", out, re.IGNORECASE), out
    pieces = [p.strip() for p in re.split(r"[\r\n]", out) if p.strip()]
    assert not [p for p in pieces if SPLIT_BAR.search(p)], out
    assert "{}" not in pieces
    # each log line is whole: it starts a line, whatever bars were drawn around it
    steps = [p for p in pieces if re.match(r"epoch \d+ step \d+ loss", p)]
    assert len(steps) == 6 and all("run: ~" in p and " left" in p for p in steps), out
    assert any(p.startswith("first step: ") and "rows to score" in p for p in pieces), out
    assert any(re.match(r"scoring \d+ test rows .*: test, test_warm, test_cold, each prompt once", p)
               for p in pieces), out
    assert pieces[-1].startswith("finished: 6 steps, adapter of epoch "), out


@pytest.mark.slow  # a subprocess that trains: `make test-fast` leaves it out
def test_stage0_output_gives_epoch_time_and_ends_with_a_summary(synthetic_dir, tmp_path):
    cfg = write_yaml(tmp_path / "binmf.yaml", f"""\
model:
  rec_model: hash
  rec_config: {{embedding_size: 16}}
datasets:
  synthetic:
    path: {synthetic_dir}
run: {{init_lr: 1e-2, batch_size_train: 256, max_epoch: 3, patience: 5, output_dir: {tmp_path / "runs"}, job_id: b}}
""")
    done = subprocess.run([sys.executable, str(ROOT / "pretrain_collab.py"), "--cfg-path", str(cfg)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert done.returncode == 0, done.stdout[-3000:]
    assert not re.search(r"warn", done.stdout, re.IGNORECASE), done.stdout
    assert any(re.match(r"an epoch takes [\d.]+ s; the run stops 5 epochs after its best", x) for x in lines)
    assert re.match(r"finished: best epoch \d of 3, valid_full AUC [\d.]+; test AUC [\d.]+ UAUC [\d.]+ \(\d+ rows\)",
                    lines[-1]), lines[-1]


def test_no_test_splits_score_nothing_and_print_nothing(capsys):
    from minigpt4.train.scoring import Scorer

    assert Scorer.test(None, [], None) == {}  # run.test_splits: [] (the demo's training stages)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
