"""reproduce.py --seed N: another seed of the LLM steps that train, beside their own runs, on the same rows and
encoders; the report shows each seed's rows and same-row differences next to the steps' own, and a second
backbone's report its rows minus the default backbone's."""

import json

import numpy as np
import pandas as pd
import pytest

from minigpt4.config import load_config
from minigpt4.experiments import records
from minigpt4.experiments.definitions import RANKING_STEPS, ReproduceError, label, split_seed
from minigpt4.experiments.plan import plan
from minigpt4.experiments.report import backbone_differences, write_report
from minigpt4.metrics import evaluate_scores, redraw_difference


def test_a_seed_plan_trains_the_llm_steps_again_and_shares_what_they_read(tmp_path):
    steps, runs, _ = plan("ml-100k", "cpu", tmp_path, data=tmp_path, only=["binllm", "icl"], seed=43)
    by = {s.name: s for s in steps}
    assert set(by) == {"binmf", "tallrec.seed43", "binllm.seed43", "icl"}  # the encoder and zero-shot: shared
    assert by["binllm.seed43"].depends == ["tallrec.seed43", "binmf"]
    own = {s.name: s for s in plan("ml-100k", "cpu", tmp_path, data=tmp_path, only=["binllm"])[0]}
    mine, theirs = (load_config(s.config, s.overrides) for s in (by["binllm.seed43"], own["binllm"]))
    assert mine.run.seed == 43 and theirs.run.seed == 42
    assert mine.run.sample_seed == 42  # the same test rows as the step's own run
    assert mine.run.max_eval_rows == theirs.run.max_eval_rows == 4000
    assert mine.run.job_id == "binllm.seed43" and mine.run.output_dir == theirs.run.output_dir
    assert mine.model.ckpt == str(runs / "tallrec.seed43" / "checkpoint_best")  # its own seed's stage 1
    assert mine.model.rec_config.pretrained_path == theirs.model.rec_config.pretrained_path  # the same codes
    whole = [s.name for s in plan("ml-100k", "cpu", tmp_path, data=tmp_path, seed=43)[0]]
    assert not any(s in whole for s in RANKING_STEPS) and "mf" in whole and "collm_mf.seed43" in whole


def test_a_seed_plan_refuses_the_steps_own_seed_and_ranking_steps(tmp_path):
    with pytest.raises(ReproduceError, match=r"--seed 42: it is the seed of .*own run"):
        plan("ml-100k", "cpu", tmp_path, data=tmp_path, only=["tallrec"], seed=42)
    with pytest.raises(ReproduceError, match="rank_binllm with --seed"):
        plan("ml-100k", "cpu", tmp_path, data=tmp_path, only=["rank_binllm"], seed=43)


def test_seed_names():
    assert split_seed("binllm.seed43") == ("binllm", 43) and split_seed("binllm") == ("binllm", None)
    assert split_seed("nothing.seed43") == ("nothing.seed43", None)  # not a step's
    assert split_seed("binllm.seedx") == ("binllm.seedx", None)
    assert label("binllm.seed43") == "BinLLM (seed 43)" and label("binllm") == "BinLLM"


def _run(runs, name, users, labels, score, seed, test=None):
    (runs / name).mkdir(parents=True)
    pd.DataFrame({"uid": users, "iid": np.arange(len(users)), "label": labels, "score": score}).to_csv(
        runs / name / "predictions_test.csv", index=False)
    m = {"test": test or {**evaluate_scores(users, labels, score), "rows": len(users)},
         "test_warm": {"auc": 0.6, "uauc": 0.6, "rows": 5}}
    (runs / name / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    (runs / name / "config.yaml").write_text(f"run:\n  seed: {seed}\n  sample_seed: 42\n  max_eval_rows: 4000\n",
                                             encoding="utf-8")
    return m


def test_report_puts_each_seed_next_to_the_steps_own_run(tmp_path):
    folder = tmp_path / "ml-100k" / "cpu"
    runs = folder / "runs"
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), rng.integers(2, 15, size=40))
    labels = rng.integers(0, 2, size=len(users))
    score = {name: labels + rng.normal(scale=noise, size=len(users))
             for name, noise in (("binmf", 1.0), ("tallrec", 3.0), ("binllm", 0.7), ("tallrec.seed43", 2.5),
                                 ("binllm.seed43", 0.8))}
    m = {n: _run(runs, n, users, labels, s, split_seed(n)[1] or 42) for n, s in score.items()}
    (folder / "environment.json").write_text("{}", encoding="utf-8")
    write_report(folder, "ml-100k", "cpu", None, ran_here=False)
    report = (folder / "report.md").read_text(encoding="utf-8")
    section = report[report.index("## Other seeds"):]
    own, other = m["binllm"]["test"], m["binllm.seed43"]["test"]
    assert f"| BinLLM | binllm | 42 | {own['auc']:.4f} |" in section
    delta = f"{other['auc'] - own['auc']:+.4f} / {other['uauc'] - own['uauc']:+.4f}"
    assert f"| BinLLM | binllm.seed43 | 43 | {other['auc']:.4f} |" in section and delta in section
    assert "| TALLRec | tallrec.seed43 | 43 |" in section
    # the seed's pairs on the same rows, each right under the own runs' pair: BinLLM − TALLRec of seed 43 against
    # TALLRec of seed 43, BinLLM − BinMF of seed 43 against the one BinMF both seeds read
    diffs = [line for line in report[report.index("## Differences"):report.index("## Other seeds")].splitlines()
             if line.startswith("| BinLLM")]
    assert [line.split(" | ")[:2] for line in diffs] == [
        ["| BinLLM", "TALLRec"], ["| BinLLM (seed 43)", "TALLRec (seed 43)"],
        ["| BinLLM", "BinMF"], ["| BinLLM (seed 43)", "BinMF"]]
    sd = redraw_difference(users, labels, score["binllm.seed43"], score["tallrec.seed43"])
    d_auc = m["binllm.seed43"]["test"]["auc"] - m["tallrec.seed43"]["test"]["auc"]
    assert diffs[1].startswith(f"| BinLLM (seed 43) | TALLRec (seed 43) | {len(users)} | {d_auc:+.4f} |")
    assert f"±{sd[0]:.4f}" in diffs[1]
    # recorded like every step, so the seed's rows and pairs live on where its runs are absent
    known = records.load(runs)
    assert known["binllm.seed43"]["metrics"]["test"]["auc"] == pytest.approx(other["auc"])
    assert known["binllm.seed43"]["reads"] == {}  # this config names no inputs
    elsewhere = tmp_path / "elsewhere" / "ml-100k" / "cpu"
    (elsewhere / "runs").mkdir(parents=True)
    for name in ("steps", "differences.json", "environment.json"):
        src = folder / name
        (elsewhere / name).write_bytes(src.read_bytes()) if src.is_file() else __import__("shutil").copytree(
            src, elsewhere / name)
    write_report(elsewhere, "ml-100k", "cpu", None, ran_here=False)
    again = (elsewhere / "report.md").read_text(encoding="utf-8")
    assert again[again.index("## Differences"):] == report[report.index("## Differences"):]
    # a seed's stage-1 run trained again there only for the checkpoint its stage 2 reads (reproduce.py's rebuild:
    # not scored) is no row: the seed's row stays its record
    rebuilt = elsewhere / "runs" / "tallrec.seed43"
    rebuilt.mkdir()
    (rebuilt / "metrics.json").write_text(json.dumps({"train": {"steps": 100}}), encoding="utf-8")
    records.mark_rebuild(elsewhere / "runs", "tallrec.seed43", known["tallrec.seed43"])
    write_report(elsewhere, "ml-100k", "cpu", None, ran_here=False)
    again = (elsewhere / "report.md").read_text(encoding="utf-8")
    assert again[again.index("## Other seeds"):] == section
    assert records.load(elsewhere / "runs")["tallrec.seed43"] == known["tallrec.seed43"]


def test_an_encoder_trained_again_pairs_where_it_scores_as_its_record(tmp_path):
    folder = tmp_path / "ml-100k" / "cpu"
    runs = folder / "runs"
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(30), 6)
    labels = rng.integers(0, 2, size=len(users))
    for name, noise in (("binmf", 1.0), ("binllm", 0.8)):
        _run(runs, name, users, labels, labels + rng.normal(scale=noise, size=len(users)), 42)
    (folder / "environment.json").write_text("{}", encoding="utf-8")
    write_report(folder, "ml-100k", "cpu", None, ran_here=False)
    pair = "| BinLLM | BinMF | 180 |"
    assert pair in (folder / "report.md").read_text(encoding="utf-8")
    # binmf's run is now a rebuild (reproduce.py: trained again for its checkpoint) and the pair must be computed
    # again: it is, from the rebuild's predictions, while the rebuild scores as the record
    records.mark_rebuild(runs, "binmf", records.load(runs)["binmf"])
    for again in (True, False):
        (folder / "differences.json").unlink()
        write_report(folder, "ml-100k", "cpu", None, ran_here=False)
        assert (pair in (folder / "report.md").read_text(encoding="utf-8")) is again
        m = json.loads((runs / "binmf" / "metrics.json").read_text(encoding="utf-8"))
        m["test"]["auc"] += 0.01  # another CPU's encoder, scoring otherwise: not the record's row
        (runs / "binmf" / "metrics.json").write_text(json.dumps(m), encoding="utf-8")


def _record(auc, uauc, sd, rows=4000, sample_seed=42, llama="smollm2", warm=None):
    metrics = {"test": {"auc": auc, "uauc": uauc, "rows": rows}}
    if warm is not None:
        metrics["test_warm"] = {"auc": warm, "uauc": warm, "rows": 100}
    return {"metrics": metrics, "redraw_sd": sd,
            "config": {"run": {"seed": 42, "sample_seed": sample_seed, "max_eval_rows": 4000},
                       "model": {"llama_model": llama}}}


def test_a_second_backbone_is_set_against_the_default_on_the_same_rows():
    here = {"binllm": _record(0.70, 0.71, [0.03, 0.04], llama="gemma3-270m", warm=0.6),
            "tallrec": _record(0.55, 0.55, [0.01, 0.02], llama="gemma3-270m", sample_seed=7),
            "collm_mf": _record(0.69, 0.70, None, llama="gemma3-270m"),
            "binmf": _record(0.69, 0.68, None)}  # an encoder: the same for both backbones
    there = {"binllm": _record(0.71, 0.70, [0.04, 0.03], warm=0.65), "tallrec": _record(0.52, 0.52, [0.01, 0.02]),
             "collm_mf": _record(0.70, 0.70, [0.01, 0.01]), "binmf": _record(0.69, 0.68, None)}
    rows = {r[0]: r for r in backbone_differences(here, there)}
    assert set(rows) == {"binllm", "collm_mf"}  # tallrec drew other rows; binmf is no LLM row
    step, n, a, b, d_auc, d_uauc, sd, d_warm, d_cold = rows["binllm"]
    assert (n, a, b) == (4000, 0.70, 0.71) and d_auc == pytest.approx(-0.01) and d_uauc == pytest.approx(0.01)
    assert sd == (pytest.approx(0.05), pytest.approx(0.05))  # √(0.03² + 0.04²)
    assert d_warm == pytest.approx(-0.05) and d_cold is None
    assert rows["collm_mf"][6] is None  # one row without its sd: none for the difference


def test_a_second_backbones_report_shows_the_default_backbones_rows(tmp_path):
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(30), 8)
    labels = rng.integers(0, 2, size=len(users))
    default = tmp_path / "ml-100k" / "cpu"
    records.write(default / "runs", {"step": "binllm", **_record(0.71, 0.70, [0.02, 0.02])})
    gemma = tmp_path / "ml-100k" / "cpu-gemma3-270m"
    m = _run(gemma / "runs", "binllm", users, labels, labels + rng.normal(size=len(users)), 42)
    (gemma / "runs" / "binllm" / "config.yaml").write_text(
        "model:\n  llama_model: gemma3-270m\nrun:\n  seed: 42\n  sample_seed: 42\n  max_eval_rows: 4000\n",
        encoding="utf-8")
    m["test"]["rows"] = 4000
    (gemma / "runs" / "binllm" / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    (gemma / "environment.json").write_text("{}", encoding="utf-8")
    write_report(gemma, "ml-100k", "cpu", "gemma3-270m", ran_here=False)
    report = (gemma / "report.md").read_text(encoding="utf-8")
    assert "## Against `smollm2`" in report and "[../cpu/report.md](../cpu/report.md)" in report
    assert f"| BinLLM | binllm | 4000 | {m['test']['auc']:.4f} | 0.7100 | {m['test']['auc'] - 0.71:+.4f} |" in report
    # the default backbone's own report has no such section
    write_report(default, "ml-100k", "cpu", None, ran_here=False)
    assert "## Against" not in (default / "report.md").read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_seed_runs_beside_the_steps_own_runs_and_is_reused(tiny_llama, synthetic_dir, tmp_path, capsys):
    """The smoke budget on the tiny Llama: the steps' own runs, then seed 43 of TALLRec and BinLLM, then again."""
    from minigpt4.experiments.reproduce import main

    argv = ["--dataset", "ml-1m", "--budget", "smoke", "--out", str(tmp_path), "--llama", str(tiny_llama),
            "--data", str(synthetic_dir), "--only", "binllm"]
    main(argv)
    done = main([*argv, "--seed", "43"])
    assert done == {"binmf": "reused", "tallrec.seed43": "ran", "binllm.seed43": "ran"}
    runs = tmp_path / "ml-1m" / "smoke" / "runs"
    mine = load_config(str(runs / "binllm.seed43" / "config.yaml"))
    assert mine.run.seed == 43 and mine.model.ckpt == str(runs / "tallrec.seed43" / "checkpoint_best")
    assert mine.model.rec_config.pretrained_path == str(runs / "binmf" / "rec_model.pth")
    own = pd.read_csv(runs / "binllm" / "predictions_test.csv")
    other = pd.read_csv(runs / "binllm.seed43" / "predictions_test.csv")
    assert own[["uid", "iid"]].equals(other[["uid", "iid"]])  # the same rows, other scores
    assert not np.allclose(own["score"], other["score"])
    report = (tmp_path / "ml-1m" / "smoke" / "report.md").read_text(encoding="utf-8")
    assert "| BinLLM | binllm.seed43 | 43 |" in report and "| BinLLM (seed 43) | TALLRec (seed 43) |" in report
    assert set(records.load(runs)) >= {"binllm", "binllm.seed43", "tallrec.seed43"}
    assert set(main([*argv, "--seed", "43"]).values()) == {"reused"}
