"""`python -m minigpt4.summary`: the demo's closing table, with each row's rows scored and spread."""

import json

import numpy as np
import pandas as pd

from minigpt4 import summary
from minigpt4.metrics import redraw_difference, redraw_spread


def _run(tmp_path, name, predictions=True, auc=0.7, users=30):
    run = tmp_path / name
    run.mkdir()
    rng = np.random.default_rng(len(name))
    uid = np.repeat(np.arange(users), 10)
    label = rng.integers(0, 2, uid.size)
    score = label + rng.normal(size=uid.size)
    (run / "metrics.json").write_text(json.dumps({"test": {"auc": auc, "uauc": 0.6, "rows": int(uid.size)},
                                                  "valid": {"auc": 0.5, "uauc": 0.5, "rows": 3}}))
    if predictions:
        pd.DataFrame({"uid": uid, "iid": np.tile(np.arange(10), users), "label": label, "score": score}).to_csv(
            run / "predictions_test.csv", index=False)
    return run, (uid, label, score)


def test_each_test_row_states_rows_and_its_spread(tmp_path, capsys):
    scored, preds = _run(tmp_path, "eval_binllm")
    bare, _ = _run(tmp_path, "binmf", predictions=False)
    summary.main([str(scored), str(bare)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "split", "AUC", "UAUC", "rows", "sd", "AUC", "sd", "UAUC"]
    sd_auc, sd_uauc = redraw_spread(*preds)
    assert lines[1].split() == ["eval_binllm", "test", "0.7000", "0.6000", "300", f"{sd_auc:.4f}", f"{sd_uauc:.4f}"]
    assert 0 < sd_auc < 0.1
    assert lines[2].split() == ["binmf", "test", "0.7000", "0.6000", "300", "–", "–"]
    assert len(lines) == 4 and "redraws of the scored users" in lines[3]  # valid rows are not listed


def test_runs_on_the_same_rows_are_compared_with_the_spread_of_their_difference(tmp_path, capsys):
    text, _ = _run(tmp_path, "eval_tallrec", auc=0.5)
    other, _ = _run(tmp_path, "elsewhere", users=12)  # other rows: compared with nothing
    codes, (uid, label, score) = _run(tmp_path, "eval_binllm_x", auc=0.75)
    summary.main([str(text), str(other), str(codes)])
    out = capsys.readouterr().out.splitlines()
    first = pd.read_csv(text / "predictions_test.csv")
    sd_auc, sd_uauc = redraw_difference(uid, label, score, first["score"].to_numpy())
    assert 0 < sd_auc < 0.2
    assert out[5:] == [f"eval_binllm_x - eval_tallrec on the same 300 test rows: AUC +0.2500 (sd {sd_auc:.4f}), "
                       f"UAUC +0.0000 (sd {sd_uauc:.4f})"]
