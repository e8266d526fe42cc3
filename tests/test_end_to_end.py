"""The three stages through the command-line entry (`minigpt4.cli.main`), tiny Llama + synthetic data.

stage 0 `collab` (binary encoder) -> stage 1 `llm` text mode -> stage 2 `llm` codes mode (from the stage-1
adapter and the stage-0 codes) -> `eval` of the stage-2 adapter, which must reproduce its test AUC.
"""

import contextlib
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import ROOT, write_yaml
from minigpt4.cli import main
from minigpt4.metrics import evaluate_scores
from minigpt4.train.checkpoint import read_meta

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ENCODER_KEYS = {"rec_model.user_embedding.weight", "rec_model.item_embedding.weight", "proj_u.weight",
                "proj_u.bias", "proj_i.weight", "proj_i.bias"}


def _collab_yaml(d, data, out):
    return write_yaml(d / "binmf.yaml", f"""\
model:
  rec_model: hash
  rec_config: {{embedding_size: 32, beta_step: 0.02}}
datasets:
  synthetic:
    path: {data}
run:
  init_lr: 1e-2
  weight_decay: 1e-3
  batch_size_train: 256
  max_epoch: 4
  patience: 10
  seed: 2023
  device: cpu
  output_dir: {out}
  job_id: binmf
""")


def _llm_yaml(d, name, data, out, llama, mode, prompt, extra_model=""):
    return write_yaml(d / f"{name}.yaml", f"""\
model:
  llama_model: {llama}
  prompt_path: {prompt}
  score_type: yes_minus_no
  rec_model: hash
  rec_config: {{embedding_size: 32, code_mode: binary{extra_model}}}
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.05}}
datasets:
  synthetic:
    path: {data}
run:
  mode: {mode}
  init_lr: 1e-3
  min_lr: 1e-4
  warmup_lr: 1e-4
  warmup_steps: 2
  max_epoch: 2
  iters_per_epoch: 3
  batch_size_train: 4
  batch_size_eval: 16
  patience: 5
  max_eval_rows: 40
  test_splits: [test]
  device: cpu
  output_dir: {out}
""")


def _recording_start(train, into):
    """The training loop (`finetune_llm.train`), first storing the model's adapter tensors (named as in
    adapter_model.safetensors)."""
    from peft import get_peft_model_state_dict

    def recording(cfg, d, model, *args):
        into.update({k: v.detach().clone() for k, v in get_peft_model_state_dict(model.llm).items()})
        return train(cfg, d, model, *args)

    return recording


@pytest.fixture(scope="module")
def pipeline(tiny_llama, synthetic_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("e2e")
    out = d / "runs"
    r = {"dir": d, "out": out, "data": synthetic_dir}
    r["collab_results"] = main("collab", "stage 0", ["--cfg-path", str(_collab_yaml(d, synthetic_dir, out))])
    r["text_yaml"] = _llm_yaml(d, "text", synthetic_dir, out, tiny_llama, "v2", "prompts/tallrec_movie.txt")
    r["text_results"] = main("llm", "stage 1", ["--cfg-path", str(r["text_yaml"]), "--options", "run.job_id=text"])
    r["codes_yaml"] = _llm_yaml(d, "codes", synthetic_dir, out, tiny_llama, "v3", "prompts/collm_movie.txt",
                                f", pretrained_path: {out / 'binmf' / 'rec_model.pth'}")
    # Stage 2 with the adapter it holds when training starts recorded, and its printed lines kept: the test of
    # "starts from stage 1" compares that adapter with the stage-1 checkpoint.
    r["codes_start"], stdout = {}, io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(stdout):
        from minigpt4.recipes import finetune_llm  # the recipe's one training loop, wrapped to record its start

        mp.setattr(finetune_llm, "train", _recording_start(finetune_llm.train, r["codes_start"]))
        r["codes_results"] = main("llm", "stage 2", ["--cfg-path", str(r["codes_yaml"]), "--options",
                                                     "run.job_id", "codes", "model.ckpt", str(out / "text")])
    r["codes_stdout"] = stdout.getvalue()
    print(r["codes_stdout"])
    r["eval_results"] = main("eval", "eval", ["--cfg-path", str(r["codes_yaml"]), "--options", "run.job_id=eval",
                                              f"model.ckpt={out / 'codes' / 'checkpoint_best'}"])
    return r


def _frames(data):
    return {s: pd.read_pickle(data / f"{s}_ood2.pkl") for s in ("train", "valid", "test")}


def test_stage0_collab(pipeline, synthetic_dir):
    run = pipeline["out"] / "binmf"
    state = torch.load(run / "rec_model.pth", map_location="cpu", weights_only=True)
    assert set(state) == ENCODER_KEYS
    fr = _frames(synthetic_dir)
    user_num = max(int(f["uid"].max()) for f in fr.values()) + 1
    item_num = max(int(f["iid"].max()) for f in fr.values()) + 1
    assert state["rec_model.user_embedding.weight"].shape == (user_num, 32)
    assert state["rec_model.item_embedding.weight"].shape == (item_num, 32)
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("valid_full", "test", "test_warm", "test_cold"):
        assert 0.0 <= metrics[split]["auc"] <= 1.0, split
    assert metrics["test"]["rows"] == len(fr["test"])
    assert metrics == json.loads(json.dumps(pipeline["collab_results"]))
    # every scored row is written as the LLM stages write them, and the metrics follow from the file
    for split in ("valid_full", "test", "test_warm", "test_cold"):
        pred = pd.read_csv(run / f"predictions_{split}.csv")
        assert len(pred) == metrics[split]["rows"], split
        m = evaluate_scores(pred["uid"].to_numpy(), pred["label"].to_numpy(), pred["score"].to_numpy())
        assert (m["auc"], m["uauc"]) == pytest.approx((metrics[split]["auc"], metrics[split]["uauc"]), abs=1e-6)
    test = pd.read_csv(run / "predictions_test.csv")
    assert test[["uid", "iid", "label"]].values.tolist() == fr["test"][["uid", "iid", "label"]].values.tolist()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [0, 1, 2, 3]
    # the saved encoder is the best epoch's: its valid AUC is the best logged one
    assert metrics["valid_full"]["auc"] == pytest.approx(max(rec["valid_auc"] for rec in log))


def test_stage1_text_outputs(pipeline, synthetic_dir):
    run = pipeline["out"] / "text"
    for name in ("config.yaml", "log.jsonl", "metrics.json", "predictions_test.csv",
                 "checkpoint_best/adapter_model.safetensors", "checkpoint_best/recommender.json",
                 "checkpoint_best/adapter_config.json"):
        assert (run / name).is_file(), name
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [0, 1] and [rec["step"] for rec in log] == [3, 6]
    assert all(math.isfinite(rec["train_loss"]) for rec in log)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 6
    assert metrics["train"]["best_valid_auc"] == pytest.approx(max(rec["valid_auc"] for rec in log))
    assert all(rec["valid_rows"] == 40 for rec in log)
    assert 0.0 <= metrics["test"]["auc"] <= 1.0 and metrics["test"]["rows"] == 40
    meta = read_meta(run / "checkpoint_best")
    assert meta["mode"] == "text" and meta["epoch"] == metrics["train"]["best_epoch"]
    assert "code_bits" not in meta
    # predictions: one row per scored test row, rows taken from the test split
    pred = pd.read_csv(run / "predictions_test.csv")
    assert list(pred.columns) == ["uid", "iid", "label", "score"]
    assert len(pred) == 40 and np.isfinite(pred["score"]).all()
    test = pd.read_pickle(synthetic_dir / "test_ood2.pkl")
    rows = set(zip(test["uid"], test["iid"], test["label"]))
    assert all(t in rows for t in zip(pred["uid"], pred["iid"], pred["label"]))
    assert not pred.duplicated(["uid", "iid"]).any()
    # the file holds the scores the metrics were computed from, to the last bit
    again = evaluate_scores(pred["uid"].to_numpy(), pred["label"].to_numpy(), pred["score"].to_numpy())
    assert (again["auc"], again["uauc"]) == (metrics["test"]["auc"], metrics["test"]["uauc"])
    cfg_text = (run / "config.yaml").read_text()
    assert "job_id: text" in cfg_text and "user_num: 41" in cfg_text


def test_stage2_codes_starts_from_stage1(pipeline):
    run = pipeline["out"] / "codes"
    assert f"loaded {pipeline['out'] / 'text'} (trained as text" in pipeline["codes_stdout"]
    # the run ends with one readable line: what trained, what scored, where the files are (not a bare dict)
    res, last = pipeline["codes_results"], pipeline["codes_stdout"].strip().splitlines()[-1]
    test = res["test"]
    assert last == (f"finished: {res['train']['steps']} steps, adapter of epoch {res['train']['best_epoch']}, valid "
                    f"AUC {res['train']['best_valid_auc']:.4f}; test AUC {test['auc']:.4f} UAUC {test['uauc']:.4f} "
                    f"({test['rows']} rows). Files: {run}/")
    # the adapter stage 2 starts training from is the stage-1 checkpoint's, tensor for tensor (not a fresh one:
    # stage 1 trained lora_B away from its zero init, so a fresh adapter would differ)
    stage1, start = _adapter(pipeline["out"] / "text"), pipeline["codes_start"]
    assert set(start) == set(stage1)
    assert any(k.endswith("lora_B.weight") and stage1[k].abs().sum() > 0 for k in stage1)
    assert all(torch.equal(start[k], stage1[k]) for k in stage1)
    # ... and stage 2 trained it further
    assert not all(torch.equal(stage1[k], v) for k, v in _adapter(run).items())
    meta = read_meta(run / "checkpoint_best")
    assert meta["mode"] == "codes" and meta["code_bits"] == 32 and meta["code_mode"] == "binary"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["rows"] == 40 and 0.0 <= metrics["test"]["auc"] <= 1.0
    # the same 40 test rows as stage 1 (fixed subsample), different scores (codes in the prompt)
    p1 = pd.read_csv(pipeline["out"] / "text" / "predictions_test.csv")
    p2 = pd.read_csv(run / "predictions_test.csv")
    assert p1[["uid", "iid", "label"]].equals(p2[["uid", "iid", "label"]])
    assert not np.allclose(p1["score"], p2["score"])


def test_the_example_prompt_shows_a_row_with_a_liked_history(pipeline):
    line = next(x for x in pipeline["codes_stdout"].splitlines() if x.startswith("example prompt"))
    assert re.match(r"example prompt \(train row \d+, \d+ tokens\): ", line), line
    assert "movies: unknown" not in line and "high ratings to the following movies: \"" in line, line


def test_eval_reproduces_stage2_test_auc(pipeline):
    codes = json.loads((pipeline["out"] / "codes" / "metrics.json").read_text())
    ev = json.loads((pipeline["out"] / "eval" / "metrics.json").read_text())
    assert set(ev) == {"test", "precision", "warm_cold_rules"}  # no training in the eval stage
    assert ev["test"]["auc"] == codes["test"]["auc"]
    assert ev["test"]["uauc"] == codes["test"]["uauc"] or (math.isnan(ev["test"]["uauc"])
                                                           and math.isnan(codes["test"]["uauc"]))
    p_codes = pd.read_csv(pipeline["out"] / "codes" / "predictions_test.csv")
    p_eval = pd.read_csv(pipeline["out"] / "eval" / "predictions_test.csv")
    pd.testing.assert_frame_equal(p_codes, p_eval)
    assert not (pipeline["out"] / "eval" / "checkpoint_best").exists()


def test_same_job_id_is_never_overwritten(pipeline, capsys):
    run = pipeline["out"] / "text"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as exc:
        main("llm", "stage 1", ["--cfg-path", str(pipeline["text_yaml"]), "--options", "run.job_id=text"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "exists" in err and str(run) in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_codes_mode_without_encoder_exits_2(pipeline, capsys):
    out = pipeline["out"]
    missing = pipeline["dir"] / "no_such" / "rec_model.pth"
    with pytest.raises(SystemExit) as exc:
        main("llm", "stage 2", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=bad_codes",
                                f"model.rec_config.pretrained_path={missing}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model.rec_config.pretrained_path" in err and str(missing) in err
    with pytest.raises(SystemExit) as exc:
        main("llm", "stage 2", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=bad_codes",
                                "model.rec_config.pretrained_path=not_have"])
    assert exc.value.code == 2
    assert "model.rec_config.pretrained_path" in capsys.readouterr().err
    assert not (out / "bad_codes").exists()  # failed before creating a run directory


def test_missing_ckpt_exits_2(pipeline, capsys):
    with pytest.raises(SystemExit) as exc:
        main("eval", "eval", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=bad_eval",
                              f"model.ckpt={pipeline['dir'] / 'nowhere'}"])
    assert exc.value.code == 2
    assert "model.ckpt" in capsys.readouterr().err
    assert not (pipeline["out"] / "bad_eval").exists()


@pytest.mark.parametrize("options, words", [
    (["run.mode=v3", "model.prompt_path=prompts/tallrec_movie.txt"], ["model.prompt_path", "<UserID>"]),
    (["run.mode=v2", "model.prompt_path=prompts/collm_movie.txt"], ["model.rec_model", "run.mode v3"]),
    (["run.mode=v3", "model.rec_model=MF"], ["model.rec_model", "hash"]),
    (["model.prompt_path=prompts/none.txt"], ["model.prompt_path"]),
    (["model.llama_model=/no/such/model"], ["model.llama_model"]),
], ids=["codes_with_text_prompt", "text_with_id_prompt", "codes_without_hash", "no_prompt", "no_backbone"])
def test_mode_prompt_mismatch_exits_2(pipeline, capsys, options, words):
    with pytest.raises(SystemExit) as exc:
        main("llm", "x", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=mismatch", *options])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err, err
    assert not (pipeline["out"] / "mismatch").exists()


def test_prompt_too_long_exits_2_without_run_dir(pipeline, capsys):
    with pytest.raises(SystemExit) as exc:
        main("llm", "x", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=too_long",
                          "model.max_txt_len=20", f"model.ckpt={pipeline['out'] / 'text'}"])
    assert exc.value.code == 2
    assert "max_txt_len" in capsys.readouterr().err
    assert not (pipeline["out"] / "too_long").exists()  # a rerun with the same job_id still works


def test_metrics_json_is_strict_json(pipeline):
    # UAUC can be undefined on tiny splits; it must be written as null, never as NaN.
    text = (pipeline["out"] / "codes" / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in metrics.json"))


def test_eval_takes_adapter_shape_from_checkpoint(pipeline):
    # The YAML asks for r=16, the checkpoint has r=4: evaluation follows the checkpoint.
    res = main("eval", "eval", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=eval_r16",
                                "model.lora_config.r=16", f"model.ckpt={pipeline['out'] / 'codes'}"])
    assert res["test"]["auc"] == pipeline["codes_results"]["test"]["auc"]


def test_checkpoint_records_backbone_architecture(pipeline):
    # Compatibility is checked on the architecture, so a moved backbone directory still loads its adapters.
    assert read_meta(pipeline["out"] / "codes" / "checkpoint_best")["backbone"].startswith("llama-L")


def test_no_valid_split_keeps_last_epoch(pipeline):
    # run.valid_splits: [] -> no scoring during training; the adapter of the last epoch is the one kept.
    res = main("llm", "stage 1", ["--cfg-path", str(pipeline["text_yaml"]), "--options", "run.job_id=no_valid",
                                  "run.valid_splits=[]"])
    run = pipeline["out"] / "no_valid"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [0, 1]
    assert not any(k.startswith("valid") for rec in log for k in rec)
    assert read_meta(run / "checkpoint_best")["epoch"] == 1 and res["train"]["best_epoch"] == 1
    assert res["test"]["rows"] == 40


def test_final_scoring_reuses_scores_of_subset_splits(pipeline, monkeypatch):
    # test_warm and test_cold are subsets of test: every prompt is scored once, and their metrics are
    # those of the test scores restricted to their rows.
    from minigpt4.llm.recommender import LLMRecommender
    from minigpt4.metrics import evaluate_scores

    rows_scored = []
    forward = LLMRecommender.forward

    def counting(self, input_ids, attention_mask, **slot_inputs):
        rows_scored.append(len(input_ids))
        return forward(self, input_ids, attention_mask, **slot_inputs)

    monkeypatch.setattr(LLMRecommender, "forward", counting)
    res = main("eval", "eval", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=eval_subsets",
                                "run.max_eval_rows=0", "run.test_splits=[test,test_warm,test_cold]",
                                f"model.ckpt={pipeline['out'] / 'codes'}"])
    n_test, n_warm, n_cold = (res[s]["rows"] for s in ("test", "test_warm", "test_cold"))
    assert n_warm > 0 and n_cold > 0 and n_warm + n_cold <= n_test
    assert sum(rows_scored) <= n_test
    run = pipeline["out"] / "eval_subsets"
    test = pd.read_csv(run / "predictions_test.csv")
    for split in ("test_warm", "test_cold"):
        sub = pd.read_csv(run / f"predictions_{split}.csv")
        merged = sub.merge(test, on=["uid", "iid", "label"], suffixes=("", "_test"), validate="one_to_one")
        assert len(merged) == len(sub) and np.array_equal(merged["score"], merged["score_test"])
        expect = evaluate_scores(sub["uid"].to_numpy(), sub["label"].to_numpy(), sub["score"].to_numpy())
        assert res[split]["auc"] == pytest.approx(expect["auc"])
        assert res[split]["samples_per_s"] is None  # nothing scored for it, so no speed (not 0 samples/s)


def test_eval_under_torchrun_one_process_matches_plain_run(pipeline):
    # `torchrun --nproc-per-node 1 eval.py ...` is the same run as `python eval.py ...`.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", str(root / "eval.py"),
           "--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=eval_torchrun",
           f"model.ckpt={pipeline['out'] / 'codes' / 'checkpoint_best'}"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = pd.read_csv(pipeline["out"] / "eval_torchrun" / "predictions_test.csv")
    pd.testing.assert_frame_equal(got, pd.read_csv(pipeline["out"] / "eval" / "predictions_test.csv"))


def test_icl_zero_shot_scores_the_base_model(pipeline, synthetic_dir, tiny_llama):
    """ICL (`train_configs/ml1m_icl.yaml`): eval.py with no LoRA and no checkpoint scores the base LLM, and a
    row's score is the base model's own Yes-minus-No logit at the last prompt position."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from minigpt4.prompting import build_prompts, load_prompt

    main("eval", "eval", ["--cfg-path", str(pipeline["text_yaml"]), "--options", "run.job_id=icl",
                          "model.lora_config.use_lora=False", "model.ckpt="])
    run = pipeline["out"] / "icl"
    assert not (run / "checkpoint_best").exists()
    pred = pd.read_csv(run / "predictions_test.csv")
    assert pred["score"].nunique() > 1
    test = pd.read_pickle(synthetic_dir / "test_ood2.pkl")
    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    lm = LlamaForCausalLM.from_pretrained(str(tiny_llama)).eval()
    yes, no = (tok(f"#Answer: {w}", add_special_tokens=False)["input_ids"][-1] for w in ("Yes", "No"))
    for _, p in pred.head(3).iterrows():
        row = test[(test["uid"] == p["uid"]) & (test["iid"] == p["iid"])].head(1)
        (text,) = build_prompts(row, load_prompt("prompts/tallrec_movie.txt"))
        ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
        assert p["score"] == pytest.approx((logits[yes] - logits[no]).item(), abs=1e-4)


def _adapter(run):
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoint_best" / "adapter_model.safetensors"))


@pytest.mark.parametrize("rec_model, collab_options", [
    ("MF", ["run.max_epoch=2"]),
    ("sasrec", ["run.max_epoch=2", "model.rec_config.hidden_units=32", "model.rec_config.maxlen=5"]),
], ids=["collm_mf", "collm_sasrec"])
def test_collm_stage_trains_the_mapping_from_the_text_adapter(pipeline, rec_model, collab_options):
    """CoLLM: stage 0 encoder -> slots filled through the mapping MLP, LoRA frozen at the stage-1 adapter ->
    eval.py reproduces the run's test predictions from the checkpoint alone."""
    out, job = pipeline["out"], f"collm_{rec_model}"
    main("collab", "stage 0", ["--cfg-path", str(pipeline["dir"] / "binmf.yaml"), "--options",
                               f"run.job_id={job}_enc", f"model.rec_model={rec_model}", *collab_options])
    options = [f"run.job_id={job}", f"model.rec_model={rec_model}", "run.mode=v2", "model.freeze_lora=True",
               "model.freeze_proj=False", "model.proj_token_num=2", "model.proj_mid_times=2",
               f"model.rec_config.pretrained_path={out / f'{job}_enc' / 'rec_model.pth'}",
               f"model.ckpt={out / 'text'}", *[o for o in collab_options if "rec_config" in o]]
    res = main("llm", "stage 2", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", *options])
    run = out / job
    meta = read_meta(run / "checkpoint_best")
    assert meta["mode"] == "slots" and meta["rec_model"] == rec_model and meta["proj_token_num"] == 2
    assert (run / "checkpoint_best" / "collab_tokens.safetensors").is_file()
    text_adapter, adapter = _adapter(out / "text"), _adapter(run)
    assert all(torch.equal(text_adapter[k], adapter[k]) for k in text_adapter)  # LoRA stayed frozen
    assert 0.0 <= res["test"]["auc"] <= 1.0
    ev = main("eval", "eval", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", *options,
                               f"run.job_id={job}_eval", f"model.ckpt={run}"])
    assert ev["test"]["auc"] == res["test"]["auc"]
    pd.testing.assert_frame_equal(pd.read_csv(run / "predictions_test.csv"),
                                  pd.read_csv(out / f"{job}_eval" / "predictions_test.csv"))


@pytest.mark.parametrize("rec_model, freeze_lora", [("soft_prompt", False), ("personlized_prompt", True)])
def test_prompt_tuning_baselines_train_and_evaluate(pipeline, rec_model, freeze_lora):
    """Soft prompt (LoRA + two shared token blocks) and PersonPrompt (per-user/per-item tokens, LoRA frozen)."""
    out, job = pipeline["out"], rec_model
    options = [f"run.job_id={job}", f"model.rec_model={rec_model}", "run.mode=v2", f"model.freeze_lora={freeze_lora}",
               "model.freeze_proj=False", "model.proj_token_num=3", "model.prompt_path=prompts/softprompt_movie.txt",
               f"model.ckpt={out / 'text'}"]
    res = main("llm", "prompt tuning", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", *options])
    run = out / job
    assert read_meta(run / "checkpoint_best")["rec_model"] == rec_model
    changed = not all(torch.equal(a, b) for a, b in zip(_adapter(out / "text").values(), _adapter(run).values()))
    assert changed == (not freeze_lora)
    ev = main("eval", "eval", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", *options,
                               f"run.job_id={job}_eval", f"model.ckpt={run}"])
    assert ev["test"]["auc"] == res["test"]["auc"]


def test_eval_of_a_stage1_adapter_in_slot_mode_is_config_error(pipeline, capsys):
    with pytest.raises(SystemExit) as exc:
        main("eval", "eval", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=slots_no_weights",
                              "run.mode=v2", "model.rec_model=soft_prompt", f"model.ckpt={pipeline['out'] / 'text'}"])
    assert exc.value.code == 2
    assert "collab_tokens.safetensors" in capsys.readouterr().err


def test_same_seed_repeats_bit_identically(pipeline):
    """Two CPU runs of a stage with the same config and seed: identical losses, metrics and predictions."""
    main("llm", "stage 1", ["--cfg-path", str(pipeline["text_yaml"]), "--options", "run.job_id=text_again"])
    out = pipeline["out"]

    def strip(metrics):  # timings differ between runs, nothing else may
        return {s: {k: v for k, v in m.items() if "per_s" not in k} if isinstance(m, dict) else m
                for s, m in metrics.items()}

    first, again = (json.loads((out / j / "metrics.json").read_text()) for j in ("text", "text_again"))
    assert strip(first) == strip(again)
    pd.testing.assert_frame_equal(pd.read_csv(out / "text" / "predictions_test.csv"),
                                  pd.read_csv(out / "text_again" / "predictions_test.csv"))
    logs = [[{k: v for k, v in json.loads(line).items() if k not in ("time",) and "per_s" not in k}
             for line in (out / j / "log.jsonl").read_text().splitlines()] for j in ("text", "text_again")]
    assert logs[0] == logs[1]


def test_config_is_read_only_in_a_run_and_its_saved_copy_reproduces_it(pipeline, monkeypatch):
    """The recipe gets a read-only config: what the run derives (evaluate, id counts, the checkpoint's LoRA shape,
    the job id) is in `Derived`, never written back. The run directory's config.yaml carries those values: it
    loads, and evaluating with it gives the same predictions."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ReadonlyConfigError

    from minigpt4.config import load_config
    from minigpt4.recipes import finetune_llm

    seen = {}
    derive = finetune_llm.derive_llm

    def capture(cfg, stage, task):
        seen["cfg"], seen["d"] = cfg, derive(cfg, stage, task)
        return seen["d"]

    monkeypatch.setattr(finetune_llm, "derive_llm", capture)
    # the YAML asks for r=16 and says nothing of evaluate or the counts; the checkpoint has r=4
    main("eval", "eval", ["--cfg-path", str(pipeline["codes_yaml"]), "--options", "run.job_id=eval_frozen",
                          "model.lora_config.r=16", f"model.ckpt={pipeline['out'] / 'codes'}"])
    cfg, d = seen["cfg"], seen["d"]
    writes = [lambda: setattr(cfg.run, "evaluate", True), lambda: setattr(cfg.model, "user_num", 1),
              lambda: setattr(cfg.model.rec_config, "item_num", 1), lambda: setattr(cfg.run, "job_id", "x"),
              lambda: cfg.model.lora_config.update({"r": 4}), lambda: cfg.run.test_splits.append("valid")]
    for write in writes:
        with pytest.raises(ReadonlyConfigError):
            write()
    assert (cfg.run.evaluate, cfg.model.user_num, cfg.model.rec_config.item_num, cfg.model.lora_config.r) == \
        (False, -100, -100, 16)
    assert d.evaluate and d.lora.r == 4 and d.user_num == 41 and d.item_num > 0 and d.mode == "codes"
    run = pipeline["out"] / "eval_frozen"
    saved = load_config(run / "config.yaml")  # a valid config, with the derived values in it
    assert saved.run.evaluate and saved.run.job_id == "eval_frozen" and saved.model.lora_config.r == 4
    assert (saved.model.user_num, saved.model.item_num) == (saved.model.rec_config.user_num,
                                                            saved.model.rec_config.item_num) == d.counts
    differs = {k for k, v in _flat(OmegaConf.to_container(saved)).items()
               if _flat(OmegaConf.to_container(cfg)).get(k) != v}
    assert differs == {"run.evaluate", "model.lora_config.r", "model.user_num", "model.item_num",
                       "model.rec_config.user_num", "model.rec_config.item_num"}
    again = main("eval", "eval", ["--cfg-path", str(run / "config.yaml"), "--options", "run.job_id=eval_again"])
    pd.testing.assert_frame_equal(pd.read_csv(run / "predictions_test.csv"),
                                  pd.read_csv(pipeline["out"] / "eval_again" / "predictions_test.csv"))
    assert again["test"]["auc"] == pipeline["codes_results"]["test"]["auc"]
    # a training stage's saved config loads too (test_distributed resumes a run from it)
    text = load_config(pipeline["out"] / "text" / "config.yaml")
    assert text.run.job_id == "text" and not text.run.evaluate and text.model.user_num == 41


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("option, kind", [("run.runner=nope", "runner"), ("run.task=nope", "task"),
                                          ("model.arch=nope", "model"), ("run.lr_sched=nope", "lr_scheduler")])
def test_an_unknown_registered_name_is_an_error(pipeline, option, kind):
    """The config names the task, model, loop (run.runner) and schedule: the first three by upstream's names of
    the one implementation of each (checked before torch loads), the schedule by registered name; another name
    fails, listing the known ones."""
    with pytest.raises(KeyError, match=f"no {kind} named 'nope' is registered"):
        main("llm", "x", ["--cfg-path", str(pipeline["text_yaml"]), "--options", f"run.job_id=unknown_{kind}", option])
    if kind != "lr_scheduler":  # looked up before any work; the schedule when training starts
        assert not (pipeline["out"] / f"unknown_{kind}").exists()


def test_from_run_rebuilds_the_trained_model_and_scores_as_eval_py_wrote(pipeline):
    """`Recommender.from_run(run_dir)` loads the backbone, adapter, encoder codes and prompt a run used (its
    config.yaml and checkpoint_best/) and scores that run's test rows: the scores eval.py wrote for the same
    checkpoint, and those the training run wrote itself."""
    from minigpt4 import Recommender
    from minigpt4.config import ConfigError

    rec = Recommender.from_run(pipeline["out"] / "codes")
    rows = rec.rows("test")
    scores = rec.score(rows)
    assert rec.derived.mode == "codes" and rec.derived.codes is not None and not rec.model.training
    for run in ("eval", "codes"):
        wrote = pd.read_csv(pipeline["out"] / run / "predictions_test.csv")
        assert wrote[["uid", "iid"]].values.tolist() == rows[["uid", "iid"]].values.tolist(), run
        assert np.array_equal(scores.astype(np.float32), wrote["score"].to_numpy(np.float32)), run
    # an eval run directory rebuilds the checkpoint it scored (its model.ckpt)
    again = Recommender.from_run(pipeline["out"] / "eval")
    assert np.array_equal(again.score(again.rows("test")), scores)
    with pytest.raises(ConfigError, match="no config.yaml"):
        Recommender.from_run(pipeline["out"])
    # a stage-0 run's directory gives its encoder, scoring rows as the run wrote them
    encoder = Recommender.from_run(pipeline["out"] / "binmf")
    test = encoder.frames["test"]
    wrote = pd.read_csv(pipeline["out"] / "binmf" / "predictions_test.csv")
    np.testing.assert_allclose(encoder.score_groups(test), wrote["score"].to_numpy(), atol=1e-5)


def _rank(pipeline, run, *options, job=None):
    """rank.py with the shipped ranking config, on the synthetic data and the pipeline's runs."""
    out = pipeline["out"]
    cfg = write_yaml(pipeline["dir"] / "rank.yaml", f"""\
defaults: [{ROOT / 'train_configs/base/rank.yaml'}]
datasets:
  synthetic: {{path: {pipeline['data']}}}
run: {{output_dir: {out}, device: cpu, batch_size_eval: 16}}
""")
    return main("ranking", "rank", ["--cfg-path", str(cfg), "--options", f"run.rank_run={out / run}",
                                    f"run.job_id={job or 'rank_' + run}", "run.rank_users=6", "run.rank_positives=2",
                                    "run.rank_negatives=5", *options])


def test_rank_py_ranks_every_method_on_the_same_saved_candidates(pipeline, capsys):
    """rank.py on an LLM run and on a stage-0 run: the first draws the candidates and saves them, the second reads
    the same ones; negatives are items the user never interacted with; the metrics follow from the scores written;
    the LLM's shared-prefix scores are its pointwise scores; other settings are refused."""
    from minigpt4 import Recommender
    from minigpt4.data.catalogue import interacted
    from minigpt4.metrics import positive_ranks, ranking_metrics

    out = pipeline["out"]
    (out / "ranking_candidates.json").unlink(missing_ok=True)
    llm = _rank(pipeline, "codes")
    assert "drawn now" in capsys.readouterr().out
    encoder = _rank(pipeline, "binmf")
    assert "read from" in capsys.readouterr().out
    assert llm["positives"] == encoder["positives"] and llm["users"] == 6 and llm["negatives"] == 5
    assert llm["positives"] <= 12
    rec = Recommender.from_run(out / "codes")
    seen = interacted(rec.frames)
    tables = {}
    for run, result in (("codes", llm), ("binmf", encoder)):
        table = pd.read_csv(out / f"rank_{run}" / "ranking_scores.csv")
        tables[run] = table
        assert len(table) == 6 * result["positives"]
        for (row, uid), g in table.groupby(["row", "uid"], sort=False):
            assert g["label"].tolist() == [1, 0, 0, 0, 0, 0]
            assert rec.frames["test"].loc[row, "iid"] == g["iid"].iloc[0]
            assert not set(g["iid"].iloc[1:]) & set(seen[uid].tolist())
            assert g["iid"].nunique() == 6
        ranks = positive_ranks(table["score"].to_numpy().reshape(-1, 6))
        saved = json.loads((out / f"rank_{run}" / "metrics.json").read_text())
        assert saved["metrics"] == pytest.approx(ranking_metrics(ranks)) and saved["ranked_run"] == str(out / run)
        assert result["metrics"] == pytest.approx(ranking_metrics(ranks))
    assert tables["codes"][["row", "uid", "iid"]].equals(tables["binmf"][["row", "uid", "iid"]])
    # the shared-prefix scores of the LLM are its pointwise scores of the same candidate rows
    test = rec.frames["test"]
    rows = test.loc[tables["codes"]["row"]].reset_index(drop=True)
    rows["iid"] = tables["codes"]["iid"].to_numpy()
    rows["title"] = rec.catalogue.set_index("iid").loc[rows["iid"], "title"].to_numpy()
    np.testing.assert_allclose(rec.score(rows), tables["codes"]["score"].to_numpy(), atol=1e-4)
    # the saved candidates are never reused under other settings
    with pytest.raises(SystemExit) as stop:
        _rank(pipeline, "binmf", "run.rank_negatives=3", job="rank_again")
    assert stop.value.code == 2
    assert "run.rank_negatives: 5 there, 3 here" in capsys.readouterr().err


def test_rank_py_needs_a_finished_run(pipeline, capsys):
    for extra, why in ((), "no run there"), (("run.rank_run=",), "run.rank_run is empty"):
        with pytest.raises(SystemExit) as stop:
            _rank(pipeline, "never_trained", *extra, job="rank_nothing")
        assert stop.value.code == 2
        assert why in capsys.readouterr().err
    assert not (pipeline["out"] / "rank_nothing").exists()


@pytest.mark.parametrize("run", ["codes", "binmf"])
def test_recommend_returns_k_distinct_unseen_items_best_first(pipeline, run):
    """`recommend` on a tiny trained run (an LLM's and an encoder's): k distinct items the user never interacted
    with, sorted by score, the scores those of the pointwise path; an LLM re-ranks its encoder's best items."""
    from minigpt4 import Recommender
    from minigpt4.data.catalogue import interacted

    rec = Recommender.from_run(pipeline["out"] / run)
    uid = int(rec.frames["test"]["uid"].iloc[0])
    top = rec.recommend(uid, k=5)
    assert list(top.columns) == ["rank", "iid", "title", "score"] and top["rank"].tolist() == [1, 2, 3, 4, 5]
    assert top["iid"].nunique() == 5 and not set(top["iid"]) & set(interacted(rec.frames)[uid].tolist())
    assert (np.diff(top["score"].to_numpy()) <= 0).all()
    row, _ = rec.user_row(uid)
    rows = pd.concat([row.assign(iid=i, title=t, label=0) for i, t in zip(top["iid"], top["title"])],
                     ignore_index=True)
    np.testing.assert_allclose(rec.score(rows) if run == "codes" else rec.score_groups(rows), top["score"],
                               atol=1e-4)
    given = rec.recommend(uid, k=2, candidates=top["iid"].tolist()[::-1])
    assert given["iid"].tolist() == top["iid"].tolist()[:2]
    if run == "codes":  # re-ranks the stage-0 encoder's best unseen items: with a pool of 8, from those 8 only
        encoder = Recommender.from_run(pipeline["out"] / "binmf")
        best = encoder.recommend(uid, k=8)["iid"].tolist()
        assert set(rec.recommend(uid, k=5, pool=8)["iid"]) <= set(best)


def test_recommend_rejects_bad_users_items_and_k(pipeline):
    from minigpt4 import Recommender
    from minigpt4.errors import DataError

    rec = Recommender.from_run(pipeline["out"] / "binmf")
    users = np.concatenate([f["uid"].to_numpy() for f in rec.frames.values()])
    uid = int(users[0])
    with pytest.raises(DataError, match=f"user ids run from {users.min()} to {users.max()}"):
        rec.recommend(int(users.max()) + 1)
    with pytest.raises(DataError, match="k = 0"):
        rec.recommend(uid, k=0)
    with pytest.raises(DataError, match="only 2 candidate items"):
        rec.recommend(uid, k=3, candidates=[1, 2])
    with pytest.raises(DataError, match="item 100000 is not in the catalogue"):
        rec.recommend(uid, k=1, candidates=[1, 100000])


def test_a_user_with_no_liked_history_gets_the_empty_history_prompt(pipeline):
    from minigpt4 import Recommender
    from minigpt4.prompting import EMPTY_HISTORY

    rec = Recommender.from_run(pipeline["out"] / "codes")
    uid = int(rec.frames["test"]["uid"].iloc[0])
    row, seen = rec.user_row(uid, before="train")  # as of before any interaction
    assert row["his"].iloc[0] == [0] and len(seen) == 0
    top = rec.recommend(uid, k=3, candidates=[1, 2, 3, 4], before="train")
    assert len(top) == 3
    rows = row.assign(iid=1, title="x", label=0)
    assert EMPTY_HISTORY in rec.tokenizer.decode(rec.tokenize(rows).input_ids[0])


def test_recommend_py_prints_the_top_k(pipeline, capsys):
    import recommend

    uid = int(pd.read_csv(pipeline["out"] / "binmf" / "predictions_test.csv")["uid"].iloc[0])
    top = recommend.main(["--run", str(pipeline["out"] / "binmf"), "--user", str(uid), "--k", "3"])
    printed = capsys.readouterr().out
    assert f"user {uid}: top 3" in printed
    for title in top["title"]:
        assert title in printed
    with pytest.raises(SystemExit) as stop:
        recommend.main(["--run", str(pipeline["out"] / "binmf"), "--user", "99999"])
    assert stop.value.code == 2 and "user ids run from" in capsys.readouterr().err
