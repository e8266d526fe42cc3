"""reproduce.py: the smoke budget over a few steps on the tiny Llama and synthetic data writes the report with the
paper's numbers next to ours; a second invocation reuses every finished run; interrupted runs are resumed or set
aside and rerun."""

import csv
import json

import numpy as np
import pandas as pd
import pytest

from minigpt4 import cli, stages
from minigpt4.config import REPO_ROOT, load_config
from minigpt4.experiments.definitions import ALL_STEPS, PAPER, RANKING_STEPS, STEPS, ReproduceError
from minigpt4.experiments.plan import plan
from minigpt4.experiments.report import redraw_spreads, report_markdown, write_report
from minigpt4.experiments.reproduce import main, parse_args
from minigpt4.experiments.run import stale_steps
from minigpt4.experiments.spread import load_test_predictions, same_rows, sample_spread

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ONLY = "binmf,tallrec,binllm,icl"


def _argv(out, llama, data, only=ONLY):
    return ["--dataset", "ml-1m", "--budget", "smoke", "--out", str(out), "--llama", str(llama),
            "--data", str(data), "--only", only]


@pytest.fixture(scope="module")
def first(tiny_llama, synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    done = main(_argv(out, tiny_llama, synthetic_dir))
    return {"out": out, "done": done, "folder": out / "ml-1m" / "smoke", "llama": tiny_llama, "data": synthetic_dir}


def _counting(monkeypatch):
    calls = []
    real = cli.main

    def counted(stage, description, argv=None):
        calls.append((stage, argv))
        return real(stage, description, argv)

    monkeypatch.setattr(cli, "main", counted)
    return calls


def test_smoke_runs_the_steps_and_writes_the_report(first):
    assert first["done"] == {"binmf": "ran", "tallrec": "ran", "binllm": "ran", "icl": "ran"}
    folder = first["folder"]
    for name in ("report.md", "results.csv", "environment.json", "methods.png", "warm_cold.png", "compression.png",
                 "code_length.png"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    report = (folder / "report.md").read_text(encoding="utf-8")
    ours = json.loads((folder / "runs" / "binllm" / "metrics.json").read_text())["test"]
    binllm_row = next(line for line in report.splitlines() if line.startswith("| BinLLM | binllm |"))
    assert f"{ours['auc']:.4f}" in binllm_row and "0.7425" in binllm_row and "0.6956" in binllm_row
    assert "| CTRL (DIN) | ctrl | not run |" in report
    binmf = json.loads((folder / "runs" / "binmf" / "metrics.json").read_text())["test"]
    assert f"| BinMF 32 bits | binmf | {binmf['auc']:.4f} |" in report
    assert "| BinMF 16 bits | binmf16 | not run |" in report
    assert "| MF | mf | not run |" in report  # not in --only
    assert "≈0.764" in report  # BinLLM warm AUC read off Figure 2
    assert "Steps finished: 4 of 23 (the others show `not run`" in report
    rows = list(csv.DictReader(open(folder / "results.csv", encoding="utf-8")))
    splits = {(r["step"], r["split"]) for r in rows}
    assert {("binllm", "test"), ("binllm", "test_warm"), ("binllm", "test_cold"), ("binmf", "valid_full"),
            ("icl", "test")} <= splits
    env = json.loads((folder / "environment.json").read_text())
    assert env["budget"] == "smoke" and env["backbone"] == str(first["llama"]) and "hardware" in env


def test_dependencies_point_at_this_reproductions_runs(first):
    config = (first["folder"] / "runs" / "binllm" / "config.yaml").read_text(encoding="utf-8")
    runs = first["folder"] / "runs"
    assert str(runs / "tallrec" / "checkpoint_best") in config and str(runs / "binmf" / "rec_model.pth") in config


def test_second_invocation_reuses_every_finished_run(first, monkeypatch):
    calls = _counting(monkeypatch)
    done = main(_argv(first["out"], first["llama"], first["data"]))
    assert calls == [] and set(done.values()) == {"reused"}


def test_interrupted_runs_are_resumed_or_set_aside(first, monkeypatch):
    runs = first["folder"] / "runs"
    # An LLM run killed after its last resume point: continued in place from its own config.
    (runs / "tallrec" / "metrics.json").unlink()
    assert (runs / "tallrec" / "resume" / "latest").is_file()
    # A run that left nothing to resume from (ICL scores only): moved aside, then run again.
    (runs / "icl" / "metrics.json").unlink()
    calls = _counting(monkeypatch)
    done = main(_argv(first["out"], first["llama"], first["data"], only="tallrec,icl"))
    assert done == {"tallrec": "resumed", "icl": "ran"} and len(calls) == 2
    assert calls[0][1][:2] == ["--cfg-path", str(runs / "tallrec" / "config.yaml")]
    assert (runs / "tallrec" / "metrics.json").is_file() and (runs / "icl" / "metrics.json").is_file()
    assert (runs / "icl.incomplete-1" / "config.yaml").is_file()


def test_runs_whose_settings_changed_run_again_with_what_reads_them(first, monkeypatch, capsys):
    runs = first["folder"] / "runs"
    # binmf ran with another setting than the plan's (as if its YAML was edited afterwards): binmf runs again, and
    # so does binllm, which reads binmf's codes; tallrec and icl are reused.
    saved = runs / "binmf" / "config.yaml"
    saved.write_text(saved.read_text(encoding="utf-8").replace("max_epoch: 2", "max_epoch: 5"), encoding="utf-8")
    assert main(_argv(first["out"], first["llama"], first["data"]) + ["--plan"]) == {}
    out = capsys.readouterr().out
    assert "run.max_epoch: 5 -> 2" in out and "it reads binmf, which run(s) again" in out
    # until they ran again, the report does not show their old numbers
    assert main(_argv(first["out"], first["llama"], first["data"]) + ["--report"]) == {}
    report = (first["folder"] / "report.md").read_text(encoding="utf-8")
    assert "| BinMF | binmf | to run again |" in report and "| BinLLM | binllm | to run again |" in report
    assert "| TALLRec | tallrec | 0." in report
    calls = _counting(monkeypatch)
    done = main(_argv(first["out"], first["llama"], first["data"]))
    assert done == {"binmf": "ran", "tallrec": "reused", "binllm": "ran", "icl": "reused"} and len(calls) == 2
    assert (runs / "binmf.stale-1" / "metrics.json").is_file() and (runs / "binllm.stale-1").is_dir()
    assert "max_epoch: 2" in (runs / "binmf" / "config.yaml").read_text(encoding="utf-8")
    # machine settings given with --options do not make a finished run stale
    steps, _, _ = plan("ml-1m", "smoke", first["out"], data=first["data"], llama=first["llama"],
                          only=["binllm"], options=["run.batch_size_eval=7"])
    assert stale_steps(steps, runs) == {}
    # nor does a precision setting written into the run's config (they belong to the machine)
    saved = runs / "icl" / "config.yaml"
    text = saved.read_text(encoding="utf-8")
    assert "dtype: auto" in text
    saved.write_text(text.replace("dtype: auto", "dtype: bf16").replace("compile: auto", "compile: 'true'"),
                     encoding="utf-8")
    steps, _, _ = plan("ml-1m", "smoke", first["out"], data=first["data"], llama=first["llama"], only=["icl"])
    assert stale_steps(steps, runs) == {}


def test_cpu_budget_scores_every_llm_row_on_the_full_test_split(tmp_path):
    steps, _, _ = plan("ml-1m", "cpu", tmp_path, data=tmp_path)
    llm = [s for s in steps if stages.get(s.stage).llm]
    assert len(llm) >= 14
    for step in llm:
        assert [o for o in step.overrides if o.startswith("run.max_eval_rows=")][-1] == "run.max_eval_rows=0", step.name


def test_cpu_budget_scores_the_same_4000_rows_per_llm_row_on_ml100k(tmp_path):
    # budgets.yaml cpu.datasets.ml-100k: appended after the budget's own overrides, so it wins; encoders untouched
    steps, _, _ = plan("ml-100k", "cpu", tmp_path, data=tmp_path)
    for step in steps:
        rows = [o for o in step.overrides if o.startswith("run.max_eval_rows=")]
        assert rows == [] if not stages.get(step.stage).llm else rows[-1] == "run.max_eval_rows=4000", step.name


def test_ablation_configs_train_on_binllms_schedule():
    """BinLLM-IO / -IT and the dot-decimal row differ from BinLLM in the prompt (or the stage-1 start) only, so
    their differences from BinLLM measure that, not a shorter training."""
    from minigpt4.config import load_config

    keys = ("max_epoch", "iters_per_epoch", "batch_size_train", "init_lr", "min_lr", "warmup_steps", "weight_decay")
    for prefix in ("ml1m", "amazon"):
        base = load_config(REPO_ROOT / "train_configs" / f"{prefix}_binllm.yaml").run
        for method in ("binllm_io", "binllm_it", "binllm_ipv4"):
            run = load_config(REPO_ROOT / "train_configs" / f"{prefix}_{method}.yaml").run
            assert {k: run[k] for k in keys} == {k: base[k] for k in keys}, f"{prefix}_{method}.yaml"


def test_bad_inputs_name_the_fix(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--dataset", "amazon-book", "--budget", "smoke", "--out", str(tmp_path), "--data", str(tmp_path)])
    assert "no processed amazon-book data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--budget", "smoke", "--out", str(tmp_path), "--data", str(tmp_path), "--only", "nope"])
    assert "unknown step(s) ['nope']" in capsys.readouterr().err


def test_options_go_last_on_llm_steps_only(tmp_path):
    steps, _, _ = plan("ml-1m", "smoke", tmp_path, data=tmp_path, only=["binllm"],
                          options=["run.batch_size_eval=128", "run.device=cuda"])
    by_name = {s.name: s for s in steps}
    assert by_name["binllm"].overrides[-2:] == ["run.batch_size_eval=128", "run.device=cuda"]
    assert by_name["tallrec"].overrides[-2:] == ["run.batch_size_eval=128", "run.device=cuda"]
    assert not any("batch_size_eval" in o for o in by_name["binmf"].overrides)  # stage 0 keeps its own settings
    args = parse_args(["--options", "run.amp=True", "run.batch_size_eval=64"])
    assert args.options == ["run.amp=True", "run.batch_size_eval=64"]


def test_a_named_backbone_gets_its_own_folder_and_settings(tmp_path):
    """--llama gemma3-270m: its runs and report apart from SmolLM2's, every LLM step on Gemma with its profile."""
    steps, runs, _ = plan("ml-1m", "cpu", tmp_path, data=tmp_path, llama="gemma3-270m", only=["binllm"])
    assert runs == tmp_path / "ml-1m" / "cpu-gemma3-270m" / "runs"
    for step in steps:
        if step.stage != "collab":
            cfg = load_config(step.config, step.overrides)
            assert cfg.model.llama_model == "gemma3-270m"
            assert str(runs) in cfg.run.output_dir
    assert plan("ml-1m", "cpu", tmp_path, data=tmp_path, llama="smollm2")[1] == tmp_path / "ml-1m" / "cpu" / "runs"
    assert (plan("ml-1m", "full", tmp_path, data=tmp_path, llama="/models/vicuna-7b")[1]
            == tmp_path / "ml-1m" / "full" / "runs")
    assert "Backbone of the LLM rows: `gemma3-270m`" in report_markdown("ml-1m", "cpu", {}, llama="gemma3-270m")


def test_plan_runs_nothing_and_report_only_rewrites_the_report(first, monkeypatch, capsys):
    calls = _counting(monkeypatch)
    report = first["folder"] / "report.md"
    report.unlink()
    env = first["folder"] / "environment.json"
    env.write_text('{"hardware": "the machine that ran the steps"}')
    assert main(_argv(first["out"], first["llama"], first["data"]) + ["--plan"]) == {}
    assert "[done, reused]" in capsys.readouterr().out and not report.exists()
    assert main(_argv(first["out"], first["llama"], first["data"]) + ["--report"]) == {}
    assert calls == [] and "| BinLLM | binllm |" in report.read_text(encoding="utf-8")
    # the environment is that of the runs, not of the machine that rewrote the report
    assert json.loads(env.read_text()) == {"hardware": "the machine that ran the steps"}


def test_steps_run_after_what_they_read_and_the_papers_rows_first(tmp_path):
    steps, _, _ = plan("ml-1m", "cpu", tmp_path, data=tmp_path)
    order = [s.name for s in steps]
    for i, s in enumerate(steps):
        assert set(s.depends) <= set(order[:i]), f"{s.name} runs before {s.depends}"
    # A cpu run stopped early has every row of the paper's Tables 2-3 before the rows beyond them.
    published = {k for k in PAPER["ML-1M"] if k in STEPS}
    last_published = max(order.index(k) for k in published)
    assert all(order.index(k) > last_published for k in ("binllm_ipv4", "collm_lightgcn", "binllm16", "binllm64"))


def test_same_rows_puts_full_and_subsampled_rows_on_the_subsample(tmp_path):
    from minigpt4.metrics import evaluate_scores

    full = pd.DataFrame({"uid": [1, 1, 1, 2, 2, 2, 3, 3], "iid": [10, 11, 12, 10, 13, 14, 11, 12],
                         "label": [1, 0, 1, 0, 1, 0, 1, 0], "score": [0.9, 0.2, 0.1, 0.3, 0.8, 0.7, 0.6, 0.5]})
    # the subsample: whole users 1 and 2, in another order, scored by another method (negated scores)
    sample = full[full["uid"].isin([1, 2])].sample(frac=1.0, random_state=0).assign(score=lambda d: -d["score"])
    for step, frame in (("binllm", full), ("icl", sample)):
        (tmp_path / step).mkdir()
        frame.to_csv(tmp_path / step / "predictions_test.csv", index=False)
    metrics = {"binllm": {"test": {"auc": 0.6, "uauc": 0.6, "rows": len(full)}},
               "icl": {"test": {"auc": 0.4, "uauc": 0.4, "rows": len(sample)}}}
    result = same_rows(load_test_predictions(tmp_path, metrics), metrics)
    same = {step: (auc, uauc, n) for step, auc, uauc, n in result}
    on_sample = full[full["uid"].isin([1, 2])]
    expect = evaluate_scores(on_sample["uid"].to_numpy(), on_sample["label"].to_numpy(), on_sample["score"].to_numpy())
    assert same["binllm"] == (pytest.approx(expect["auc"]), pytest.approx(expect["uauc"]), 6)
    assert same["icl"][2] == 6 and same["icl"][0] == pytest.approx(1 - expect["auc"])
    report = report_markdown("ml-1m", "cpu", metrics, result)
    assert f"| BinLLM | binllm | {expect['auc']:.4f} | {expect['uauc']:.4f} | 6 |" in report
    # nothing subsampled (the full budget): no such table
    metrics["icl"]["test"]["rows"] = len(full)
    full.to_csv(tmp_path / "icl" / "predictions_test.csv", index=False)
    assert same_rows(load_test_predictions(tmp_path, metrics), metrics) == []


def test_compare_puts_an_encoder_on_the_llm_rows_subsample():
    from minigpt4.experiments.spread import compare
    from minigpt4.metrics import evaluate_scores

    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(30), 6)
    labels = rng.integers(0, 2, size=len(users))
    encoder = pd.DataFrame({"uid": users, "iid": np.arange(len(users)), "label": labels,
                            "score": labels + rng.normal(scale=1.0, size=len(users))})
    llm = encoder[encoder["uid"] < 12].assign(score=lambda d: d["label"] + rng.normal(scale=3.0, size=len(d)))
    preds = {"binmf": encoder, "binllm": llm}
    [(a, b, n, d_auc, d_uauc, sd_auc, sd_uauc)] = compare(preds, [("binllm", "binmf"), ("binllm", "tallrec")])
    on = encoder[encoder["uid"] < 12]
    expect = (evaluate_scores(llm["uid"], llm["label"], llm["score"])["auc"]
              - evaluate_scores(on["uid"], on["label"], on["score"])["auc"])
    assert (a, b, n) == ("binllm", "binmf", len(llm)) and d_auc == pytest.approx(expect)
    assert sd_auc > 0 and sd_uauc > 0
    # no rows in common, or a single user: nothing to compare
    assert compare({"binllm": llm, "binmf": encoder[encoder["uid"] >= 12]}, [("binllm", "binmf")]) == []
    assert compare({"binllm": llm[llm["uid"] == 0], "binmf": encoder}, [("binllm", "binmf")]) == []


def test_sample_spread_measures_how_much_the_draw_of_the_subsample_moves_a_row(tmp_path):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(60), rng.integers(2, 30, size=60))
    labels = rng.integers(0, 2, size=len(users))
    frames = {"binllm": rng.normal(size=len(users)),  # uninformative scores: the draw moves AUC a lot
              "collm_mf": labels.astype(float)}       # perfect scores: every draw gives AUC 1
    metrics = {}
    for step, score in frames.items():
        (tmp_path / step).mkdir()
        pd.DataFrame({"uid": users, "iid": np.arange(len(users)), "label": labels, "score": score}).to_csv(
            tmp_path / step / "predictions_test.csv", index=False)
        metrics[step] = {"test": {"auc": 0.5, "uauc": 0.5, "rows": len(users)}}
    preds = load_test_predictions(tmp_path, metrics)
    spread = {step: (a, u) for step, a, u in sample_spread(preds, 200, draws=20)}
    assert spread["collm_mf"] == (pytest.approx(0.0), pytest.approx(0.0))
    assert spread["binllm"][0] > 0.01 and spread["binllm"][1] > 0.01
    # a bigger sample varies less; a sample as big as the split does not vary, and is left out
    bigger = {step: (a, u) for step, a, u in sample_spread(preds, 600, draws=20)}
    assert bigger["binllm"][0] < spread["binllm"][0]
    assert sample_spread(preds, len(users), draws=5) == []
    # the report states it under the same-rows table
    same = [("binllm", 0.55, 0.5, 200), ("collm_mf", 1.0, 1.0, 200)]
    report = report_markdown("ml-1m", "cpu", metrics, same, sample_spread(preds, 200, draws=20))
    assert (f"| BinLLM | binllm | ±{spread['binllm'][0]:.4f} | ±{spread['binllm'][1]:.4f} | +0.0500 | +0.0000 |"
            in report)


def test_report_says_when_its_runs_came_from_an_uncommitted_tree():
    dirty = report_markdown("ml-1m", "cpu", {}, env={"git_commit": "a" * 40, "git_dirty": True})
    clean = report_markdown("ml-1m", "cpu", {}, env={"git_commit": "b" * 40, "git_dirty": False})
    assert "uncommitted changes" in dirty and "`aaaaaaaaaa`" in dirty
    assert "clean tree" in clean and "uncommitted" not in clean


def test_report_names_the_code_of_every_run_and_of_each_resumption(tmp_path):
    from minigpt4.experiments.report import run_commits

    envs = {"mf": {"git_commit": "a" * 40, "git_dirty": False},
            "binllm": {"git_commit": "b" * 40, "git_dirty": True,
                       "resumes": [{"step": 300, "git_commit": "a" * 40, "git_dirty": False},
                                   {"step": 300, "git_commit": "a" * 40, "git_dirty": False}]}}
    for step, env in envs.items():
        (tmp_path / step).mkdir()
        (tmp_path / step / "environment.json").write_text(json.dumps(env))
    code = run_commits(tmp_path, ["mf", "binllm", "tallrec"])  # tallrec: no environment.json
    assert code == {("a" * 40, False): ["mf", "binllm from step 300"], ("b" * 40, True): ["binllm"],
                    (None, None): ["tallrec"]}
    report = report_markdown("ml-1m", "cpu", {}, env={"git_commit": "c" * 40, "git_dirty": False}, runs_code=code)
    assert "Report written at commit `cccccccccc`, clean tree." in report
    assert ("`aaaaaaaaaa`, clean tree: mf, binllm from step 300; `bbbbbbbbbb` plus uncommitted changes: binllm; "
            "unknown: tallrec.") in report
    assert "not reproduced exactly by any commit" in report
    clean = report_markdown("ml-1m", "cpu", {}, env={"git_commit": "c" * 40, "git_dirty": False},
                            runs_code={("a" * 40, False): ["mf"]})
    assert "`aaaaaaaaaa`, clean tree: mf." in clean and "not reproduced" not in clean


def test_report_names_the_warm_and_cold_rule_of_each_row():
    metrics = {"mf": {"test_warm": {"auc": 0.7, "uauc": 0.6, "rows": 10},
                      "warm_cold_rules": {"warm_rule": "train_rows", "cold_rule": "not_cold"}},
               "binllm": {"test_warm": {"auc": 0.7, "uauc": 0.6, "rows": 10},
                          "warm_cold_rules": {"warm_rule": "not_cold", "cold_rule": "unseen"}},
               "tallrec": {"test_warm": {"auc": 0.7, "uauc": 0.6, "rows": 10}}}
    report = report_markdown("ml-1m", "cpu", metrics)
    assert "mf train_rows / not_cold" in report and "binllm not_cold / unseen" in report
    assert "tallrec not recorded" in report


def _doc_tables():
    """docs/PAPER_RESULTS.md's tables: {section heading: [[cell, ...], ...]} (header and separator rows left out)."""
    out, section = {}, None
    for line in (REPO_ROOT / "docs" / "PAPER_RESULTS.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("|") and not line.startswith("|---"):
            out.setdefault(section, []).append([c.strip() for c in line.strip("|").split("|")])
    return {k: rows[1:] for k, rows in out.items()}


def test_paper_numbers_are_those_of_docs_paper_results():
    from minigpt4.experiments.definitions import PAPER_COMPRESSION, PAPER_WARM_COLD, TABLES

    doc = _doc_tables()
    main_table = next(rows for title, rows in doc.items() if title.startswith("Main comparison"))
    key_of = {label: key for label, _, _, key, _ in TABLES["main"].rows if key}
    assert {key_of[r[1]] for r in main_table} == {k for k in key_of.values()}
    ablations = next(rows for title, rows in doc.items() if title.startswith("Ablations"))
    ablation_key = {"BinMF": "binmf", "BinLLM-TO": "tallrec", "BinLLM-IO": "binllm_io", "BinLLM-IT": "binllm_it",
                    "BinLLM (two-step)": "binllm"}
    rows = [(key_of[r[1]], r[2:]) for r in main_table]
    rows += [(next(v for k, v in ablation_key.items() if r[0].startswith(k)), r[1:]) for r in ablations]
    for key, cells in rows:
        assert PAPER["ML-1M"][key] == (float(cells[0]), float(cells[1])), key
        assert PAPER["Book"][key] == (float(cells[2]), float(cells[3])), key
    assert set(PAPER["ML-1M"]) == set(PAPER["Book"]) == {key for key, _ in rows}
    # Figure 2: per subset, AUC of MF, TALLRec, CoLLM, BinLLM, then their UAUC
    warm_cold = next(rows for title, rows in doc.items() if title.startswith("Warm / cold"))
    for r in warm_cold:
        column, subset = r[0].split()
        values = [float(c.lstrip("≈")) for c in r[1:]]
        for i, step in enumerate(("mf", "tallrec", "collm_mf", "binllm")):
            assert PAPER_WARM_COLD[column][f"{step}/{subset}"] == (values[i], values[i + 4]), r[0]
    assert sum(len(v) for v in PAPER_WARM_COLD.values()) == len(warm_cold) * 4
    # Figure 3: AUC binary, AUC dot-decimal, UAUC binary, UAUC dot-decimal
    compression = next(rows for title, rows in doc.items() if title.startswith("Compression"))
    for r in compression:
        v = [float(c.lstrip("≈")) for c in r[1:]]
        assert PAPER_COMPRESSION[r[0]] == {"binllm": (v[0], v[2]), "binllm_ipv4": (v[1], v[3])}, r[0]


def test_malformed_experiment_files_name_the_file_and_key(tmp_path, monkeypatch):
    from minigpt4.experiments import definitions

    for name in ("steps.yaml", "budgets.yaml", "paper_results.yaml", "tables.yaml"):
        (tmp_path / name).write_text((definitions.HERE / name).read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(definitions, "HERE", tmp_path)
    steps = tmp_path / "steps.yaml"
    good = steps.read_text(encoding="utf-8")
    steps.write_text(good.replace("binmf: {stage: collab, method: binmf}", "binmf: {stage: colab, method: binmf}"),
                     encoding="utf-8")
    with pytest.raises(definitions.ReproduceError, match=r"steps.yaml: steps.binmf.stage is 'colab'; stages are"):
        definitions._load_steps()
    steps.write_text(good.replace("encoder: binmf16", "encoder: binmf32"), encoding="utf-8")
    with pytest.raises(definitions.ReproduceError, match=r"steps.binllm16.encoder 'binmf32' is not a step"):
        definitions._load_steps()
    budgets = tmp_path / "budgets.yaml"
    budgets_good = budgets.read_text(encoding="utf-8")
    budgets.write_text(budgets_good.replace("    sub_test: [run.max_eval_rows=40]\n", ""),
                       encoding="utf-8")
    with pytest.raises(definitions.ReproduceError, match=r"budgets.yaml: key 'budgets.smoke.sub_test' is missing"):
        definitions._load_budgets(definitions.DATASETS)
    budgets.write_text(budgets_good, encoding="utf-8")
    assert definitions._load_budgets(definitions.DATASETS)[0]["cpu"]["datasets"]["ml-100k"]["sub_test"]
    with pytest.raises(definitions.ReproduceError, match=r"budgets.cpu.datasets.ml-100k: not a dataset of steps.yaml"):
        definitions._load_budgets({"ml-1m": {}})
    paper = tmp_path / "paper_results.yaml"
    paper.write_text(paper.read_text(encoding="utf-8").replace("mf: [0.6482, 0.6361]", "mf: [0.6482]"),
                     encoding="utf-8")
    with pytest.raises(definitions.ReproduceError, match=r"tables.ML-1M.mf must be \[AUC, UAUC\], got \[0.6482\]"):
        definitions._load_paper(definitions.DATASETS)
    tables = tmp_path / "tables.yaml"
    tables.write_text(tables.read_text(encoding="utf-8").replace("[SASRec, sasrec,", "[SASRec, sasrek,"),
                      encoding="utf-8")
    paper_all = {"tables": definitions.PAPER, "warm_cold": definitions.PAPER_WARM_COLD,
                 "compression": definitions.PAPER_COMPRESSION}
    with pytest.raises(definitions.ReproduceError, match=r"tables.main.rows\[2\]: step 'sasrek' is not in steps.yaml"):
        definitions._load_tables(definitions.STEPS, paper_all)
    tables.write_text(tables.read_text(encoding="utf-8").replace("[SASRec, sasrek,", "[SASRec, sasrec,").replace(
        "[binllm, tallrec]", "[binllm, talrec]"), encoding="utf-8")
    with pytest.raises(definitions.ReproduceError, match=r"comparisons\[0\] must be \[step, other step\] of "
                                                          r"steps.yaml, got \['binllm', 'talrec'\]"):
        definitions._load_tables(definitions.STEPS, paper_all)


def test_ml100k_plan_runs_every_step_from_its_own_configs(tmp_path):
    """ML-100K: every step of the plan, each from train_configs/ml100k_<method>.yaml, on its own data and runs."""
    for budget in ("smoke", "cpu", "full"):
        steps, runs, data = plan("ml-100k", budget, tmp_path)
        assert [s.name for s in steps] == list(ALL_STEPS), budget
        assert runs == tmp_path / "ml-100k" / budget / "runs" and data == REPO_ROOT / "data" / "ml-100k"
        for s in steps:
            assert s.config == str(REPO_ROOT / "train_configs" / f"ml100k_{ALL_STEPS[s.name].method}.yaml"), s.name
            assert f"datasets.movie_ood.path={data}" in s.overrides and f"run.output_dir={runs}" in s.overrides
            cfg = load_config(s.config, s.overrides)
            assert cfg.run.output_dir == str(runs)
            if cfg.model.get("ckpt"):
                assert cfg.model.ckpt == str(runs / "tallrec" / "checkpoint_best"), s.name
    assert parse_args(["--dataset", "ml-100k", "--budget", "smoke"]).dataset == "ml-100k"
    # the paper budget follows the paper's protocol, which has no ML-100K
    with pytest.raises(ReproduceError, match="has none for ml-100k"):
        plan("ml-100k", "paper", tmp_path)


def test_report_without_paper_numbers_compares_the_rows_with_each_other(tmp_path):
    """ML-100K has no published numbers: no paper or difference columns and no target line; each LLM row shows its
    spread over redraws of the test users instead."""
    from minigpt4.metrics import evaluate_scores, redraw_difference, redraw_spread

    folder = tmp_path / "ml-100k" / "cpu"
    runs = folder / "runs"
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), rng.integers(2, 15, size=40))
    labels = rng.integers(0, 2, size=len(users))
    metrics, expect = {}, {}
    for step, noise in (("tallrec", 2.0), ("binllm", 0.5)):
        score = labels + rng.normal(scale=noise, size=len(users))
        (runs / step).mkdir(parents=True)
        pd.DataFrame({"uid": users, "iid": np.arange(len(users)), "label": labels, "score": score}).to_csv(
            runs / step / "predictions_test.csv", index=False)
        metrics[step] = {"test": {"auc": 0.6, "uauc": 0.55, "rows": len(users)},
                         "test_warm": {"auc": 0.61, "uauc": 0.56, "rows": 10}}
        expect[step] = redraw_spread(users, labels, score)
    metrics["binmf"] = {"test": {"auc": 0.65, "uauc": 0.6, "rows": len(users)}}
    (runs / "binmf").mkdir()
    for step, m in metrics.items():
        (runs / step / "metrics.json").write_text(json.dumps(m), encoding="utf-8")
    (folder / "environment.json").write_text("{}", encoding="utf-8")
    write_report(folder, "ml-100k", "cpu", None, ran_here=False)
    report = (folder / "report.md").read_text(encoding="utf-8")
    assert "paper AUC" not in report and "| Δ AUC | Δ UAUC | rows |" not in report
    assert "Target of the cpu budget" not in report
    assert "The paper (BinLLM) has no numbers for ml-100k, so the rows are compared with each other" in report
    assert "smaller than about twice that spread is not a finding" in report
    assert report.count("| method | step | AUC | UAUC | sd AUC / UAUC | rows |") == 5  # every table
    assert expect["binllm"][0] > 0 and expect["tallrec"][1] > 0
    for label, step in (("BinLLM", "binllm"), ("TALLRec", "tallrec")):
        sd = expect[step]
        assert (f"| {label} | {step} | 0.6000 | 0.5500 | ±{sd[0]:.4f} / ±{sd[1]:.4f} | {len(users)} |"
                in report), step
    assert "| BinMF | binmf | 0.6500 | 0.6000 | – |" in report  # the spread is the LLM rows'
    assert "| BinLLM warm | binllm | 0.6100 | 0.5600 | – | 10 |" in report  # the spread is the test split's
    assert "| CTRL (DIN) | ctrl | not run | not run | – | – |" in report
    assert "| MF | mf | not run | not run | – | – |" in report
    # one user: no redraw can move the row, so it shows no spread rather than ±0
    one_user = pd.DataFrame({"uid": [7] * 6, "iid": range(6), "label": [0, 1] * 3, "score": np.arange(6.0)})
    assert redraw_spreads({"icl": one_user}) == {}
    # the paper's claims as pairs on the same rows: BinLLM - TALLRec from their predictions, with the spread of the
    # difference; BinMF has no predictions here, so no BinLLM - BinMF line
    rows = pd.read_csv(runs / "binllm" / "predictions_test.csv").merge(
        pd.read_csv(runs / "tallrec" / "predictions_test.csv"), on=["uid", "iid", "label"])
    d_auc = (evaluate_scores(rows["uid"], rows["label"], rows["score_x"])["auc"]
             - evaluate_scores(rows["uid"], rows["label"], rows["score_y"])["auc"])
    sd = redraw_difference(rows["uid"], rows["label"], rows["score_x"], rows["score_y"])
    assert d_auc > 2 * sd[0] > 0  # less noise, a clearly better row
    assert f"| BinLLM | TALLRec | {len(users)} | {d_auc:+.4f} |" in report and f"±{sd[0]:.4f}" in report
    assert "| BinLLM | BinMF |" not in report
    # a dataset with the paper's numbers keeps them next to ours, without the spread
    paper = report_markdown("ml-1m", "cpu", metrics)
    assert "| paper AUC | paper UAUC | Δ AUC | Δ UAUC |" in paper and "sd AUC / UAUC" not in paper
    assert "Target of the cpu budget" in paper


def test_a_recorded_zero_shot_step_is_rebuilt_for_its_ranking(first, tmp_path):
    """ICL trains nothing, so its rebuild for a ranking step (which reads its run directory) scores only a few rows
    instead of none (an evaluation must score something); its row stays its record."""
    import shutil

    folder = first["folder"]
    main(_argv(first["out"], first["llama"], first["data"]) + ["--report"])
    out = tmp_path / "clone"
    other = out / "ml-1m" / "smoke"
    other.mkdir(parents=True)
    shutil.copytree(folder / "steps", other / "steps")
    shutil.copy(folder / "differences.json", other / "differences.json")
    assert main(_argv(out, first["llama"], first["data"], only="rank_icl")) == {"icl": "rebuilt", "rank_icl": "ran"}
    rebuilt = json.loads((other / "runs" / "icl" / "metrics.json").read_text(encoding="utf-8"))
    assert "test" not in rebuilt and rebuilt["valid"]["rows"] <= 40
    assert (other / "steps" / "icl.json").read_text(encoding="utf-8") == (folder / "steps" / "icl.json").read_text(
        encoding="utf-8")
    assert json.loads((other / "steps" / "rank_icl.json").read_text(encoding="utf-8"))["metrics"]


def test_records_let_a_reproduction_continue_on_another_machine(first, tmp_path, monkeypatch, capsys):
    """Each finished step leaves a record (numbers only) beside the report. A clone with the records but no runs/
    (another machine) reuses them, reports them, and runs a recorded step again only for a checkpoint that a step
    to run reads."""
    import shutil

    from minigpt4.experiments import records

    folder, runs = first["folder"], first["folder"] / "runs"
    main(_argv(first["out"], first["llama"], first["data"]) + ["--report"])
    for step in ONLY.split(","):
        record = json.loads((folder / "steps" / f"{step}.json").read_text(encoding="utf-8"))
        assert record["metrics"] == json.loads((runs / step / "metrics.json").read_text(encoding="utf-8"))
        assert record["environment"]["git_commit"] and "runs" not in json.dumps(record["environment"])
    binllm = json.loads((folder / "steps" / "binllm.json").read_text(encoding="utf-8"))
    assert set(binllm["reads"]) == {"tallrec", "binmf"} and binllm["config"]["run"]["job_id"] == "binllm"
    pairs = json.loads((folder / "differences.json").read_text(encoding="utf-8"))
    assert {(d["first"], d["second"]) for d in pairs} >= {("binllm", "tallrec"), ("binllm", "binmf")}

    # another machine: the committed records and pairs, no runs/
    out = tmp_path / "clone"
    other = out / "ml-1m" / "smoke"
    other.mkdir(parents=True)
    shutil.copytree(folder / "steps", other / "steps")
    shutil.copy(folder / "differences.json", other / "differences.json")
    calls = _counting(monkeypatch)
    assert main(_argv(out, first["llama"], first["data"])) == {s: "recorded" for s in ONLY.split(",")}
    assert calls == []
    report = (other / "report.md").read_text(encoding="utf-8")
    assert "Steps known from their records only" in report and "binllm" in report.split("records only")[1][:200]
    ours = binllm["metrics"]["test"]
    assert any(line.startswith("| BinLLM | binllm |") and f"{ours['auc']:.4f}" in line for line in report.splitlines())
    assert "| BinLLM | TALLRec |" in report  # the pair kept from the machine that had both runs
    # a step to run that reads the stage-1 adapter and the encoder: both are trained again for their checkpoints
    # (the adapter without scoring), and their rows stay their records
    capsys.readouterr()
    tallrec_record = (other / "steps" / "tallrec.json").read_text(encoding="utf-8")
    done = main(_argv(out, first["llama"], first["data"], only="binllm_io"))
    assert done == {"binmf": "rebuilt", "tallrec": "rebuilt", "binllm_io": "ran"}
    assert "a step that runs reads its checkpoint" in capsys.readouterr().out
    assert "test" not in json.loads((other / "runs" / "tallrec" / "metrics.json").read_text(encoding="utf-8"))
    assert (other / "steps" / "tallrec.json").read_text(encoding="utf-8") == tallrec_record
    io = json.loads((other / "steps" / "binllm_io.json").read_text(encoding="utf-8"))
    binmf = json.loads((folder / "steps" / "binmf.json").read_text(encoding="utf-8"))
    assert io["reads"] == {"tallrec": None, "binmf": records.test_key(binmf["metrics"])}
    report = (other / "report.md").read_text(encoding="utf-8")
    tallrec = json.loads(tallrec_record)["metrics"]["test"]
    assert any(line.startswith("| TALLRec | tallrec |") and f"{tallrec['auc']:.4f}" in line
               for line in report.splitlines())
    assert "binllm_io read tallrec trained again on its machine for the checkpoint, not scored" in report
    assert "binllm_io read binmf" not in report  # the same machine trained the same encoder: nothing to flag
    assert main(_argv(out, first["llama"], first["data"], only="binllm_io")) == {
        "binmf": "reused", "tallrec": "reused", "binllm_io": "reused"}
    main(_argv(out, first["llama"], first["data"], only="binllm_io") + ["--plan"])
    assert "rebuilt here for its checkpoint" in capsys.readouterr().out
    # a record made with other settings than the plan's is stale, as a run would be
    steps, _, _ = plan("ml-1m", "smoke", out, data=first["data"], llama=first["llama"])
    changed = dict(binllm, config={**binllm["config"], "run": {**binllm["config"]["run"], "seed": 99}})
    known = records.load(other / "runs")
    known["binllm"] = changed
    stale = stale_steps(steps, other / "runs", known)
    assert "binllm" in stale and "run.seed: 99 -> " in stale["binllm"] and "its record was made" in stale["binllm"]
    assert "icl" not in stale and "tallrec" not in stale
    # a broken record is named, not skipped (skipping it would run the step again for hours)
    (other / "steps" / "icl.json").write_text("{", encoding="utf-8")
    with pytest.raises(ReproduceError, match="icl.json: not valid JSON"):
        records.load(other / "runs")


def test_a_kept_pair_and_a_recorded_row_follow_the_numbers_they_came_from(tmp_path):
    from minigpt4.experiments import records
    from minigpt4.experiments.report import changed_inputs

    runs = tmp_path / "runs"
    a = {"test": {"auc": 0.7, "uauc": 0.6}}
    b = {"test": {"auc": 0.5, "uauc": 0.5}}
    kept = records.merge_differences(runs, [("binllm", "tallrec", 100, 0.2, 0.1, 0.03, 0.04)],
                                     {"binllm": a, "tallrec": b})
    assert kept == [("binllm", "tallrec", 100, 0.2, 0.1, 0.03, 0.04)]
    assert records.merge_differences(runs, [], {"binllm": a, "tallrec": b}) == kept  # read back from the file
    # tallrec ran again with other numbers: the pair no longer describes the report's rows
    assert records.merge_differences(runs, [], {"binllm": a, "tallrec": {"test": {"auc": 0.51, "uauc": 0.5}}}) == []
    recorded = {"binllm": {"binmf": [0.69, 0.68], "tallrec": [0.5, 0.5]}}
    assert changed_inputs(recorded, {"binmf": {"test": {"auc": 0.69, "uauc": 0.68}}, "tallrec": b}) == []
    lines = changed_inputs(recorded, {"binmf": {"test": {"auc": 0.6968, "uauc": 0.68}}, "tallrec": b})
    assert lines == ["binllm read binmf with test AUC 0.6900; the report's binmf row shows 0.6968 (trained on "
                     "another machine or code)"]
    assert changed_inputs({"binllm_io": {"tallrec": None}}, {"tallrec": b}) == [
        "binllm_io read tallrec trained again on its machine for the checkpoint, not scored; the tallrec row is "
        "tallrec's record"]


def test_report_names_each_llm_rows_precision_and_a_rounded_score_head():
    from minigpt4.experiments.report import precision_line

    line = precision_line({
        "binmf": {"test": {}},  # an encoder: no precision of its own
        "tallrec": {"precision": {"dtype": "fp32"}},
        "binllm": {"precision": {"dtype": "bf16", "score_head": "fp32"}},
        "softprompt": {"precision": {"dtype": "bf16"}},
        "icl": {}})[0]
    assert "fp32: tallrec;" in line and "bf16: binllm;" in line and "not recorded: icl" in line
    assert "bf16 with its scores rounded to bf16 (run before the fp32 score head): softprompt;" in line
    assert "binmf" not in line


def test_a_bf16_run_scored_with_a_rounded_head_runs_again(tmp_path):
    """Before the score head was kept out of autocast, bf16 runs scored with bf16-rounded Yes/No logits (many ties):
    such a run or record is stale, whatever its settings; an fp32 run, or a bf16 one with the fp32 head, is not."""
    steps, runs, _ = plan("ml-100k", "cpu", tmp_path)
    for step, precision in (("softprompt", {"dtype": "bf16"}),
                            ("personprompt", {"dtype": "bf16", "score_head": "fp32"}), ("icl", {"dtype": "fp32"})):
        (runs / step).mkdir(parents=True)
        (runs / step / "metrics.json").write_text(json.dumps({"test": {"auc": 0.5}, "precision": precision}))
    record = {"step": "collm_din", "metrics": {"test": {"auc": 0.7}, "precision": {"dtype": "bf16"}}}
    stale = stale_steps(steps, runs, {"collm_din": record})
    assert set(stale) == {"softprompt", "collm_din"} and "rounded to bf16" in stale["softprompt"]


def test_a_stale_run_here_needs_the_checkpoints_of_what_it_reads(tmp_path):
    """collm_din finished here but must run again; tallrec and din are known from records only: both are rebuilt
    for their checkpoints. Without a step to run, nothing is."""
    from minigpt4.experiments.run import needed_steps

    steps, runs, _ = plan("ml-100k", "cpu", tmp_path, only=["collm_din"])
    (runs / "collm_din").mkdir(parents=True)
    (runs / "collm_din" / "metrics.json").write_text("{}")
    known = {"tallrec": {}, "din": {}}
    assert needed_steps(steps, runs, {"collm_din": "settings changed"}, known) == {"tallrec", "din"}
    assert needed_steps(steps, runs, {}, known) == set()


def test_the_cpu_plan_estimates_every_step_ctrl_included(tmp_path, capsys):
    """--plan prices every step: stage 0, CTRL's alignment (one backbone pass over the rows it aligns), LLM rows."""
    main(["--dataset", "ml-100k", "--budget", "cpu", "--plan", "--out", str(tmp_path / "out"),
          "--data", str(tmp_path / "none")])
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines() if line.strip()[:3].strip(". ").isdigit()}
    assert {"ctrl_align", "ctrl", "din", "tallrec", "binllm"} <= set(lines)
    assert "after ctrl_align" in lines["ctrl"] and "~40 min" in lines["ctrl_align"]  # 8,000 rows at 3.5 rows/s
    assert "estimated time of the steps to run" in out and not (tmp_path / "out").exists()


def test_the_plan_of_a_fresh_clone_counts_the_committed_records(tmp_path, capsys):
    """A clone where nothing ran yet (no runs/, no data) plans from its committed records: a recorded step is not
    priced as a step to run, and one that a step to run reads is marked as trained again for its checkpoint."""
    import shutil

    steps = tmp_path / "out" / "ml-100k" / "cpu" / "steps"
    steps.mkdir(parents=True)
    for step in ("binmf", "tallrec", "binllm"):  # binllm and its dependencies recorded; rank_binllm not
        shutil.copy(REPO_ROOT / "results" / "ml-100k" / "cpu" / "steps" / f"{step}.json", steps)
    argv = ["--dataset", "ml-100k", "--budget", "cpu", "--plan", "--out", str(tmp_path / "out"),
            "--data", str(tmp_path / "none")]
    main(argv + ["--only", "binllm"])
    out = capsys.readouterr().out
    assert "[recorded (steps/), reused]" in out and "~" not in out.split("binllm.yaml")[1].splitlines()[0]
    assert "~0.0 h" in out
    main(argv + ["--only", "rank_binllm"])
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines() if line[:4].strip()[:1].isdigit()}
    assert "trained again for its checkpoint" in lines["binllm"] and "[to run]" in lines["rank_binllm"]
    assert not (tmp_path / "out" / "ml-100k" / "cpu" / "runs").exists()
    for step in steps.glob("*.json"):
        step.unlink()
    main(argv + ["--only", "binllm"])
    assert "[to run]" in capsys.readouterr().out


def test_a_key_the_schema_gained_after_a_run_at_its_default_is_no_change(tmp_path):
    """Records made before a schema key existed stay valid while the key keeps its default (model.ctrl came after
    every ML-100K record); a missing key set away from its default is a change."""
    from omegaconf import OmegaConf

    from minigpt4.experiments.records import config_changes

    step = next(s for s in plan("ml-100k", "cpu", tmp_path, data=tmp_path)[0] if s.name == "binllm")
    then = OmegaConf.to_container(load_config(step.config, step.overrides))
    assert config_changes(step, then) == {}
    del then["model"]["ctrl"]  # made before the key existed: the key is at its default now
    assert config_changes(step, then) == {}
    init_lr = then["run"].pop("init_lr")  # absent then, but the config sets it away from the schema's 1e-4
    assert init_lr != 1e-4 and config_changes(step, then) == {"run.init_lr": (None, init_lr)}


# ------------------------------------------------------------------------------------------------------- ranking
RANKED = "rank_binmf,rank_tallrec"


def test_ranking_steps_rank_every_method_row_after_it(tmp_path, monkeypatch):
    """steps.yaml ranking_steps: a step `rank_<step>` per method row of the report (not the code-length variants nor
    CTRL's alignment), after every other step, wired to the run it ranks; --only rank_<step> brings that step."""
    from minigpt4.experiments import definitions
    from minigpt4.experiments.definitions import STEP_LABEL
    from minigpt4.experiments.plan import estimate_minutes

    ranked = [spec.ranks for spec in RANKING_STEPS.values()]
    assert set(ranked) <= set(STEPS) and list(RANKING_STEPS) == [f"rank_{s}" for s in ranked]
    rows = {s for s in STEP_LABEL if s is not None}
    assert set(ranked) == rows - {"binmf16", "binmf64", "binllm16", "binllm64"} and "ctrl_align" not in ranked
    assert {spec.stage for spec in RANKING_STEPS.values()} == {"ranking"}
    assert not set(RANKING_STEPS) & set(STEPS)  # report.md's steps stay as they were
    steps, runs, _ = plan("ml-1m", "cpu", tmp_path, data=tmp_path, options=["run.batch_size_eval=64"])
    order = [s.name for s in steps]
    assert order == list(STEPS) + list(RANKING_STEPS)
    for step in steps[len(STEPS):]:
        assert step.depends == [step.ranks] and step.config == str(REPO_ROOT / "train_configs" / "ml1m_rank.yaml")
        cfg = load_config(step.config, step.overrides)
        assert cfg.run.rank_run == str(runs / step.ranks) and cfg.run.job_id == step.name
        assert cfg.run.output_dir == str(runs) and cfg.run.device == "cpu" and cfg.run.batch_size_eval == 64
        assert step.overrides[-1] == "run.batch_size_eval=64" and step.machine_keys == ("run.batch_size_eval",)
        # an LLM ranks 200 users x 1 positive x 20 candidates at the scoring speed; an encoder in a minute
        llm = stages.get(STEPS[step.ranks].stage).llm
        speedup = definitions.CPU_SPEED["rank_speedup"]
        assert estimate_minutes(step, "ml-1m") == (pytest.approx(4000 / (3.5 * speedup) / 60) if llm else 1), step.name
    only, _, _ = plan("ml-1m", "smoke", tmp_path, data=tmp_path, only=["rank_binllm"])
    assert [s.name for s in only] == ["binmf", "tallrec", "binllm", "rank_binllm"]
    # a name that is not a step is named with its file
    for name in ("steps.yaml", "budgets.yaml", "paper_results.yaml", "tables.yaml"):
        (tmp_path / name).write_text((definitions.HERE / name).read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(definitions, "HERE", tmp_path)
    text = (tmp_path / "steps.yaml").read_text(encoding="utf-8")
    (tmp_path / "steps.yaml").write_text(text.replace("ranking_steps: [binmf,", "ranking_steps: [binmff,"),
                                         encoding="utf-8")
    with pytest.raises(ReproduceError, match=r"steps.yaml: ranking_steps: 'binmff' is not a step"):
        definitions._load_steps()


@pytest.fixture(scope="module")
def ranked(tiny_llama, synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ranking")
    calls = []
    real = cli.main

    def counted(stage, description, argv=None):
        calls.append((stage, argv))
        return real(stage, description, argv)

    cli.main = counted
    try:
        done = main(_argv(out, tiny_llama, synthetic_dir, only=RANKED))
    finally:
        cli.main = real
    return {"out": out, "done": done, "calls": calls, "folder": out / "ml-1m" / "smoke", "llama": tiny_llama,
            "data": synthetic_dir}


def _ranking_row(text, label, step):
    return next(line for line in text.splitlines() if line.startswith(f"| {label} | {step} | "))


def _shows(text, label, step, m):
    """ranking.md's row of `step` holds m's users, positives and every metric with its sd, as rank.py wrote them."""
    row = _ranking_row(text, label, step)
    cells = [f"{m['users']}", f"{m['positives']}"] + [
        f"{m['metrics'][k]:.4f} ± {m['sd_over_user_redraws'][k]:.4f}"
        for k in ("hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr")]
    assert row == "| " + " | ".join([label, step, *cells]) + " |"


def test_ranking_steps_run_after_what_they_rank_on_the_same_candidates(ranked, monkeypatch):
    assert ranked["done"] == {"binmf": "ran", "tallrec": "ran", "rank_binmf": "ran", "rank_tallrec": "ran"}
    runs = ranked["folder"] / "runs"
    order = [argv[argv.index("--options") + 1:] for _, argv in ranked["calls"]]
    jobs = [next(o for o in opts if o.startswith("run.job_id=")).split("=")[1] for opts in order]
    assert jobs.index("rank_binmf") > jobs.index("binmf") and jobs.index("rank_tallrec") > jobs.index("tallrec")
    assert [stage for stage, _ in ranked["calls"]][-2:] == ["ranking", "ranking"]
    assert f"run.rank_run={runs / 'tallrec'}" in order[jobs.index("rank_tallrec")]
    metrics = {s: json.loads((runs / f"rank_{s}" / "metrics.json").read_text()) for s in ("binmf", "tallrec")}
    assert metrics["binmf"]["candidates"] == metrics["tallrec"]["candidates"] == str(runs / "ranking_candidates.json")
    assert metrics["binmf"]["settings"] == metrics["tallrec"]["settings"]
    assert metrics["tallrec"]["ranked_run"] == str(runs / "tallrec")
    assert (metrics["binmf"]["users"], metrics["binmf"]["negatives"]) == (20, 9)  # the smoke budget's
    text = (ranked["folder"] / "ranking.md").read_text(encoding="utf-8")
    _shows(text, "BinMF", "binmf", metrics["binmf"])
    _shows(text, "TALLRec", "tallrec", metrics["tallrec"])
    assert _ranking_row(text, "MF", "mf").startswith("| MF | mf | not run yet |")
    assert "Every row ranks the same candidates" in text and "did NOT rank the same candidates" not in text
    assert "HR@10 = 10/(1+N) = 1.0000" in text and "seed 0" in text and "never interacted with" in text
    assert "ties count against the positive" in text and "Ranking steps finished: 2 of 18." in text
    assert "Code of the runs" in text and "rank_binmf, rank_tallrec" in text.split("Code of the runs")[1]
    report = (ranked["folder"] / "report.md").read_text(encoding="utf-8")  # report.md leaves the ranking steps out
    assert "rank_" not in report and "Steps finished: 2 of 23" in report
    # a second invocation reuses every run, the ranking steps' too
    calls = _counting(monkeypatch)
    done = main(_argv(ranked["out"], ranked["llama"], ranked["data"], only=RANKED))
    assert calls == [] and set(done.values()) == {"reused"}
    assert (ranked["folder"] / "ranking.md").read_text(encoding="utf-8") == text


def test_ranking_rows_live_on_in_their_records_and_rerun_when_their_settings_change(ranked, tmp_path, monkeypatch,
                                                                                   capsys):
    import shutil

    from minigpt4.experiments import records
    from minigpt4.experiments.definitions import BUDGETS

    folder, runs = ranked["folder"], ranked["folder"] / "runs"
    text = (folder / "ranking.md").read_text(encoding="utf-8")
    for step in ("binmf", "tallrec"):
        record = json.loads((folder / "steps" / f"rank_{step}.json").read_text(encoding="utf-8"))
        assert record["metrics"] == json.loads((runs / f"rank_{step}" / "metrics.json").read_text(encoding="utf-8"))
        ranked_metrics = json.loads((runs / step / "metrics.json").read_text(encoding="utf-8"))
        assert record["reads"] == {step: records.test_key(ranked_metrics)} and record["redraw_sd"] is None
        assert record["environment"]["git_commit"] and record["config"]["run"]["job_id"] == f"rank_{step}"
    assert set(records.load(runs)) == {"binmf", "tallrec", "rank_binmf", "rank_tallrec"}
    # another machine: the records, no runs/; the report written from them alone shows the same rows
    other = tmp_path / "clone" / "ml-1m" / "smoke"
    other.mkdir(parents=True)
    shutil.copytree(folder / "steps", other / "steps")
    argv = _argv(tmp_path / "clone", ranked["llama"], ranked["data"], only=RANKED)
    assert main(argv + ["--report"]) == {}
    again = (other / "ranking.md").read_text(encoding="utf-8")
    assert "Rows known from their records only (`steps/<step>.json`): rank_binmf, rank_tallrec." in again
    for label, step in (("BinMF", "binmf"), ("TALLRec", "tallrec")):
        assert _ranking_row(again, label, step) == _ranking_row(text, label, step)
    calls = _counting(monkeypatch)
    assert main(argv) == {s: "recorded" for s in ("binmf", "tallrec", "rank_binmf", "rank_tallrec")}
    assert calls == []
    # the budget ranks other candidates now: both ranking steps run again on new candidates, what they rank is reused
    monkeypatch.setitem(BUDGETS["smoke"], "ranking", [*BUDGETS["smoke"]["ranking"], "run.rank_negatives=8"])
    capsys.readouterr()
    done = main(_argv(ranked["out"], ranked["llama"], ranked["data"], only=RANKED))
    assert done == {"binmf": "reused", "tallrec": "reused", "rank_binmf": "ran", "rank_tallrec": "ran"}
    out = capsys.readouterr().out
    assert "run.rank_negatives: 9 -> 8" in out and "holds candidates drawn with other settings" in out
    assert (runs / "rank_binmf.stale-1" / "metrics.json").is_file()
    assert (runs / "ranking_candidates.json.stale-1").is_file()
    metrics = json.loads((runs / "rank_tallrec" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["negatives"] == 8
    _shows((folder / "ranking.md").read_text(encoding="utf-8"), "TALLRec", "tallrec", metrics)
