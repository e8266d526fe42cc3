"""The `paper` budget of reproduce.py is the upstream protocol: every LLM step's resolved config is checked key by key
against the upstream values (written out here from the upstream YAMLs, docs/UPSTREAM.md), and the plan prints the
schedule without any data."""

import pytest

from minigpt4 import protocol
from minigpt4.config import REPO_ROOT, load_config
from minigpt4.experiments.plan import plan
from minigpt4.experiments.reproduce import main

# Upstream (BinLLM b28bfc4 hash_CF_ml.yaml; CoLLM 48042b1 ML-1M configs): init_lr, max_epoch, iters_per_epoch,
# per-GPU train batch, eval batch; the global batch is that of the 2-GPU runs.
UPSTREAM_ML1M = {
    "tallrec": (1e-3, 200, 50, 16, 64),          # C: collm_pretrain_mf_ood.yaml (stage 1 in BinLLM's README)
    "collm_mf": (1e-3, 200, 50, 16, 64),         # C: collm_pretrain_mf_ood.yaml, stage-2 edits
    "collm_lightgcn": (1e-3, 200, 50, 16, 64),   # C: collm_pretrain_lgcn_ood_cc.yaml
    "collm_sasrec": (1e-3, 200, 50, 16, 64),     # C: collm_pretrain_sasrec_ood_cc.yaml
    "collm_din": (1e-3, 200, 50, 16, 64),        # C: collm_pretrain_din_ood_cc.yaml
    "softprompt": (1e-4, 1000, 50, 16, 64),      # C: soft_prompt_ood.yaml
    "personprompt": (1e-2, 1000, 50, 16, 64),    # C: personlized_prompt_ood_cc.yaml
    "binllm": (1e-4, 200, 50, 4, 64),            # B: hash_CF_ml.yaml
    # no upstream config of their own: the ablations and code lengths read BinLLM's (ours, as the paper's text says)
    "binllm_io": (1e-4, 200, 50, 4, 64), "binllm_it": (1e-4, 200, 50, 4, 64), "binllm_ipv4": (1e-4, 200, 50, 4, 64),
    "binllm16": (1e-4, 200, 50, 4, 64), "binllm64": (1e-4, 200, 50, 4, 64),
}
COMMON = {"model.score_type": "yes", "model.lora_config.use_lora": True, "model.lora_config.r": 8,
          "model.lora_config.alpha": 16, "model.lora_config.dropout": 0.05,
          "model.lora_config.target_modules": ["q_proj", "v_proj"], "model.lora_config.layers_to_transform": [],
          "run.lr_sched": "linear_warmup_cosine_lr", "run.min_lr": 8e-5, "run.warmup_lr": 1e-5,
          "run.warmup_steps": 200, "run.weight_decay": 1e-3, "run.beta2": 0.999, "run.valid_splits": ["valid"],
          "run.patience": 20, "run.max_train_rows": 0, "run.max_eval_rows": 0, "run.seed": 42,
          "run.length_buckets": 0}  # upstream draws plain shuffled batches (DistributedSampler), not by length


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if hasattr(node, "__len__") and not isinstance(node, str) else node


@pytest.fixture(scope="module")
def paper_steps(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    steps, _, _ = plan("ml-1m", "paper", out, data=out, llama="/models/vicuna-7b")
    return {s.name: s for s in steps}


def test_every_llm_step_has_the_upstream_settings(paper_steps):
    assert set(UPSTREAM_ML1M) == {n for n, s in paper_steps.items() if s.stage == "llm"}
    for name, (lr, epochs, iters, batch, eval_batch) in UPSTREAM_ML1M.items():
        cfg = load_config(paper_steps[name].config, paper_steps[name].overrides)
        got = (cfg.run.init_lr, cfg.run.max_epoch, cfg.run.iters_per_epoch, cfg.run.batch_size_train,
               cfg.run.batch_size_eval)
        assert got == (lr, epochs, iters, batch, eval_batch), name
        assert cfg.run.global_batch_size == 2 * batch, name  # upstream's runs used 2 GPUs
        for key, want in COMMON.items():
            assert _get(cfg, key) == want, (name, key)
        assert cfg.model.llama_model == "/models/vicuna-7b"


def test_paper_budget_wires_upstream_starting_points(paper_steps):
    # upstream's prompt-tuning baselines start from the base model; BinLLM and CoLLM from stage 1
    for name in ("softprompt", "personprompt"):
        cfg = load_config(paper_steps[name].config, paper_steps[name].overrides)
        assert cfg.model.ckpt == "" and "tallrec" not in paper_steps[name].depends, name
    assert load_config(paper_steps["personprompt"].config, paper_steps["personprompt"].overrides).model.freeze_lora
    for name in ("binllm", "collm_mf", "binllm_ipv4"):
        assert "tallrec" in paper_steps[name].depends
        assert load_config(paper_steps[name].config, paper_steps[name].overrides).model.ckpt.endswith(
            "tallrec/checkpoint_best")
    # BinLLM's upstream config reads ML-1M through amazon_ood, whose warm rows are not_cold == 1
    assert load_config(paper_steps["binllm"].config, paper_steps["binllm"].overrides).run.warm_rule == "not_cold"
    ipv4 = load_config(paper_steps["binllm_ipv4"].config, paper_steps["binllm_ipv4"].overrides)
    assert ipv4.model.rec_config.code_mode == "ipv4"


def test_code_length_steps_keep_their_length_under_the_protocol(paper_steps):
    for name, bits in (("binmf16", 16), ("binmf64", 64), ("binllm16", 16), ("binllm64", 64), ("binmf", 32)):
        cfg = load_config(paper_steps[name].config, paper_steps[name].overrides)
        assert cfg.model.rec_config.embedding_size == bits, name


def test_encoders_follow_the_upstream_pretraining_scripts(paper_steps):
    want = {"binmf": (1e-2, 1e-3, 32), "mf": (1e-3, 1e-4, 256), "lightgcn": (1e-2, 1e-4, 64),
            "sasrec": (1e-2, 1e-2, 64), "din": (1e-4, 1e-4, 192)}
    for name, (lr, wd, size) in want.items():
        cfg = load_config(paper_steps[name].config, paper_steps[name].overrides)
        assert (cfg.run.init_lr, cfg.run.weight_decay, cfg.model.rec_config.embedding_size) == (lr, wd, size), name
        assert (cfg.run.seed, cfg.run.patience, cfg.run.batch_size_train) == (2023, 100, 2048), name
    # DIN's batch and patience have no upstream source (no DIN training script): paper.yaml must say they are ours
    din = protocol.load()["ml-1m"]["steps"]["din"]
    assert all(din[k][1].startswith("ours:") for k in ("run.batch_size_train", "run.patience"))


def test_plan_prints_the_upstream_schedule_without_data(tmp_path, capsys):
    main(["--dataset", "ml-1m", "--budget", "paper", "--llama", str(tmp_path / "vicuna-7b"), "--plan",
             "--out", str(tmp_path / "out"), "--data", str(tmp_path / "none")])
    out = capsys.readouterr().out
    assert "binllm" in out and "lr 0.0001, up to 200 epochs x 50 steps of 8 rows = 80,000 rows; yes score" in out
    assert "lr 0.001, up to 200 epochs x 50 steps of 32 rows = 320,000 rows" in out  # tallrec, CoLLM
    assert "assumed Vicuna-7B's shape" in out and "H100 SXM" in out
    assert not (tmp_path / "out").exists()  # a plan writes nothing


def test_body_parameters_read_a_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 4096, "num_hidden_layers": 32, "intermediate_size": 11008, '
                                          '"num_attention_heads": 32}')
    n, how = protocol.body_parameters(str(tmp_path))
    assert n == pytest.approx(protocol.VICUNA_7B_BODY, rel=0.01) and "config.json" in how


def test_every_setting_names_its_source_and_the_docs_are_current():
    for dataset, p in protocol.load().items():
        tables = [p["llm"], p["collab"], *p["steps"].values()]
        assert all(src.strip() for t in tables for _, src in t.values()), dataset
    doc = (REPO_ROOT / "docs" / "PAPER_PROTOCOL.md").read_text(encoding="utf-8")
    assert doc == protocol.markdown(), "stale: python -m minigpt4.protocol > docs/PAPER_PROTOCOL.md"
    # the score is written as the config takes it (YAML 1.1 read a bare `yes` as a boolean, printed `True`)
    assert "| `model.score_type` | `yes` |" in doc and "| `model.score_type` | `True` |" not in doc


def test_amazon_paper_plan_loads(tmp_path):
    steps, _, _ = plan("amazon-book", "paper", tmp_path, data=tmp_path, llama="/models/vicuna-7b")
    by = {s.name: s for s in steps}
    for name, step in by.items():  # every Amazon LLM step: the settings every upstream config shares
        if step.stage == "llm":
            cfg = load_config(step.config, step.overrides)
            for key, want in COMMON.items():
                assert _get(cfg, key) == want, (name, key)
    cfg = load_config(by["collm_mf"].config, by["collm_mf"].overrides)
    assert ((cfg.run.init_lr, cfg.run.iters_per_epoch, cfg.run.batch_size_train, cfg.model.freeze_rec)
            == (1e-2, 100, 8, False))
    # upstream trains Amazon CoLLM-MF's MF from scratch with the mapping (pretrained_path: not_have)
    assert cfg.model.rec_config.pretrained_path == "not_have" and "mf" not in by["collm_mf"].depends


# The prompt each step reads under the paper budget (<ds> = movie | amazon), and why. Upstream files: docs/UPSTREAM.md
# (prompt table and config table); where upstream's file is missing or wrong, our stand-in is in docs/DIFFERENCES.md.
PAPER_PROMPTS = {
    "tallrec": "tallrec_{}",        # C: collm_pretrain_mf_ood.yaml (ML-1M), 0924-tallrec-qwen-book.yaml (Book)
    "icl": "tallrec_{}",            # the text-only question, no adapter (the paper's ICL row)
    "softprompt": "softprompt_{}",  # C: soft_prompt_ood*.yaml, softprompt.txt / softprompt_amazon.txt
    # C: rec_alignment*.txt, missing upstream: the CoLLM wording as stand-in (DIFFERENCES.md)
    "collm_mf": "collm_{}", "collm_lightgcn": "collm_{}", "collm_sasrec": "collm_{}", "collm_din": "collm_{}",
    "personprompt": "collm_{}",
    # B: hash_text.txt, missing upstream; its binllm_text.txt is collm_amazon.txt's bytes (books even on ML-1M): the
    # CoLLM wording of each dataset, the codes written into its ID slots
    "binllm": "collm_{}", "binllm_it": "collm_{}", "binllm_ipv4": "collm_{}", "binllm16": "collm_{}",
    "binllm64": "collm_{}",
    "binllm_io": "binllm_io_{}",    # the paper's BinLLM-IO: IDs only, no titles (no upstream file)
    "ctrl_align": "ctrl_{}",        # CTRL's hard template (CTRL paper, 4.1), no upstream file
}


@pytest.mark.parametrize("dataset,word", [("ml-1m", "movie"), ("amazon-book", "amazon")])
def test_every_paper_step_reads_its_prompt_mode_and_precision(tmp_path, dataset, word):
    """Prompt files, run modes (codes as text only for BinLLM) and precision of every LLM-side step of the paper
    budget: upstream ran fp16 autocast (`run.amp: True`); ours keeps the key and computes in bf16 where the GPU has it
    (`run.dtype: auto`, docs/PAPER_PROTOCOL.md's list of what is not copied)."""
    steps, _, _ = plan(dataset, "paper", tmp_path, data=tmp_path, llama="/models/vicuna-7b")
    seen = set()
    for step in steps:
        if step.name not in PAPER_PROMPTS:
            continue
        seen.add(step.name)
        cfg = load_config(step.config, step.overrides)
        assert cfg.model.prompt_path == f"prompts/{PAPER_PROMPTS[step.name].format(word)}.txt", step.name
        assert (REPO_ROOT / cfg.model.prompt_path).is_file()
        assert cfg.run.mode == ("v3" if step.name.startswith("binllm") else "v2"), step.name
        assert (cfg.run.dtype, cfg.run.amp) == ("auto", True), step.name
    assert seen == set(PAPER_PROMPTS)
