"""Every method of the paper's tables runs from its shipped ML-1M config (`train_configs/ml1m_<method>.yaml`),
with only the backbone (tiny Llama), the data (synthetic) and the budget overridden on the command line."""

import json

import pytest
import torch
from omegaconf import OmegaConf

from minigpt4 import registry
from minigpt4.cli import main
from minigpt4.config import compose
from minigpt4.encoders.factory import build_encoder, load_pretrained_encoder
from minigpt4.train.checkpoint import read_meta

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ENCODERS = {"mf": "MF", "lightgcn": "lightgcn", "sasrec": "sasrec", "din": "DIN", "binmf": "hash"}
LLM_METHODS = ["collm_mf", "collm_lightgcn", "collm_sasrec", "collm_din", "softprompt", "personprompt",
               "binllm", "binllm_io", "binllm_it", "binllm_ipv4"]


def _common(runs, data, job):
    return [f"datasets.movie_ood.path={data}", f"run.output_dir={runs}", f"run.job_id={job}", "run.device=cpu"]


def _llm_options(runs, data, llama, job):
    return _common(runs, data, job) + [
        f"model.llama_model={llama}", "model.lora_config.r=4", "model.lora_config.alpha=8",
        "model.lora_config.layers_to_transform=[]", "run.max_epoch=1", "run.iters_per_epoch=2",
        "run.batch_size_train=4", "run.warmup_steps=1", "run.max_eval_rows=40", "run.max_train_rows=200",
        "run.test_splits=[test]"]


@pytest.fixture(scope="module")
def stages(tiny_llama, synthetic_dir, tmp_path_factory):
    """Stage 0 of every encoder and stage 1 (TALLRec), each from its shipped config."""
    runs = tmp_path_factory.mktemp("methods")
    out = {"runs": runs, "data": synthetic_dir, "llama": tiny_llama}
    for name in ENCODERS:
        out[name] = main("collab", "stage 0", ["--cfg-path", f"train_configs/ml1m_{name}.yaml", "--options",
                                               *_common(runs, synthetic_dir, name), "run.max_epoch=2"])
    out["tallrec"] = main("llm", "stage 1", ["--cfg-path", "train_configs/ml1m_tallrec.yaml", "--options",
                                             *_llm_options(runs, synthetic_dir, tiny_llama, "tallrec"),
                                             "run.valid_splits=[]"])
    return out


@pytest.mark.parametrize("name", list(ENCODERS))
def test_stage0_configs_train_their_encoder(stages, name):
    metrics = json.loads((stages["runs"] / name / "metrics.json").read_text())
    assert 0 <= metrics["test"]["auc"] <= 1 and metrics["test_cold"]["rows"] > 0
    # rec_model.pth is a state dict of the configured encoder, at the sizes the run used: it loads strictly
    # (every key, every shape) into that encoder built from the run's saved config ...
    run_cfg = OmegaConf.load(stages["runs"] / name / "config.yaml")
    assert run_cfg.model.rec_model == ENCODERS[name]
    run_cfg.model.rec_config.pretrained_path = str(stages["runs"] / name / "rec_model.pth")
    encoder = load_pretrained_encoder(run_cfg.model)
    assert type(encoder) is registry.get("rec_model", ENCODERS[name])
    # ... and it was trained: its weights are not those the seeded run started from
    torch.manual_seed(run_cfg.run.seed)
    init = build_encoder(run_cfg.model).state_dict()
    trained = encoder.state_dict()
    assert set(init) == set(trained)
    assert any(not torch.equal(init[k], trained[k]) for k in init if init[k].is_floating_point())


@pytest.mark.parametrize("method", LLM_METHODS)
def test_llm_method_config_trains_and_scores(stages, method):
    runs = stages["runs"]
    cfg = f"train_configs/ml1m_{method}.yaml"
    options = _llm_options(runs, stages["data"], stages["llama"], method)
    text = OmegaConf.to_yaml(compose(cfg))  # the shipped file with the files its `defaults:` names
    if "ckpt: runs/" in text:  # starts from the stage-1 adapter
        options.append(f"model.ckpt={runs / 'tallrec'}")
    for enc in ENCODERS:
        if f"runs/ml1m/{enc}/rec_model.pth" in text:
            options.append(f"model.rec_config.pretrained_path={runs / enc / 'rec_model.pth'}")
    res = main("llm", method, ["--cfg-path", cfg, "--options", *options])
    assert 0 <= res["test"]["auc"] <= 1 and res["test"]["rows"] == 40
    assert res["train"]["steps"] == 2
    meta = read_meta(runs / method / "checkpoint_best")
    if method.startswith("binllm"):
        assert meta["mode"] == "codes" and meta["code_mode"] == ("ipv4" if method == "binllm_ipv4" else "binary")
    else:
        assert meta["mode"] == "slots" and (runs / method / "checkpoint_best" / "collab_tokens.safetensors").is_file()


def test_binllm_training_lifts_auc_well_above_chance(stages):
    """BinLLM learns from the codes: BinLLM-IO (`ml1m_binllm_io.yaml`, only the user and item codes in the prompt),
    trained from the bare backbone on the synthetic data, where the stage-0 codes carry strong signal (a logistic
    regression on the 64 code bits reaches valid AUC 0.79). Valid = valid_small, 141 rows, never trained on.

    The tiny random backbone needs a stronger recipe than the configs' to learn in seconds: LoRA r 16 on q/v in
    every layer, lr 1e-2 decaying to 1e-3, 500 steps of 16 rows. Measured: untrained 0.52; trained 0.74 with the
    config's seed (42), 0.72 / 0.73 with seeds 0 / 1."""
    runs = stages["runs"]
    options = _common(runs, stages["data"], "binllm_learns") + [
        f"model.llama_model={stages['llama']}", f"model.rec_config.pretrained_path={runs / 'binmf' / 'rec_model.pth'}",
        "model.ckpt=", "model.lora_config.layers_to_transform=[]", "model.lora_config.r=16",
        "model.lora_config.alpha=32", "model.lora_config.dropout=0.0", "run.init_lr=1e-2", "run.min_lr=1e-3",
        "run.warmup_steps=5", "run.weight_decay=0", "run.max_epoch=1", "run.iters_per_epoch=500",
        "run.batch_size_train=16", "run.max_train_rows=0", "run.valid_splits=[]", "run.test_splits=[valid]",
        "run.max_eval_rows=0", "run.batch_size_eval=64", "run.log_freq=100"]
    cfg = ["--cfg-path", "train_configs/ml1m_binllm_io.yaml", "--options"]
    # the starting point: the same model before any step (LoRA's B matrices start at zero)
    before = main("eval", "untrained", cfg + options + ["run.job_id=binllm_untrained"])["valid"]["auc"]
    after = main("llm", "binllm", cfg + options)["valid"]["auc"]
    assert before < 0.6
    assert after >= 0.65 and after - before >= 0.1, (before, after)
