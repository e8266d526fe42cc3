"""The memory estimate (minigpt4/llm/memory.py): traced on the meta device, it must agree with the same trace on
real tensors, and respond to each setting the way the memory it predicts does."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from helpers import ROOT, model_cfg, slot_cfg
from minigpt4.llm.backbone import set_checkpointing
from minigpt4.llm.memory import (
    GIB,
    LoraShape,
    _lora,
    _meta_model,
    _storages,
    advice,
    estimate_memory,
    lora_shape,
    report,
    trace_step,
)
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.precision import Precision, cpu_bf16_native
from minigpt4.recipes import finetune_llm
from minigpt4.train.optim import adamw

CFG = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=300)


def real_model(dtype, lora=LoraShape(r=4)):
    model = AutoModelForCausalLM.from_config(CFG, dtype=dtype, attn_implementation="sdpa")
    model.requires_grad_(False)
    return _lora(model, lora).train()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_meta_trace_matches_real_tensors(dtype):
    """Kept and peak bytes alike, for both kernels' dropout (a real CPU run follows the CPU's)."""
    for device_type in ("cpu", "cuda"):
        meta = trace_step(_lora(_meta_model(CFG, dtype), LoraShape(r=4)).train(), 3, 20, device_type=device_type)
        real = trace_step(real_model(dtype), 3, 20, device_type=device_type)
        assert meta.kept == pytest.approx(real.kept, rel=0.01) and meta.peak == pytest.approx(real.peak, rel=0.01)


def _kept_by_pytorchs_own_kernel(model, batch, seq_len):
    """What autograd keeps in a plain forward on CPU tensors, where PyTorch runs its fused (flash) attention."""
    params, saved = {p.untyped_storage()._cdata for p in model.parameters()}, {}

    def pack(t):
        if t.untyped_storage()._cdata not in params:
            saved[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    mask = torch.ones(batch, 1, seq_len, seq_len, dtype=torch.bool).tril()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=torch.zeros(batch, seq_len, dtype=torch.long), attention_mask=mask, use_cache=False)
    return sum(saved.values())


def test_trace_keeps_what_a_fused_attention_kernel_keeps():
    """On meta tensors PyTorch would trace its math attention, which keeps every attention matrix (a 7B estimate
    came out 60% above the H200's measured peak); the trace keeps what a fused kernel keeps, as CPU flash does."""
    meta = trace_step(_lora(_meta_model(CFG, torch.float32), LoraShape(r=4)).train(), 2, 256).kept
    fused = _kept_by_pytorchs_own_kernel(real_model(torch.float32), 2, 256)
    assert meta == pytest.approx(fused, rel=0.05)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):  # the matrices the estimate leaves out: far more at this length
        assert _kept_by_pytorchs_own_kernel(real_model(torch.float32), 2, 256) > 1.2 * fused


def test_real_trace_counts_what_autograd_keeps():
    # forward with batch 2b keeps twice what batch b keeps; the frozen weights are never counted
    model = real_model(torch.float32)
    one, two = trace_step(model, 2, 16).kept, trace_step(model, 4, 16).kept
    assert two == pytest.approx(2 * one, rel=0.02)
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert one < weights  # a tiny batch keeps less than the model's weights


def test_weights_and_trained_parameters():
    est = estimate_memory(CFG, dtype=torch.bfloat16, lora=LoraShape(r=4), batch=2, seq_len=16)
    n = sum(p.numel() for p in AutoModelForCausalLM.from_config(CFG).parameters())
    lora = 4 * (4 * (64 + 64) + 4 * (64 + 32))  # 4 layers of r=4 adapters on q (64->64) and v (64->32)
    assert est.setting["params"] == n + lora
    assert est.weights == pytest.approx(n * 2 / GIB)
    tied = LlamaConfig(**{**CFG.to_dict(), "tie_word_embeddings": True})
    assert estimate_memory(tied, lora=LoraShape(r=4), batch=2, seq_len=16).weights == pytest.approx(
        (n - 64 * 300) * 2 / GIB)  # tied input and output embeddings are one tensor
    assert est.trained == pytest.approx(lora * 16 / GIB)  # fp32 weight, gradient and two AdamW moments


def test_settings_move_the_estimate_the_right_way():
    base = dict(dtype=torch.bfloat16, lora=LoraShape(r=4), batch=4, seq_len=32)
    plain = estimate_memory(CFG, **base)
    assert estimate_memory(CFG, **dict(base, batch=8)).activations == pytest.approx(2 * plain.activations, rel=0.02)
    assert estimate_memory(CFG, **base, grad_checkpointing=True).activations < plain.activations / 2
    top = estimate_memory(CFG, **dict(base, lora=LoraShape(r=4, layers=(-1,))))
    assert top.activations < plain.activations / 2  # backward stops at the lowest adapted layer
    slots = estimate_memory(CFG, **dict(base, lora=LoraShape(r=4, layers=(-1,))), slots=True)
    assert slots.activations > top.activations  # vectors with gradients at the input: every layer keeps
    assert estimate_memory(CFG, **base, processes=4, fsdp=True).weights == pytest.approx(plain.weights / 4)
    assert estimate_memory(CFG, **base, load_in_bits=4).weights < plain.weights
    scoring = estimate_memory(CFG, **base, train=False)
    assert scoring.activations == 0 and scoring.trained == 0 and scoring.total < plain.total
    # LoRA's dropout keeps a one-byte mask on a GPU, its fp32 noise on a CPU; without dropout they are the same
    assert estimate_memory(CFG, **base, device_type="cpu").activations > plain.activations
    no_dropout = dict(base, lora=LoraShape(r=4, dropout=0.0))
    assert estimate_memory(CFG, **no_dropout, device_type="cpu").activations == pytest.approx(
        estimate_memory(CFG, **no_dropout).activations)
    frozen = estimate_memory(CFG, **dict(base, lora=LoraShape(r=4, trained=False)), slots=True)
    lora_and_slots = estimate_memory(CFG, **base, slots=True)
    assert frozen.trained == 0 and frozen.activations < lora_and_slots.activations  # nothing kept for adapter grads
    assert frozen.weights > plain.weights  # the frozen adapters are stored with the backbone
    assert plain.transient > 0  # backward's gradients
    assert estimate_memory(CFG, **base, grad_checkpointing=True).transient > plain.transient  # + the recomputed layer


def test_describe_and_advice():
    setting = dict(dtype=torch.bfloat16, lora=LoraShape(r=4), batch=64, seq_len=256)
    est = estimate_memory(CFG, **setting)
    text = est.describe(available_gib=1.0)
    assert f"needs ~{est.total:.1f} GiB per GPU" in text and "this GPU has 1.0 GiB" in text
    room = est.total - est.activations / 2  # fits only once the kept activations shrink
    found = advice(CFG, est, room / 0.95, **setting)
    keys = [k for k, _ in found]
    assert keys[0] == "run.grad_checkpointing: True"
    assert all(e.fits(room / 0.95) for _, e in found)
    assert "model.load_in_8bit: True" not in keys  # the weights are not the problem here
    assert advice(CFG, est, 0.001, **setting) == []


def test_report_lines():
    setting = dict(dtype=torch.bfloat16, lora=LoraShape(r=4), batch=64, seq_len=256)
    est = estimate_memory(CFG, **setting)
    assert report(CFG, 80.0, **setting) == [est.describe(80.0)]  # fits: the estimate only
    room = (est.total - est.activations / 2) / 0.95
    lines = report(CFG, room, **setting)
    assert lines[0] == est.describe(room) and "does not fit" not in lines[0]
    assert f"will not fit in {room:.1f} GiB; each of these alone makes it fit:" in lines[1]
    assert lines[2].startswith("  run.grad_checkpointing: True (needs ~")
    assert "no single setting makes it fit" in report(CFG, 0.001, **setting)[1]
    scoring = report(CFG, 0.001 + estimate_memory(CFG, **dict(setting, train=False, batch=8)).total / 0.95,
                     **dict(setting, train=False))
    assert any(line.startswith("  run.batch_size_eval: ") for line in scoring)  # scoring: its own batch key
    assert not any("grad_checkpointing" in line or "batch_size_train" in line for line in scoring)


def test_lora_shape_of_the_config(tmp_path, tiny_llama):
    lora = model_cfg(tmp_path, tiny_llama, targets=("q_proj", "k_proj")).model.lora_config
    lora.layers_to_transform = [-1]
    assert lora_shape(lora) == LoraShape(r=4, target_modules=("q_proj", "k_proj"), layers=(-1,), dropout=0.0)
    lora.use_lora = False
    assert lora_shape(lora) is None


@pytest.mark.parametrize("total_gib", [80.0, 1e-3])
def test_gpu_run_prints_the_estimate_before_loading(tmp_path, tiny_llama, monkeypatch, capsys, total_gib):
    """The stage-2 recipe's GPU line, with the GPU's size and the data faked: the longest prompt is measured with
    the backbone's tokenizer, the estimate sized from run and model keys, advice added when it does not fit."""
    cfg = model_cfg(tmp_path, tiny_llama)
    cfg.run.batch_size_train = 8
    seen = {}

    def token_splits(tokenizer, prompt, names, codes, history_len=0, mode=None):
        seen.update(tokenizer=tokenizer, names=names)
        return {names[0]: SimpleNamespace(lengths=np.array([30, 77, 12]))}

    task = SimpleNamespace(token_splits=token_splits)
    d = SimpleNamespace(evaluate=False, mode="text", prompt="x", codes=None, lora=cfg.model.lora_config)
    gpu = SimpleNamespace(total_memory=total_gib * GIB)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: gpu)
    recording = _recording(estimate_memory)
    monkeypatch.setattr(finetune_llm.memory, "estimate_memory", recording)
    finetune_llm.print_memory_estimate(cfg, d, task, torch.float32, torch.device("cpu"))
    out = capsys.readouterr().out.splitlines()
    assert seen["names"] == ["train"] and seen["tokenizer"].padding_side == "left"
    first = recording.calls[0]
    assert (first["batch"], first["seq_len"], first["train"], first["processes"], first["load_in_bits"]) == (
        8, 77, True, 1, None)
    assert first["lora"] == LoraShape(r=4, target_modules=("q_proj", "v_proj"), layers=(), dropout=0.0)
    assert out[0].startswith("memory estimate: needs ~") and f"this GPU has {total_gib:.1f} GiB" in out[0]
    assert (len(out) == 1) == (total_gib == 80.0)  # advice only when it does not fit


def _recording(function):
    def wrapper(*args, **kwargs):
        wrapper.calls.append(kwargs)
        return function(*args, **kwargs)

    wrapper.calls = []
    return wrapper


def cpu_peak_bytes(step):
    """The most bytes PyTorch's CPU allocator held during `step()` above what it held before: torch.profiler's
    allocation and free events replayed in time order (the CPU's counterpart of torch.cuda.max_memory_allocated,
    which the GPU check compares the estimate against). The raw event list is read because FunctionEvents fold an
    op's allocations into the op and lose their order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return peak


def measured_and_estimated_gib(cfg, dtype, batch, seq_len, checkpointing, slots=False):
    """(measured, estimated) GiB of one training step of the framework's model on the CPU: the stored weights plus
    the peak of forward under the run's autocast, BCE, backward and AdamW's first step (which makes its moments);
    the estimate without its assumed CUDA context and slack. slots: CoLLM's, the user's and the item's vector."""
    torch.manual_seed(0)
    rec = LLMRecommender.from_config(cfg.model, dtype=dtype, slots=slots).train()
    set_checkpointing(rec.causal_lm, checkpointing)
    optimizer = adamw([p for p in rec.parameters() if p.requires_grad], torch.device("cpu"), lr=1e-3)
    ids = torch.randint(100, 1000, (batch, seq_len))
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[0, : seq_len // 3] = 0  # a left-padded row, as real batches have
    labels = torch.arange(batch) % 2
    ids_of = {}
    if slots:
        ids[:, seq_len // 2], ids[:, -8] = -1, -2  # the slot marks, batching.TokenizedSplit's
        ids_of = {"users": torch.arange(batch) % cfg.model.user_num, "items": torch.arange(batch) % cfg.model.item_num}

    def step():
        with Precision(dtype, "cpu", "test").autocast():
            loss = rec.loss(rec(ids, mask, **ids_of), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    stored = sum(_storages([*rec.parameters(), *rec.buffers()]).values())
    measured = (stored + cpu_peak_bytes(step)) / GIB
    lora = lora_shape(cfg.model.lora_config, trained=not cfg.model.freeze_lora)
    est = estimate_memory(rec.causal_lm.config, dtype=dtype, lora=lora, batch=batch, seq_len=seq_len,
                          grad_checkpointing=checkpointing, slots=slots, device_type="cpu")
    return measured, est.total - est.overhead


# The checks that need a realistic size (SmolLM2, a wide model over 2 processes) compute in bf16 only where the CPU
# multiplies it natively. Where bf16 is emulated (an AVX2-only CPU: ~100x slower than fp32) they took 13 min and more
# than 14 min a case, so there they check the same estimate against the same measurement in fp32.
REAL_SIZE_DTYPE = (pytest.param(torch.bfloat16, id="bf16_native") if cpu_bf16_native()[0]
                   else pytest.param(torch.float32, id="fp32_bf16_emulated"))


def _lora_cfg(tmp_path, llama):
    return model_cfg(tmp_path, llama, r=8, dropout=0.05, name="lora.yaml")  # the shipped LoRA shape


@pytest.mark.parametrize("dtype,checkpointing", [(torch.float32, False), (torch.bfloat16, False),
                                                 (torch.bfloat16, True)], ids=["fp32", "bf16", "bf16_checkpointing"])
def test_estimate_against_the_measured_cpu_peak_tiny(tmp_path, tiny_llama, dtype, checkpointing):
    measured, estimated = measured_and_estimated_gib(_lora_cfg(tmp_path, tiny_llama), dtype, 8, 128, checkpointing)
    assert estimated == pytest.approx(measured, rel=0.03)


@pytest.mark.parametrize("config_class,extra", [("Qwen2Config", {}), ("Gemma3TextConfig", {"head_dim": 8})],
                         ids=["qwen2", "gemma3"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_estimate_against_the_measured_cpu_peak_other_backbones(tmp_path, tiny_llama, config_class, extra,
                                                                checkpointing):
    """The other architectures the framework runs (Qwen2: biased projections; Gemma3: tied embeddings, sliding
    attention, embedding scale), tiny and random, in bf16."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_llama))
    config = getattr(transformers, config_class)(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **extra)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    measured, estimated = measured_and_estimated_gib(_lora_cfg(tmp_path, tmp_path / "lm"), torch.bfloat16, 8, 128,
                                                     checkpointing)
    assert estimated == pytest.approx(measured, rel=0.03)


@pytest.mark.parametrize("extra", ["", "  freeze_lora: True\n"], ids=["lora_and_slots", "slots_frozen_lora"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_estimate_against_the_measured_cpu_peak_slots(tmp_path, tiny_llama, extra, checkpointing):
    """CoLLM's slots: gradients reach the input, so every layer keeps; with model.freeze_lora (its stage 2) the
    adapters keep less, since no gradient of theirs is needed (the estimate was 10% high before it knew)."""
    cfg = slot_cfg(tmp_path, tiny_llama, extra=extra)
    measured, estimated = measured_and_estimated_gib(cfg, torch.bfloat16, 8, 128, checkpointing, slots=True)
    assert estimated == pytest.approx(measured, rel=0.03)


@pytest.mark.slow
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("dtype", [REAL_SIZE_DTYPE])
def test_estimate_against_the_measured_cpu_peak_smollm2(tmp_path, dtype, checkpointing):
    """SmolLM2-135M at an ML-1M prompt length (measured on an AVX-512 BF16 CPU: bf16 1.75 GiB plain, 0.39 with
    checkpointing, the estimates 0.3% and 2.7% above; before the trace followed bf16 autocast the plain one was 10%
    above; fp32 2.97 GiB, the estimate 0.2% above)."""
    measured, estimated = measured_and_estimated_gib(_lora_cfg(tmp_path, "smollm2"), dtype, 8, 256, checkpointing)
    assert estimated == pytest.approx(measured, rel=0.04)


# The widest batch each series of the H200 check trained or scored (its ML-1M prompts, SmolLM2's tokenizer, batches
# drawn as benchmark.our_train_steps / our_score draw them); the report of that first check did not record them.
H200_WIDEST = {8: 274, 16: 264, 32: 269, 64: 335, 128: 335}
H200_SCORING_WIDEST = 335


@pytest.mark.slow
def test_estimate_against_the_h200_measurements():
    """The 7B shape's peak allocated memory measured on one H200 (results/gpu/nvidia-h200), training with and
    without checkpointing and scoring: each estimate within 3% (before the trace followed bf16 autocast, the GPU's
    one-byte dropout mask and backward, it was up to 24% high without checkpointing and 7% low with it)."""
    shape = json.loads((ROOT / "results/gpu/nvidia-h200/report.json").read_text())["7b_shape"]
    config = LlamaConfig(vocab_size=shape["vocab"], **shape["sizes"])
    ours = [r for r in shape["train"] + shape["score"] if r.get("path") == "ours" and "peak_memory_gib" in r]
    assert len(ours) >= 14
    for r in ours:
        train = "checkpointing" in r
        width = H200_WIDEST[r["batch"]] if train else H200_SCORING_WIDEST
        est = estimate_memory(config, dtype=torch.bfloat16, lora=LoraShape(r=8), batch=r["batch"], seq_len=width,
                              train=train, grad_checkpointing=r.get("checkpointing", False))
        assert est.total - est.overhead == pytest.approx(r["peak_memory_gib"], rel=0.03), r


WIDE = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8,
            tie_word_embeddings=False)  # layers large enough next to the root (embeddings, head) to be seen


def _fsdp_rank(rank, world, port, tokenizer_dir, dtype, batch, seq_len, checkpointing, out):
    """One process of a 2-process FSDP training step on the CPU (gloo): its measured peak and the estimate."""
    import os

    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    from minigpt4.llm.backbone import add_lora
    from minigpt4.train.sharding import shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **WIDE)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    lm.requires_grad_(False)
    lora = SimpleNamespace(r=8, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"], layers_to_transform=[])
    rec = LLMRecommender(add_lora(lm, lora), tok, "yes").train()
    set_checkpointing(rec.causal_lm, checkpointing)
    shard_model(rec)
    optimizer = adamw([p for p in rec.parameters() if p.requires_grad], torch.device("cpu"), sharded=True, lr=1e-3)
    ids = torch.randint(100, 1000, (batch, seq_len))
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[0, : seq_len // 3] = 0

    def step():
        with Precision(dtype, "cpu", "test").autocast():
            loss = rec.loss(rec(ids, mask), torch.arange(batch) % 2)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # FSDP's lazy initialisation and AdamW's moments, as in any step after the first
    shards = [p.to_local() if hasattr(p, "to_local") else p for p in rec.parameters()]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    stored, peak = sum(_storages([*shards, *rec.buffers(), *state]).values()), cpu_peak_bytes(step)
    est = estimate_memory(config, dtype=dtype, lora=LoraShape(r=8), batch=batch, seq_len=seq_len,
                          processes=world, fsdp=True, grad_checkpointing=checkpointing, device_type="cpu")
    (out / f"{rank}.json").write_text(json.dumps({
        "measured": (stored + peak) / GIB, "stored": stored / GIB, "step_peak": peak / GIB,
        "estimated": est.total - est.overhead, "weights": est.weights, "trained": est.trained,
        "activations": est.activations, "transient": est.transient}))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("batch,seq_len,checkpointing", [(4, 128, False), (8, 256, False), (8, 256, True)],
                         ids=["root_gather_peaks", "activations_peak", "activations_peak_checkpointing"])
@pytest.mark.parametrize("dtype", [REAL_SIZE_DTYPE])
def test_estimate_against_the_measured_cpu_peak_fsdp(tiny_llama, tmp_path, dtype, batch, seq_len, checkpointing):
    """run.fsdp over 2 CPU processes: each holds half the weights, plus the full weights FSDP gathers. With few
    activations the step peaks as the root's gather starts; with more, later, beside the activations. Without the
    gathered weights the estimate was 13-46% low here."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_fsdp_rank, args=(2, port, str(tiny_llama), dtype, batch, seq_len, checkpointing, tmp_path), nprocs=2)
    for rank in (0, 1):
        r = json.loads((tmp_path / f"{rank}.json").read_text())
        assert r["estimated"] == pytest.approx(r["measured"], rel=0.03), (rank, r)
