"""run.dtype, run.compile and run.compile_train: what `auto` picks on which hardware, that bf16 and compiled scoring
score like fp32 eager scoring, and that compiled training trains the eager adapter (tiny Llama, synthetic data)."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from test_end_to_end import _llm_yaml

from helpers import encode, left_pad, make_recommender, slot_cfg, write_yaml
from minigpt4 import precision
from minigpt4.batching import TokenizedSplit, TrainBatches
from minigpt4.cli import main
from minigpt4.config import ConfigError, load_config
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.precision import COMPILE_MIN_ROWS, COMPILE_PAD_MULTIPLE, resolve_precision

CPU = torch.device("cpu")


def run_cfg(dtype="auto", amp=True, compile="auto"):
    return SimpleNamespace(dtype=dtype, amp=amp, compile=compile)


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU has the given bf16 features (the suite's BINLLM_CPU_BF16=0 is lifted here, and so is a
    oneDNN limit the suite may run under, docs/TESTING.md)."""
    for key in ("BINLLM_CPU_BF16", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(key, raising=False)

    def set_flags(amx=False, avx512_bf16=False, capability="AVX2"):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    return set_flags


@pytest.mark.parametrize("amx, avx512_bf16, capability, expect", [
    (True, True, "AVX512", torch.bfloat16),     # Sapphire Rapids and later: AMX
    (False, True, "AVX512", torch.bfloat16),    # Cooper Lake, Zen 4: AVX-512 BF16 without AMX
    (False, False, "AVX512", torch.float32),    # Skylake/Cascade Lake: AVX-512 without bf16
    (False, False, "AVX2", torch.float32),      # AVX2 only (Zen 2/3): bf16 is emulated
])
def test_auto_picks_bf16_only_where_the_cpu_multiplies_it(cpu_flags, amx, avx512_bf16, capability, expect):
    cpu_flags(amx, avx512_bf16, capability)
    p = resolve_precision(run_cfg(), CPU)
    assert p.dtype == expect
    assert capability in p.reason and ("AMX" in p.reason if amx else True)
    assert ("emulated" in p.reason) == (expect == torch.float32)


@pytest.mark.parametrize("key, isa, expect", [
    ("ONEDNN_MAX_CPU_ISA", "AVX2", torch.float32),          # oneDNN held to AVX2: 1.0 GFLOP/s bf16 on an AMX Xeon
    ("DNNL_MAX_CPU_ISA", "avx512_core", torch.float32),     # the older name; AVX-512 without its bf16 instructions
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", torch.bfloat16),
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", torch.bfloat16),
])
def test_auto_follows_onednns_instruction_set_limit(cpu_flags, monkeypatch, key, isa, expect):
    """bf16 matmuls run in oneDNN, which a user (or docs/TESTING.md's AVX2 check) can hold below the CPU's own
    instructions: then bf16 is emulated on an AMX CPU too, and `auto` computes in fp32."""
    cpu_flags(amx=True, avx512_bf16=True, capability="AVX512")
    monkeypatch.setenv(key, isa)
    p = resolve_precision(run_cfg(), CPU)
    assert p.dtype == expect
    assert (f"{key}={isa}" in p.reason) == (expect == torch.float32)


def test_explicit_dtype_and_amp(cpu_flags):
    cpu_flags(amx=True, avx512_bf16=True)
    assert resolve_precision(run_cfg("fp32"), CPU).dtype == torch.float32
    assert resolve_precision(run_cfg(amp=False), CPU).dtype == torch.float32  # upstream `amp: False` keeps fp32
    assert "run.amp: False" in resolve_precision(run_cfg(amp=False), CPU).reason
    cpu_flags()  # no bf16 hardware: an explicit bf16 still runs, and says it will be slow
    p = resolve_precision(run_cfg("bf16"), CPU)
    assert p.dtype == torch.bfloat16 and "slower" in p.reason


def test_cuda_resolution(monkeypatch):
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(precision, "cuda_bf16_hardware", lambda device: (True, "H100 has bf16 tensor cores"))
    assert resolve_precision(run_cfg(), gpu).dtype == torch.bfloat16
    assert resolve_precision(run_cfg(amp=False), gpu).dtype == torch.float32
    monkeypatch.setattr(precision, "cuda_bf16_hardware", lambda device: (False, "V100 has no native bf16"))
    assert resolve_precision(run_cfg(), gpu).dtype == torch.float32
    with pytest.raises(ConfigError, match="run.dtype = bf16.*V100"):
        resolve_precision(run_cfg("bf16"), gpu)


def test_environment_override(monkeypatch):
    monkeypatch.setenv("BINLLM_CPU_BF16", "1")
    assert resolve_precision(run_cfg(), CPU).dtype == torch.bfloat16
    monkeypatch.setenv("BINLLM_CPU_BF16", "0")
    assert resolve_precision(run_cfg(), CPU).dtype == torch.float32


def test_compile_decision(cpu_flags):
    cpu_flags(amx=True)
    bf16 = resolve_precision(run_cfg(), CPU)
    assert bf16.compile_scoring(COMPILE_MIN_ROWS)[0]
    assert not bf16.compile_scoring(COMPILE_MIN_ROWS - 1)[0]  # a small split cannot pay back the compile
    fp32 = resolve_precision(run_cfg("fp32"), CPU)
    assert not fp32.compile_scoring(10**6)[0]  # fp32 on a CPU: measured no gain
    assert resolve_precision(run_cfg("fp32", compile="true"), CPU).compile_scoring(5)[0]
    assert not resolve_precision(run_cfg(compile="false"), CPU).compile_scoring(10**6)[0]


def test_config_keys(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", "model: {}\ndatasets:\n  synthetic: {path: x}\nrun:\n  compile: True\n")
    run = load_config(cfg).run
    assert (run.dtype, run.compile) == ("auto", "true")
    assert load_config(cfg, ["run.compile=False", "run.dtype=bf16"]).run.compile == "false"
    with pytest.raises(ConfigError, match=r"run.dtype must be one of \['auto', 'fp32', 'bf16'\]"):
        load_config(cfg, ["run.dtype=float16"])


# ------------------------------------------------------------------------------------ scores through the CLI
@pytest.fixture(scope="module")
def evals(tiny_llama, synthetic_dir, tmp_path_factory):
    """The base model (fresh LoRA) scored three ways: fp32 eager, bf16, fp32 compiled."""
    d = tmp_path_factory.mktemp("precision")
    cfg = _llm_yaml(d, "eval", synthetic_dir, d / "runs", tiny_llama, "v2", "prompts/tallrec_movie.txt")
    out = {}
    for job, options in (("fp32", ["run.dtype=fp32"]), ("bf16", ["run.dtype=bf16"]),
                         ("compiled", ["run.dtype=fp32", "run.compile=true"])):
        main("eval", "eval", ["--cfg-path", str(cfg), "--options", f"run.job_id={job}", *options])
        run = d / "runs" / job
        out[job] = {"metrics": json.loads((run / "metrics.json").read_text()),
                    "scores": pd.read_csv(run / "predictions_test.csv")}
    return out


@pytest.mark.slow
def test_bf16_scores_equal_fp32_scores_within_tolerance(evals):
    a, b = (evals[k]["scores"] for k in ("fp32", "bf16"))
    assert (a[["uid", "iid", "label"]].to_numpy() == b[["uid", "iid", "label"]].to_numpy()).all()
    x, y = a["score"].to_numpy(), b["score"].to_numpy()
    # bf16 keeps 8 mantissa bits: on the tiny model (score sd ~0.6) scores moved by at most 0.044 (7% of the sd)
    assert np.abs(x - y).max() <= 0.15 * x.std()
    assert np.corrcoef(x, y)[0, 1] > 0.999
    assert evals["bf16"]["metrics"]["test"]["auc"] == pytest.approx(evals["fp32"]["metrics"]["test"]["auc"], abs=0.02)
    assert evals["bf16"]["metrics"]["precision"]["dtype"] == "bf16"
    info = evals["fp32"]["metrics"]["precision"]
    assert info["dtype"] == "fp32" and info["why"] == "run.dtype: fp32" and info["compiled"] is False
    assert "too few" in info["compile_why"]  # auto: 40 rows cannot pay back a compile


@pytest.mark.slow
def test_compiled_scoring_equals_eager_scoring(evals):
    eager, compiled = evals["fp32"], evals["compiled"]
    np.testing.assert_allclose(compiled["scores"]["score"], eager["scores"]["score"], atol=1e-4)
    assert compiled["metrics"]["test"]["auc"] == pytest.approx(eager["metrics"]["test"]["auc"], abs=1e-6)
    info = compiled["metrics"]["precision"]
    assert info["compiled"] is True and info["compile_s"] > 0 and eager["metrics"]["precision"]["compiled"] is False


def test_bf16_training_keeps_trained_weights_fp32(tiny_llama, synthetic_dir, tmp_path):
    """A bf16 run: frozen backbone in bf16, LoRA weights (and so their AdamW state) in fp32, finite loss."""
    cfg = _llm_yaml(tmp_path, "train", synthetic_dir, tmp_path / "runs", tiny_llama, "v2", "prompts/tallrec_movie.txt")
    results = main("llm", "stage 1", ["--cfg-path", str(cfg), "--options", "run.job_id=bf16", "run.dtype=bf16",
                                      "run.max_epoch=1", "run.iters_per_epoch=3", "run.batch_size_train=4",
                                      "run.warmup_steps=1", "run.init_lr=1e-3", "run.valid_splits=[]"])
    assert results["precision"]["dtype"] == "bf16" and results["train"]["steps"] == 3
    from safetensors.torch import load_file

    adapter = load_file(str(tmp_path / "runs" / "bf16" / "checkpoint_best" / "adapter_model.safetensors"))
    assert adapter and all(t.dtype == torch.float32 for t in adapter.values())
    assert np.isfinite(results["test"]["auc"])


def test_compile_train_with_fsdp_is_a_config_error(tmp_path):
    cfg = write_yaml(tmp_path / "c.yaml", "model: {}\ndatasets:\n  synthetic: {path: x}\nrun: {}\n")
    assert load_config(cfg, ["run.compile_train=True"]).run.compile_train is True
    with pytest.raises(ConfigError, match="run.compile_train with run.fsdp"):
        load_config(cfg, ["run.compile_train=True", "run.fsdp=True"])


def test_training_batches_padded_for_a_compiled_forward_hold_the_same_prompts(tiny_llama):
    """run.compile_train pads each training micro-batch to a multiple of 16 tokens: same rows, same tokens,
    more left padding only."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    lengths = np.random.default_rng(0).integers(3, 60, 40)
    rows = pd.DataFrame({"uid": np.arange(40), "iid": np.arange(40) + 100, "label": np.arange(40) % 2})
    split = TokenizedSplit(tok, [" ".join(["film"] * n) for n in lengths], rows, 10**6)
    plain = TrainBatches(split, 4, seed=3, bucket=2)
    padded = TrainBatches(split, 4, seed=3, bucket=2, pad_multiple=COMPILE_PAD_MULTIPLE)
    widths = set()
    for _ in range(15):  # past a pass's end (10 batches)
        a, b = next(plain), next(padded)
        w, wide = a["input_ids"].shape[1], b["input_ids"].shape[1]
        assert wide % COMPILE_PAD_MULTIPLE == 0 and w <= wide < w + COMPILE_PAD_MULTIPLE
        assert torch.equal(b["users"], a["users"]) and torch.equal(b["labels"], a["labels"])
        assert torch.equal(b["input_ids"][:, -w:], a["input_ids"]) and torch.equal(b["attention_mask"][:, -w:],
                                                                                   a["attention_mask"])
        assert int(b["attention_mask"][:, :wide - w].sum()) == 0
        widths.add(wide)
    assert len(widths) <= 4  # prompts of 4-61 tokens: widths 16, 32, 48, 64


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_compiled_training_trains_the_eager_adapter(tiny_llama, synthetic_dir, tmp_path, monkeypatch, checkpointing):
    """run.compile_train: the same steps through the compiled forward and backward give the eager run's losses
    and adapter (no LoRA dropout: compiled code draws its own random numbers), also with run.grad_checkpointing."""
    from safetensors.torch import load_file

    cfg = _llm_yaml(tmp_path, "train", synthetic_dir, tmp_path / "runs", tiny_llama, "v2", "prompts/tallrec_movie.txt")
    common = ["run.dtype=fp32", "run.max_epoch=1", "run.iters_per_epoch=3", "run.warmup_steps=1", "run.init_lr=1e-3",
              "run.valid_splits=[]", "model.lora_config.dropout=0.0", "run.max_eval_rows=16",
              f"run.grad_checkpointing={checkpointing}"]
    out, compiled_modules, compile = {}, [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled_modules.append(type(m).__name__) or compile(m, **kw))
    for job, extra in (("eager", []), ("compiled", ["run.compile_train=True"])):
        main("llm", "stage 1", ["--cfg-path", str(cfg), "--options", f"run.job_id={job}", *common, *extra])
        assert compiled_modules == ([] if job == "eager" else ["LLMRecommender"])  # scoring 16 rows: not compiled
        run = tmp_path / "runs" / job
        losses = [json.loads(line)["train_loss"] for line in (run / "log.jsonl").read_text().splitlines()
                  if "train_loss" in line]
        out[job] = losses, load_file(str(run / "checkpoint_best" / "adapter_model.safetensors"))
    (eager_loss, eager), (compiled_loss, compiled) = out["eager"], out["compiled"]
    np.testing.assert_allclose(compiled_loss, eager_loss, rtol=1e-5)
    assert eager.keys() == compiled.keys() and eager
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("slots", [None, "MF", "sasrec", "DIN", "soft_prompt"])
def test_the_training_forward_compiles_to_one_graph(tiny_llama, tmp_path, slots):
    """What run.compile_train compiles has no graph break: one graph the compiler fuses whole, and the
    precondition for CUDA graphs. A break (a host read of a tensor, an unsupported call) would split it. None:
    codes as text (BinLLM, TALLRec); else CoLLM / prompt-tuning slots filled by that encoder or table. (LightGCN
    is the exception: torch.compile does not take its sparse propagation, which runs eagerly between graphs.)"""
    if slots is None:
        rec = make_recommender(tmp_path, tiny_llama)
    else:
        rec = LLMRecommender.from_config(slot_cfg(tmp_path, tiny_llama, slots, 1).model, slots=True)
    ids, mask = left_pad(encode(rec.tokenizer, ["#Question: A user watched Heat. Will they enjoy Up?", "Big?"]),
                         rec.tokenizer.pad_token_id)
    extra = {}
    if slots is not None:
        ids[:, -2:] = torch.tensor([-1, -2])  # a user slot and an item slot per prompt, as TokenizedSplit marks them
        extra = {"users": torch.tensor([1, 2]), "items": torch.tensor([3, 4]), "his": torch.tensor([[0, 1], [0, 5]])}
    torch._dynamo.reset()
    explained = torch._dynamo.explain(rec.train())(input_ids=ids, attention_mask=mask, **extra)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons
