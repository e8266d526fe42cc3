"""benchmark.py: the reference-style path scores like the framework's path, and the benchmark runs end to end."""

import json

import numpy as np
import pandas as pd
import pytest

import benchmark
from minigpt4.batching import TokenizedSplit
from minigpt4.metrics import evaluate_scores, uauc
from minigpt4.prompting import build_prompts, load_prompt
from minigpt4.text_codes import CodeTable

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out


@pytest.fixture(scope="module")
def rec(tiny_llama):
    args = benchmark.parse(["--llama", str(tiny_llama)])
    return benchmark.build(args, __import__("torch").device("cpu"), __import__("torch").float32)


@pytest.mark.parametrize("score_type", ["yes", "yes_minus_no"])
def test_fast_path_metrics_equal_reference_path(rec, synthetic_dir, score_type):
    rows = pd.read_pickle(synthetic_dir / "test_ood2.pkl").iloc[:60].reset_index(drop=True)
    bits = benchmark.random_codes(int(rows["uid"].max()) + 1, int(rows["iid"].max()) + 1)
    prompt = load_prompt(benchmark.PROMPT)
    rec.score_type = score_type
    split = TokenizedSplit(rec.tokenizer, build_prompts(rows, prompt, CodeTable(*bits, mode="binary")), rows, 10**6)
    ours, _ = benchmark.our_score(rec, split, 16, rec.causal_lm.device)
    ref, _ = benchmark.reference_score(rec, rec.tokenizer, rows, prompt, bits, "binary", 16, rec.causal_lm.device)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    fast = evaluate_scores(split.uids, split.labels, ours)
    assert fast["auc"] == pytest.approx(benchmark.auc(split.labels, ref), abs=1e-4)
    assert fast["uauc"] == pytest.approx(benchmark.reference_uauc(split.uids, split.labels, ref), abs=1e-4)


def test_loop_uauc_equals_vectorised_uauc():
    rng = np.random.default_rng(3)
    users, labels = rng.integers(0, 50, 3000), rng.integers(0, 2, 3000)
    scores = np.round(rng.normal(size=3000), 1)  # with ties
    assert uauc(users, labels, scores)[0] == pytest.approx(benchmark.reference_uauc(users, labels, scores), abs=1e-12)


def test_benchmark_writes_its_report(tiny_llama, synthetic_dir, tmp_path):
    out = tmp_path / "bench.json"
    benchmark.run(benchmark.parse(["--llama", str(tiny_llama), "--data", str(synthetic_dir), "--train-rows", "16",
                                   "--score-rows", "24", "--dtype-rows", "8", "--batch-train", "4", "--batch-eval", "8",
                                   "--dtype-steps", "2", "--profile", "--uauc-rows", "20000", "--uauc-users", "300",
                                   "--out", str(out)]))
    report = json.loads(out.read_text())
    for path in ("scoring", "training"):
        for side in ("ours", "reference"):
            m = report[path][side]
            assert m["samples_per_s"] > 0 and m["tokens_per_s"] > 0 and 0 < m["mfu"] and m["peak_memory_gib"] > 0
    scoring = report["scoring"]
    assert scoring["ours_metrics"]["auc"] == pytest.approx(scoring["reference_metrics"]["auc"], abs=1e-4)
    assert set(report["tokens_per_prompt"]) == {"text_only", "binary", "ipv4"}
    assert report["tokens_per_prompt"]["ipv4"] < report["tokens_per_prompt"]["binary"]
    assert 0 <= report["shared_prefix_fraction"] <= 1 and report["uauc"]["abs_diff"] < 1e-9
    # each precision mode scored the same rows; bf16 trained too; compiling moved no score; bf16 moved them a little
    prec = report["precision"]
    assert set(prec) >= set(benchmark.MODES) and prec["rows"] == 8
    for mode in benchmark.MODES:
        assert prec[mode]["scoring"]["samples_per_s"] > 0 and 0 < prec[mode]["scoring"]["mfu"]
    # every mode trained; the compiled mode trained through its compiled forward (run.compile_train)
    for mode in benchmark.MODES:
        assert prec[mode]["training"]["samples_per_s"] > 0 and prec[mode]["first_step_s"] > 0
    assert prec["bf16+compile"]["vs_fp32"]["pearson"] > 0.999 and prec["bf16"]["vs_fp32"]["pearson"] > 0.999
    assert 0 < prec["bf16"]["vs_fp32"]["max_abs_score_diff"] < 0.15 * prec["bf16"]["vs_fp32"]["score_sd"]
    assert report["auto_precision"]["dtype"] == "fp32"  # the suite pins BINLLM_CPU_BF16=0
    assert set(report["matmul_flops"]) == {"fp32", "bf16"}
    assert set(report["profile"]) == {"fp32", "bf16"} and (tmp_path / "profile_bf16.txt").is_file()
    assert 0 < sum(op["share"] for op in report["profile"]["fp32"]) <= 1


def test_ranking_benchmark_reports_the_token_bound_and_equal_scores(tiny_llama, synthetic_dir, tmp_path):
    """`benchmark.py --ranking`: shared-prefix against pointwise scoring of the same candidate prompts; the bound is
    the prompts' own K(P+S) / (P+KS) and the two paths give the same scores."""
    out = tmp_path / "ranking.json"
    report = benchmark.run(benchmark.parse(["--ranking", "--llama", str(tiny_llama), "--rank-data", str(synthetic_dir),
                                            "--rank-users", "3", "--rank-k", "6", "--rank-batch", "8",
                                            "--rank-sweep", "2,4", "--rank-reps", "2", "--out", str(out)]))
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    r = report["ranking"]
    assert r["users"] == 3 and r["k"] == 6 and r["precision"] == "fp32"
    for kind in ("binllm", "text_only"):
        m = r[kind]
        k, p, s = 6, m["P"], m["S"]
        assert m["token_bound"] == pytest.approx(k * (p + s) / (p + k * s), rel=1e-9)
        assert m["shared_tokens"] < m["pointwise_tokens"] and m["max_abs_score_diff"] < 1e-4
        assert m["share_of_bound"] == pytest.approx(m["speedup"] / m["token_bound"])
        assert sorted(m["pointwise"]) == sorted(m["shared"]) == ["2", "4", "8"]
        assert all(len(v["samples_per_s_each"]) == 2 for v in m["pointwise"].values())
        best = max(v["samples_per_s"] for v in m["pointwise"].values())
        best_shared = max(v["samples_per_s"] for v in m["shared"].values())
        assert m["best_over_best"] == pytest.approx(best_shared / best)
        assert m["shared_samples_per_s"] == m["shared"]["8"]["samples_per_s"]
