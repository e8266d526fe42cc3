"""The documented chains of shipped configs, run in order, each stage reading the earlier stages' outputs through
the paths the configs themselves name (`model.ckpt`, `model.rec_config.pretrained_path`):

* ML-1M (README): ml1m_binmf -> ml1m_tallrec -> ml1m_binllm -> ml1m_eval;
* CoLLM-MF: ml1m_mf (+ ml1m_tallrec) -> ml1m_collm_mf;
* upstream BinLLM (hash_CF_ml.yaml's header): ml1m_binmf -> collm_pretrain_mf_ood -> hash_CF_ml -> eval.

Only sizes change on the command line (epochs, steps, batches, rows, device). The wiring keys (ckpt,
pretrained_path, score_type, LoRA layout, learning rates) and every path stay as shipped: the stages run from a
temporary working directory whose `data/ml-1m` is the synthetic data set and whose `runs/` starts empty, so the
shipped `runs/ml1m/...` values name this test's own outputs. The backbone stays `smollm2` as well: `$BINLLM_CACHE`
points at a cache whose converted SmolLM2 directory holds a tiny random 9-layer Llama with SmolLM2's tokenizer.
Overriding model.llama_model with a directory instead would switch the `${backbone:...}` profile from smollm2.yaml
(LoRA in the top 8 layers) to default.yaml (every layer) and so change the LoRA layout under test; with 9 layers
the top-8 layout leaves layer 0 without adapters, as it leaves 22 of SmolLM2's 30.
"""

import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from helpers import tiny_llama_config
from minigpt4.cli import main
from minigpt4.config import compose
from minigpt4.train.checkpoint import read_meta

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "train_configs"
STAGE = {"pretrain_collab.py": "collab", "train_collm_mf_din.py": "llm", "train_binllm.py": "llm", "eval.py": "eval"}
# Size overrides only, per stage kind: a few steps on a few rows of the synthetic data, on the CPU.
SIZES = {
    "collab": ["run.max_epoch=2", "run.device=cpu"],
    "llm": ["run.max_epoch=1", "run.iters_per_epoch=2", "run.batch_size_train=2", "run.batch_size_eval=16",
            "run.warmup_steps=1", "run.max_train_rows=50", "run.max_eval_rows=16", "run.device=cpu"],
    # 40 rows: test_warm and test_cold both get some
    "eval": ["run.batch_size_eval=16", "run.max_eval_rows=40", "run.device=cpu"],
}

# The chains as documented: (script, config, the documented --options).
ML1M = [("pretrain_collab.py", "ml1m_binmf", ()), ("train_collm_mf_din.py", "ml1m_tallrec", ()),
        ("train_binllm.py", "ml1m_binllm", ()), ("eval.py", "ml1m_eval", ())]
COLLM_MF = [("pretrain_collab.py", "ml1m_mf", ()), ("train_collm_mf_din.py", "ml1m_tallrec", ()),
            ("train_collm_mf_din.py", "ml1m_collm_mf", ())]
UPSTREAM = [("pretrain_collab.py", "ml1m_binmf", ()), ("train_collm_mf_din.py", "collm_pretrain_mf_ood", ()),
            ("train_binllm.py", "hash_CF_ml", ()),
            ("eval.py", "hash_CF_ml", ("run.job_id=upstream_binllm_eval",
                                       "model.ckpt=runs/ml1m/upstream_binllm/checkpoint_best"))]


@pytest.fixture(scope="module")
def smollm2_standin(tiny_llama, tmp_path_factory):
    """A binllm cache whose converted `smollm2` is a seeded random 9-layer Llama (hidden 32)."""
    from transformers import AutoTokenizer, LlamaForCausalLM

    from minigpt4.llm.embedded import EMBEDDED, hf_dir

    cache = tmp_path_factory.mktemp("binllm_cache")
    target = hf_dir(EMBEDDED["smollm2"], cache)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))  # SmolLM2's tokenizer
    tokenizer.save_pretrained(str(target))
    config = tiny_llama_config(tokenizer, 9)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(target))
    return cache


class Workspace:
    """The working directory of the chains; runs each documented command once (a later chain reuses an earlier
    chain's output of the same command, as a user's runs/ml1m/ would)."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.done = {}

    def run(self, script, config, options=()):
        key = (script, config, tuple(options))
        if key not in self.done:
            argv = ["--cfg-path", str(CONFIGS / f"{config}.yaml"), "--options", *SIZES[STAGE[script]], *options]
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                results = main(STAGE[script], script, argv)
            self.done[key] = results, out.getvalue()
        return self.done[key]

    def run_dir(self, script, config, options=()):
        """The run directory the command wrote, read from the resolved config it saved."""
        cfg = compose(CONFIGS / f"{config}.yaml")  # the shipped file with the files its `defaults:` names
        job = dict(o.split("=", 1) for o in options).get("run.job_id", cfg.run.job_id)
        return self.cwd / cfg.run.output_dir / job

    def run_chain(self, chain):
        for step in chain:
            self.run(*step)
            assert (self.run_dir(*step) / "config.yaml").is_file(), step


@pytest.fixture(scope="module")
def ws(smollm2_standin, synthetic_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("chain_cwd")
    (cwd / "data").mkdir()
    (cwd / "data" / "ml-1m").symlink_to(synthetic_dir, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)  # relative paths resolve here first (config.resolve_path), prompts/ falls back to the repo
        mp.setenv("BINLLM_CACHE", str(smollm2_standin))
        yield Workspace(cwd)


def _saved_cfg(run):
    return OmegaConf.load(run / "config.yaml")


def _adapter(ckpt):
    from safetensors.torch import load_file

    return load_file(str(Path(ckpt) / "adapter_model.safetensors"))


def _check_wiring(ws, chain):
    """Every ckpt / pretrained_path a stage used is the output of an earlier stage of the chain, in the workspace,
    and the run says it loaded that checkpoint."""
    earlier_ckpts, earlier_encoders = [], []
    for step in chain:
        run = ws.run_dir(*step)
        cfg = _saved_cfg(run)
        _, stdout = ws.run(*step)
        if STAGE[step[0]] == "collab":
            earlier_encoders.append((run / "rec_model.pth").resolve())
            continue
        if cfg.model.ckpt:
            used = (ws.cwd / cfg.model.ckpt).resolve()
            assert used in earlier_ckpts, f"{step[1]}: model.ckpt {cfg.model.ckpt} is no earlier stage's output"
            assert f"loaded {cfg.model.ckpt}" in stdout, step
        if cfg.run.mode == "v3" or "<UserID>" in (ROOT / cfg.model.prompt_path).read_text():
            used = (ws.cwd / cfg.model.rec_config.pretrained_path).resolve()
            assert used in earlier_encoders, f"{step[1]}: pretrained_path {used} is no earlier stage's output"
        if (run / "checkpoint_best").is_dir():
            earlier_ckpts.append((run / "checkpoint_best").resolve())


def test_ml1m_chain_binmf_tallrec_binllm_eval(ws):
    ws.run_chain(ML1M)
    _check_wiring(ws, ML1M)
    tallrec, binllm = (ws.run_dir(*s) / "checkpoint_best" for s in ML1M[1:3])
    assert read_meta(tallrec)["mode"] == "text" and read_meta(binllm)["mode"] == "codes"
    assert read_meta(tallrec)["score_type"] == read_meta(binllm)["score_type"] == "yes_minus_no"
    # stage 2 continued stage 1's adapter: the same adapted layers (the profile's top 8 of 9), all trained on
    adapted = {int(m) for m in re.findall(r"layers\.(\d+)\.", " ".join(_adapter(tallrec)))}
    assert adapted == set(range(1, 9))
    assert set(_adapter(binllm)) == set(_adapter(tallrec))
    ev = json.loads((ws.run_dir(*ML1M[3]) / "metrics.json").read_text())
    assert set(ev) >= {"test", "test_warm", "test_cold"} and ev["test"]["rows"] > 0
    assert 0.0 <= ev["test"]["auc"] <= 1.0


def test_collm_mf_chain(ws):
    ws.run_chain(COLLM_MF)
    _check_wiring(ws, COLLM_MF)
    tallrec, collm = (ws.run_dir(*s) / "checkpoint_best" for s in COLLM_MF[1:])
    assert read_meta(collm)["mode"] == "slots" and read_meta(collm)["rec_model"] == "MF"
    # freeze_lora: the stage-1 adapter, loaded and kept bit for bit
    a, b = _adapter(tallrec), _adapter(collm)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_upstream_chain_collm_pretrain_then_hash_cf_ml(ws):
    ws.run_chain(UPSTREAM)
    _check_wiring(ws, UPSTREAM)
    stage1, stage2 = (ws.run_dir(*s) / "checkpoint_best" for s in UPSTREAM[1:3])
    assert read_meta(stage1)["mode"] == "text" and read_meta(stage2)["mode"] == "codes"
    assert read_meta(stage1)["score_type"] == read_meta(stage2)["score_type"] == "yes"  # upstream: the raw Yes logit
    adapted = {int(m) for m in re.findall(r"layers\.(\d+)\.", " ".join(_adapter(stage1)))}
    assert adapted == set(range(9))  # upstream: LoRA in every layer
    assert set(_adapter(stage2)) == set(_adapter(stage1))
    # the documented eval scores the stage-2 checkpoint: the same scores on the test rows both runs scored (the
    # eval stage samples more rows)
    trained, ev = (pd.read_csv(ws.run_dir(*s) / "predictions_test.csv") for s in UPSTREAM[2:])
    both = trained.merge(ev, on=["uid", "iid", "label"], suffixes=("_trained", "_eval"), validate="one_to_one")
    assert len(both) >= 10
    assert both["score_eval"].to_numpy() == pytest.approx(both["score_trained"].to_numpy(), abs=1e-5)


def _documented(text):
    """(script, config, options) of each `python X.py --cfg-path train_configs/Y.yaml [--options ...]` line."""
    out = []
    for line in text.splitlines():
        m = re.search(r"python (\S+\.py) --cfg-path train_configs/(\S+)\.yaml(.*)", line)
        if m:
            words = shlex.split(m.group(3).split("#")[0])
            out.append((m.group(1), m.group(2), tuple(words[1:]) if words[:1] == ["--options"] else ()))
    return out


def test_headers_and_readme_document_the_chains_tested_here():
    header = lambda name: "".join(l for l in (CONFIGS / f"{name}.yaml").open() if l.startswith("#"))  # noqa: E731
    assert _documented(header("hash_CF_ml")) == UPSTREAM
    assert _documented(header("collm_pretrain_mf_ood")) == UPSTREAM[:3]
    readme = [s for s in _documented((ROOT / "README.md").read_text()) if s[1] in {c for _, c, _ in ML1M}]
    assert readme[:len(ML1M)] == ML1M
