"""The run directory: never overwritten, JSON-lines log, atomic JSON/CSV outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from minigpt4.train.run_dir import RunDir, atomic_text


def _cfg(out, job_id="job"):
    return OmegaConf.create({"run": {"output_dir": str(out), "job_id": job_id, "seed": 1}})


def _run_dir(out, job_id="job", **kw):
    return RunDir(out / job_id, _cfg(out, job_id), **kw)


def test_layout_and_no_overwrite(tmp_path):
    rd = _run_dir(tmp_path)
    assert rd.path == tmp_path / "job"
    assert OmegaConf.load(rd.path / "config.yaml").run.seed == 1
    rd.log({"epoch": 0, "valid_auc": np.float32(0.5), "rows": np.int64(3)}, step=1)
    rd.log({"epoch": 1, "valid_auc": 0.75})
    lines = [json.loads(x) for x in (rd.path / "log.jsonl").read_text().splitlines()]
    assert [(x["epoch"], x["valid_auc"]) for x in lines] == [(0, 0.5), (1, 0.75)] and lines[0]["rows"] == 3
    assert "time" in lines[0]
    assert (rd.path / "tensorboard").is_dir()
    rd.write_json("metrics.json", {"test": {"auc": np.float64(0.625)}})
    assert json.loads((rd.path / "metrics.json").read_text()) == {"test": {"auc": 0.625}}
    rd.write_predictions("predictions_test.csv", np.array([1, 2]), np.array([3, 4]), np.array([1, 0]),
                         np.array([0.25, -1.5]))
    pred = pd.read_csv(rd.path / "predictions_test.csv")
    assert list(pred.columns) == ["uid", "iid", "label", "score"] and pred["score"].tolist() == [0.25, -1.5]
    rd.close()
    with pytest.raises(FileExistsError, match="never overwritten"):
        _run_dir(tmp_path)
    assert not [p for p in rd.path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_non_main_rank_writes_nothing(tmp_path):
    rd = _run_dir(tmp_path, "other", is_main=False)
    rd.log({"epoch": 0}, step=0)
    rd.write_json("metrics.json", {})
    assert not (tmp_path / "other").exists()


def test_default_job_id_is_a_timestamp(tmp_path):
    from minigpt4.recipes.derived import derive_collab

    class Task:  # just enough of RecTask
        def id_counts(self):
            return 3, 4

    cfg = OmegaConf.create({"model": {"rec_model": "MF"}, "run": {"output_dir": str(tmp_path), "job_id": ""}})
    OmegaConf.set_readonly(cfg, True)
    d = derive_collab(cfg, Task())
    assert d.run_path.parent == tmp_path and d.job_id.isdigit() and len(d.job_id) == 14
    assert d.run_path.name == d.job_id and cfg.run.job_id == ""  # derived, not written into the config


def test_atomic_text_replaces(tmp_path):
    p = tmp_path / "x.txt"
    atomic_text(p, "one")
    atomic_text(p, "two")
    assert p.read_text() == "two" and sorted(q.name for q in tmp_path.iterdir()) == ["x.txt"]


def test_environment_records_seed_versions_and_commit(tmp_path):
    import json

    from omegaconf import OmegaConf

    from minigpt4.train.run_dir import RunDir

    cfg = OmegaConf.create({"run": {"output_dir": str(tmp_path), "job_id": "env", "seed": 123}})
    rd = RunDir(tmp_path / "env", cfg)
    env = json.loads((rd.path / "environment.json").read_text())
    assert env["seed"] == 123 and env["libraries"]["torch"] and env["python"]
    assert env["git_commit"] is None or len(env["git_commit"]) == 40


def test_predictions_keep_every_bit_of_the_scores(tmp_path):
    from minigpt4.metrics import evaluate_scores

    rd = _run_dir(tmp_path)
    # float32 scores that differ in the 7th significant digit: rounding them would tie the pair and move the AUC
    scores = np.array([2.4628601, 2.4628604, -1.9358701, -1.93587], dtype=np.float32)
    labels, users = np.array([0, 1, 1, 0]), np.array([1, 1, 2, 2])
    rd.write_predictions("predictions_test.csv", users, np.arange(4), labels, scores)
    back = pd.read_csv(rd.path / "predictions_test.csv")
    assert (back["score"].to_numpy().astype(np.float32) == scores).all()
    again, then = evaluate_scores(users, labels, back["score"].to_numpy()), evaluate_scores(users, labels, scores)
    assert (again["auc"], again["uauc"]) == (then["auc"], then["uauc"])


def test_a_resumed_run_records_the_code_it_resumed_on(tmp_path):
    rd = _run_dir(tmp_path)
    rd.log({"epoch": 0, "step": 5})
    rd.log({"epoch": 0, "step": 9})  # after the resume point: dropped on resume
    first = json.loads((rd.path / "environment.json").read_text())
    RunDir(rd.path, resume_step=5)
    RunDir(rd.path, resume_step=5)
    env = json.loads((rd.path / "environment.json").read_text())
    assert {k: v for k, v in env.items() if k != "resumes"} == first  # the start's record is kept
    assert [r["step"] for r in env["resumes"]] == [5, 5]
    assert env["resumes"][0]["seed"] == 1 and "git_commit" in env["resumes"][0]
    assert [json.loads(x)["step"] for x in (rd.path / "log.jsonl").read_text().splitlines()] == [5]
