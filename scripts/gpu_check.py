"""The GPU check: one prepared run on a GPU machine that has torch, transformers and peft but no network.

    bash scripts/gpu_check.sh                  # on the GPU machine, from the repository root (≈ 8 min on one H100)
    python scripts/gpu_check.py --smoke ...    # on a CPU: every part at toy sizes (tests/test_gpu_check.py)

It writes runs/gpu_check/report.md and report.json (commit them under results/gpu/<card>/) as each part measures,
running the parts in the order `--parts` names them:
  a. 7B shape: Vicuna-7B's sizes (32 layers, hidden 4096, MLP 11008, 32 heads) with random bf16 weights made on the
     GPU, so nothing is downloaded and memory and speed are the real model's. LoRA training and scoring on ML-1M
     prompts with BinLLM codes, our path vs the reference-style path of benchmark.py; samples/s, tokens/s, MFU
     against the measured bf16 matmul rate, peak memory next to the meta-device estimate (minigpt4/llm/memory.py),
     with and without gradient checkpointing up to the largest batch that fits; the scoring batch that fills the GPU.
     The vocabulary is the SmolLM2 tokenizer's (49,152 rows instead of Vicuna's 32,000: +0.4 GiB of bf16 weights).
  b. bf16 stability: BinLLM stage 2 from the base SmolLM2 (ml1m_binllm_it.yaml) for `--steps` steps in bf16 and in
     fp32 on the same rows: finite or not, and AUC/UAUC of the same test rows; plus the left-padding probe (a
     left-padded batch's gradients under each attention kernel), the suspect of the NaN seen at step 14.
  c. small-model throughput: our bf16 training path on SmolLM2 at batches 64-512 first, then benchmark.py at
     GPU-sized batches (fp32, bf16, bf16 compiled: scoring and training).
  d. ranking: `benchmark.py --ranking` on ML-1M candidates (K = 20): shared-prefix scoring against the pointwise
     path, samples/s and the share of the token bound reached, and the largest score difference, fp32. Speed does
     not depend on the weights, so SmolLM2's shape with random weights serves: the part needs only the tokenizer
     and runs in the first call.

Files a machine without network needs come from `bash scripts/gpu_pack.sh` (see there): the SmolLM2 GGUF in two
pieces, the gguf reader's wheel, the tokenizer and ML-1M's processed splits.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import benchmark as bench  # noqa: E402  (the reference-style path and the measuring helpers)
from minigpt4.batching import TokenizedSplit, TrainBatches  # noqa: E402
from minigpt4.fileio import atomic_text  # noqa: E402
from minigpt4.llm.backbone import add_lora, load_tokenizer, set_checkpointing  # noqa: E402
from minigpt4.llm.memory import LoraShape, estimate_memory  # noqa: E402
from minigpt4.llm.recommender import LLMRecommender  # noqa: E402
from minigpt4.prompting import build_prompts, load_prompt  # noqa: E402
from minigpt4.text_codes import CodeTable  # noqa: E402

VICUNA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6)
PARTS = {"7b": "7b_shape", "bf16": "bf16_stability", "small": "small_model", "rank": "ranking"}  # name: report key
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                    rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
TOY = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
           max_position_embeddings=2048)


def shape_model(tokenizer, sizes, device):
    """LLMRecommender over a randomly initialised Llama of the given sizes, made in bf16 directly on `device`."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    vocab = -(-len(tokenizer) // 64) * 64
    config = LlamaConfig(vocab_size=vocab, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         **sizes)
    torch.manual_seed(0)
    with torch.device(device):
        lm = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    lm.requires_grad_(False)
    lm.config.use_cache = False
    lora = SimpleNamespace(r=8, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"], layers_to_transform=[])
    rec = LLMRecommender(add_lora(lm, lora), tokenizer, "yes").to(device)
    for p in rec.parameters():  # LoRA weights in fp32 as the framework keeps them; the frozen body stays bf16
        if p.requires_grad:
            p.data = p.data.float()
    return rec, config


def try_batches(batches, measure):
    """measure(batch) for growing batches until one runs out of memory: [(batch, result)]."""
    out = []
    for b in batches:
        try:
            out.append((b, measure(b)))
        except torch.OutOfMemoryError:
            out.append((b, "out of memory"))
            break
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return out


def part_7b(args, device, tokenizer, rows, prompt, bits, machine, progress=lambda result: None):
    sizes = TOY if args.smoke else VICUNA_7B
    rec, config = shape_model(tokenizer, sizes, device)
    flops_token = bench.flops_per_token(rec.causal_lm)
    split = TokenizedSplit(tokenizer, build_prompts(rows, prompt, CodeTable(*bits, mode="binary")), rows, 10**6)
    amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731  (bf16 body, fp32 LoRA)
    seq = int(np.mean(split.lengths))
    result = {"sizes": sizes, "vocab": config.vocab_size, "params": sum(p.numel() for p in rec.parameters()),
              "mean_prompt_tokens": seq, "train": [], "score": []}
    steps = 2 if args.smoke else args.train_steps_7b

    def train(batch, checkpointing, reference=False):
        set_checkpointing(rec.causal_lm, checkpointing)
        opt = torch.optim.AdamW([p for p in rec.parameters() if p.requires_grad], lr=1e-4) if reference else \
            bench.our_optimizer(rec, device)
        def run(n, seed):
            if reference:
                with amp():
                    return bench.reference_train_steps(rec, tokenizer, rows, prompt, bits, "binary", batch, n, device,
                                                       opt, seed)
            return bench.our_train_steps(rec, split, batch, n, device, opt, seed, autocast=amp)

        run(1, 99)  # first kernels and allocator growth, untimed
        tokens, secs, peak = bench.timed(device, run, steps, 0)
        # the estimate for the widest batch the timed steps trained (our_train_steps' batches, drawn again)
        batches = TrainBatches(split, batch, 0, bucket=50)
        widest = max(next(batches)["input_ids"].shape[1] for _ in range(steps))
        est = estimate_memory(config, dtype=torch.bfloat16, lora=LoraShape(r=8), batch=batch, seq_len=widest,
                              grad_checkpointing=checkpointing)
        opt = None  # free its state before the next batch size
        return dict(bench.phase(steps * batch, tokens, secs, peak, flops_token, machine, train=True),
                    estimate_gib=est.total, estimate_seq_len=widest, path="reference" if reference else "ours",
                    checkpointing=checkpointing)

    grid = [1, 2] if args.smoke else [8, 16, 32, 64, 128]
    for checkpointing in (False, True):
        for b, r in try_batches(grid, lambda b: train(b, checkpointing)):
            failed = {"batch": b, "checkpointing": checkpointing, "error": r}
            result["train"].append(r if isinstance(r, dict) else failed)
            if isinstance(r, dict):
                r["batch"] = b
        progress(result)
    ref = try_batches([1] if args.smoke else [8, 32], lambda b: train(b, False, reference=True))
    result["train"] += [dict(r, batch=b) if isinstance(r, dict) else {"batch": b, "error": r, "path": "reference"}
                        for b, r in ref]
    progress(result)
    set_checkpointing(rec.causal_lm, False)

    def score(batch):
        with amp():
            (_, tokens), secs, peak = bench.timed(device, bench.our_score, rec, split, batch, device)
        return dict(bench.phase(len(split), tokens, secs, peak, flops_token, machine), batch=batch, path="ours")

    for b, r in try_batches([4, 8] if args.smoke else [64, 128, 256, 512, 1024], score):
        result["score"].append(r if isinstance(r, dict) else {"batch": b, "error": r})
    progress(result)
    with amp():
        (_, tokens), secs, peak = bench.timed(device, bench.reference_score, rec, tokenizer, rows, prompt, bits,
                                              "binary", grid[0] * 8, device)
    result["score"].append(dict(bench.phase(len(rows), tokens, secs, peak, flops_token, machine),
                                batch=grid[0] * 8, path="reference"))
    rec = None  # free the 7B weights before the other parts
    return result


PROBE_WIDTHS = (64, 192, 200)  # 64 and 192 are 64 mod 128, where cuDNN's backward fails; 200 is not
PROBE_KERNELS = ("CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")


def padding_probe(llama_dir, device):
    """Are the gradients of a left-padded bf16 batch finite, per attention kernel and batch width? Rows are padded
    by 0, 1/4, 3/4 of the width and all but one token, so pad positions form fully-masked attention rows. cuDNN's
    backward returns NaN at widths 64 mod 128 (pytorch/pytorch#196678), the cause of the bf16 NaN seen in training;
    `default` is PyTorch's own choice of kernel, `ours` the scorer's forward with LoRA (cuDNN left out)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(llama_dir)
    lm = AutoModelForCausalLM.from_pretrained(llama_dir, dtype=torch.bfloat16, attn_implementation="sdpa").to(device)
    lm.requires_grad_(False)
    generator = torch.Generator().manual_seed(0)

    def batch(width):
        ids = torch.randint(10, len(tok) - 10, (4, width), generator=generator).to(device)
        mask = torch.ones_like(ids)
        for row, pad in enumerate((0, width // 4, 3 * width // 4, width - 1)):
            mask[row, :pad] = 0
        return ids, mask

    def embedding_grads_finite(width, kernels):
        ids, mask = batch(width)
        embeds = lm.get_input_embeddings()(ids).detach().requires_grad_(True)
        with sdpa_kernel(kernels):
            logits = lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits[:, -1].float()
        logits.logsumexp(-1).sum().backward()
        return bool(torch.isfinite(embeds.grad).all())

    everything = [b for name, b in SDPBackend.__members__.items() if name != "ERROR"]
    out = {}
    for width in PROBE_WIDTHS:
        row = {"default": embedding_grads_finite(width, everything)}
        for name in PROBE_KERNELS:
            try:
                row[name] = embedding_grads_finite(width, [getattr(SDPBackend, name)])
            except RuntimeError as e:  # the kernel does not run on this device or for these inputs
                row[name] = "n/a"
                print(f"padding probe: {name} at width {width}: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        out[width] = row
    lora = SimpleNamespace(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"], layers_to_transform=[])
    rec = LLMRecommender(add_lora(lm, lora), tok, "yes").to(device)
    for width in PROBE_WIDTHS:
        ids, mask = batch(width)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            rec(ids, mask).sum().backward()
        trained = [q.grad for q in rec.parameters() if q.requires_grad]
        out[width]["ours"] = all(bool(torch.isfinite(g).all()) for g in trained if g is not None)
        rec.zero_grad(set_to_none=True)
    return out


def call(cmd, timeout):
    """Exit status of `cmd` run from the repository root; 124 when it ran past `timeout` seconds (as timeout(1))."""
    try:
        return subprocess.run(cmd, cwd=ROOT, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"stopped after {timeout} s: {' '.join(cmd)}", file=sys.stderr)
        return 124


def part_bf16(args, device, llama_dir, progress=lambda result: None):
    """The padding probe (a minute), then stage 0 and stage 2 (BinLLM-IT from the base model) in bf16 and fp32
    through the framework's scripts; `progress(result)` after each, so a call stopped at its limit keeps them."""
    result = {"steps": args.steps, "padding_probe": padding_probe(llama_dir, device)}
    progress(result)
    runs = Path(args.out) / "runs"
    common = [f"run.output_dir={runs}", f"run.device={device.type}"]
    py = [sys.executable]
    data = [f"datasets.{args.dataset_key}.path={args.data}"]
    stage0 = py + ["pretrain_collab.py", "--cfg-path", args.binmf_config, "--options", *common, *data,
                   "run.job_id=binmf"] + (["run.max_epoch=2"] if args.smoke else [])
    result["stage0"] = call(stage0, args.part_timeout)
    progress(result)
    for dtype in ("bf16", "fp32"):
        cmd = py + ["train_binllm.py", "--cfg-path", args.binllm_config, "--options", *common, *data,
                    f"model.llama_model={llama_dir}", f"model.rec_config.pretrained_path={runs}/binmf/rec_model.pth",
                    f"run.dtype={dtype}", "run.max_epoch=1", f"run.iters_per_epoch={args.steps}", "run.valid_splits=[]",
                    "run.test_splits=[test]", f"run.max_eval_rows={args.eval_rows}", f"run.job_id=binllm_{dtype}",
                    f"run.batch_size_eval={args.eval_batch}"]
        start = time.perf_counter()
        rc = call(cmd, args.part_timeout)
        metrics = runs / f"binllm_{dtype}" / "metrics.json"
        entry = {"returncode": rc, "seconds": time.perf_counter() - start, "command": " ".join(cmd[1:])}
        if rc == 0 and metrics.is_file():
            m = json.loads(metrics.read_text())
            entry.update({k: m["test"][k] for k in ("auc", "uauc", "rows")},
                         peak_gpu_memory_gib=m.get("train", {}).get("peak_gpu_memory_gib"),
                         scoring_samples_per_s=m["test"].get("samples_per_s"))
        log = runs / f"binllm_{dtype}" / "log.jsonl"
        if log.is_file():  # the training losses as logged: all finite, and the last one
            losses = [json.loads(line) for line in log.read_text().splitlines() if '"train_loss"' in line]
            if losses:
                entry.update(final_loss=losses[-1]["train_loss"], last_step=losses[-1]["step"],
                             losses_finite=bool(np.isfinite([x["train_loss"] for x in losses]).all()),
                             train_samples_per_s=losses[-1].get("train_samples_per_s"))
        result[dtype] = entry  # returncode 4: the run stopped at a non-finite loss (minigpt4's NaN guard)
        progress(result)
    if "auc" in result["bf16"] and "auc" in result["fp32"]:
        result["auc_diff"] = result["bf16"]["auc"] - result["fp32"]["auc"]
    return result


def part_small(args, device, llama_dir, progress=lambda result: None):
    """Our bf16 training path at batches 64-512 first (about a minute: the direct answer to the training target),
    then benchmark.py's modes, whose compiles may take minutes; `progress(result)` after each."""
    result = {}
    try:  # its failure must not stop benchmark.py's measurements
        result["train_batches"] = train_batch_sweep(args, device, llama_dir)
    except Exception:
        result["train_batches_error"] = traceback.format_exc()
        print(result["train_batches_error"], file=sys.stderr)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the sweep's cached blocks, before benchmark.py's process needs the memory
    progress(result)
    out = Path(args.out) / "benchmark_small.json"
    sizes = ["--train-rows", "16", "--score-rows", "32", "--batch-train", "4", "--batch-eval", "8", "--dtype-rows",
             "8", "--dtype-steps", "1", "--uauc-rows", "10000"] if args.smoke else \
        ["--train-rows", "2048", "--score-rows", "8192", "--batch-train", "64", "--batch-eval", "512",
         "--dtype-rows", "4096", "--dtype-steps", "20"]
    cmd = [sys.executable, "benchmark.py", "--device", device.type, "--llama", llama_dir, "--data", args.data,
           "--out", str(out), "--modes", args.small_modes, *sizes]
    out.unlink(missing_ok=True)
    rc = call(cmd, args.part_timeout)
    # benchmark.py writes its report after each section: one stopped early still brings the sections it finished
    result.update(returncode=rc, command=" ".join(cmd[1:]),
                  **({"report": json.loads(out.read_text())} if out.is_file() else {}))
    return result


def part_rank(args, device, tokenizer):
    """benchmark.py --ranking in a subprocess, on a randomly initialised model of SmolLM2's shape (TOY under
    --smoke) saved once with the tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    model_dir = Path(args.out) / "rank_model"
    if not (model_dir / "config.json").is_file():
        config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             **(TOY if args.smoke else SMOLLM2_135M))
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    out = Path(args.out) / "benchmark_rank.json"
    sizes = ["--rank-users", "2", "--rank-k", "5", "--rank-reps", "1", "--rank-batch", "8", "--rank-sweep", "4"] \
        if args.smoke else ["--rank-users", "64", "--rank-reps", "3", "--rank-batch", "128", "--rank-sweep", "32,512"]
    cmd = [sys.executable, "benchmark.py", "--ranking", "--device", device.type, "--llama", str(model_dir),
           "--rank-data", args.data, "--rank-dtype", "fp32", "--out", str(out), *sizes]
    out.unlink(missing_ok=True)
    rc = call(cmd, args.part_timeout)
    return {"returncode": rc, "command": " ".join(cmd[1:]),
            **({"report": json.loads(out.read_text())["ranking"]} if out.is_file() else {})}


def md_rank(d):
    """Part d: per kind of prompt, both paths at each batch."""
    r = d.get("report", {})
    lines = ["## d. Ranking: shared-prefix against pointwise scoring (fp32, K = %s)" % r.get("k", "?"), ""]
    if r:
        lines += [f"{r['users']} users of {r['data']}, SmolLM2's shape with random weights.", "",
                  "| prompts | P | S | bound | batch | pointwise samples/s | shared samples/s | speed-up | share | "
                  "max score diff |", "|---|---|---|---|---|---|---|---|---|---|"]
        for kind in ("binllm", "text_only"):
            x = r.get(kind)
            for b in (x or {}).get("shared", {}):
                rate, ref = x["shared"][b]["samples_per_s"], x["pointwise"][b]["samples_per_s"]
                lines.append(f"| {kind} | {x['P']:.0f} | {x['S']:.1f} | {x['token_bound']:.2f} | {b} | {ref:.0f} | "
                             f"{rate:.0f} | {rate / ref:.2f} | {rate / ref / x['token_bound']:.0%} | "
                             f"{x['max_abs_score_diff']:.1e} |")
    if d.get("returncode", 0) != 0:
        lines += ["", f"benchmark.py exit {d['returncode']} (`{d['command']}`)"]
    return lines + [""]


def train_batch_sweep(args, device, llama_dir):
    """Our training path in bf16 at growing batches: where SmolLM2's training stops gaining from a larger batch
    (at batch 8-64 a step costs about the same: per-step overhead, not arithmetic, sets the pace)."""
    tok = load_tokenizer(llama_dir)
    grid, steps = ([2, 4], 2) if args.smoke else ([64, 128, 256, 512], 10)
    rows = bench.load_rows(args.data, grid[-1] * (steps + 1), 1)
    bits = bench.random_codes(int(rows["uid"].max()) + 1, int(rows["iid"].max()) + 1)
    split = TokenizedSplit(tok, build_prompts(rows, load_prompt(bench.PROMPT), CodeTable(*bits, mode="binary")), rows,
                           10**6)
    opts = SimpleNamespace(llama=llama_dir, score_type="yes_minus_no")
    rec = bench.build(opts, device, torch.bfloat16)
    amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731

    def measure(batch):
        opt = bench.our_optimizer(rec, device)
        bench.our_train_steps(rec, split, batch, 1, device, opt, 99, amp)  # untimed: first kernels of this shape
        tokens, secs, peak = bench.timed(device, bench.our_train_steps, rec, split, batch, steps, device, opt, 0, amp)
        return {"batch": batch, "samples_per_s": steps * batch / secs, "tokens_per_s": tokens / secs,
                "step_s": secs / steps, "peak_memory_gib": peak}

    return [r if isinstance(r, dict) else {"batch": b, "error": r} for b, r in try_batches(grid, measure)]


def markdown(report):
    commands = "; ".join(f"`{c}`" for c in report["commands"])
    lines = [f"# GPU check: {report['device_name']}", "",
             f"torch {report['torch']}, transformers {report['transformers']}, peft {report['peft']}; measured bf16 "
             f"matmul {report['matmul_bf16'] / 1e12:.0f} TFLOP/s (8192³ products); commands {commands}", ""]
    md_small_here = lambda c: md_small(c, report["matmul_bf16"])  # noqa: E731
    for key, section in (("7b_shape", md_7b), ("bf16_stability", md_bf16), ("small_model", md_small_here),
                         ("ranking", md_rank)):
        part = report.get(key)
        if not part:
            continue
        if "error" in part:  # the part raised: its last line here, the whole traceback in report.json
            lines += [f"## {key}: failed after {part.get('part_seconds', 0):.0f} s", "",
                      f"`{part['error'].strip().splitlines()[-1]}`", ""]
            continue
        ended = ("(unfinished: the call stopped during this part; above is what it had measured)"
                 if part.get("unfinished") else f"({part.get('part_seconds', 0):.0f} s)")
        lines += section(part) + [ended, ""]
    return "\n".join(lines) + "\n"


def md_7b(a):
    # the first check (2026-11-29) estimated at the mean prompt length, with a trace that kept attention matrices
    at = ("the widest batch trained" if any("estimate_seq_len" in r for r in a["train"])
          else "the mean prompt length, by the trace of the time")
    lines = [f"## a. 7B shape ({a['params'] / 1e9:.2f} B parameters, {a['mean_prompt_tokens']} tokens per prompt on "
             f"average; memory estimate for {at})", "",
             "| phase | path | batch | checkpointing | samples/s | tokens/s | MFU | peak GiB | "
             "estimate GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for kind in ("train", "score"):
        for r in a[kind]:
            if "error" in r:
                lines.append(f"| {kind} | {r.get('path', 'ours')} | {r['batch']} | {r.get('checkpointing', '')} "
                             f"| {r['error']} | | | | |")
                continue
            lines.append(f"| {kind} | {r['path']} | {r['batch']} | {r.get('checkpointing', '')} | "
                         f"{r['samples_per_s']:.1f} | {r['tokens_per_s']:.0f} | {r['mfu']:.1%} | "
                         f"{r['peak_memory_gib']:.1f} | {r.get('estimate_gib', float('nan')):.1f} |")
    return lines + [""]


def md_bf16(b):
    lines = [f"## b. bf16 stability (BinLLM-IT, {b['steps']} steps; stage 0 exit {b.get('stage0', 'not run')})", "",
             "| dtype | exit | last step | losses finite | mean train loss | train samples/s | test AUC | UAUC "
             "| rows | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for dtype in ("bf16", "fp32"):
        r = b.get(dtype)
        if r is None:
            continue
        nan = float("nan")
        lines.append(f"| {dtype} | {r['returncode']} | {r.get('last_step', '')} | {r.get('losses_finite', '')} | "
                     f"{r.get('final_loss', nan):.4f} | {r.get('train_samples_per_s') or nan:.1f} | "
                     f"{r.get('auc', nan):.4f} | {r.get('uauc', nan):.4f} | {r.get('rows', '')} | "
                     f"{r['seconds']:.0f} |")
    if "auc_diff" in b:
        lines += ["", f"AUC bf16 − fp32 on the same rows: {b['auc_diff']:+.4f}"]
    probe = b.get("padding_probe", {})
    if probe and all(isinstance(v, dict) and "default" in v for v in probe.values()):
        kernels = list(next(iter(probe.values())))
        lines += ["", "Left-padding probe: gradients of a left-padded bf16 batch finite, per attention kernel and "
                  "batch width (`default`: PyTorch's choice; `ours`: the scorer's forward with LoRA)", "",
                  "| width | " + " | ".join(kernels) + " |", "|---" * (len(kernels) + 1) + "|"]
        lines += [f"| {w} | " + " | ".join(str(row.get(k, "")) for k in kernels) + " |" for w, row in probe.items()]
    elif probe:  # the first check's probe: {kernel: {logits_finite, grads_finite}} at width 64
        lines += ["", f"Left-padding probe (width 64, bf16 gradients per attention implementation): "
                  f"`{json.dumps(probe)}`"]
    return lines + [""]


def md_small(c, matmul_bf16):
    """Part c. MFU here is against the check's own 8192³ bf16 matmul rate, whatever ceiling benchmark.py measured
    (the first check's benchmark.py timed 1024³ products, far below a GPU's rate)."""
    r = c.get("report", {})
    lines = ["## c. SmolLM2 throughput", ""]
    if r:
        lines += ["| phase | path | batch | samples/s | tokens/s | MFU (bf16 rate) | peak GiB |",
                  "|---|---|---|---|---|---|---|"]
    for phase, batch in (("scoring", r.get("batch_eval")), ("training", r.get("batch_train"))):
        for path in ("ours", "reference") if phase in r else ():
            x = r[phase][path]
            mfu = x["tokens_per_s"] * r["flops_per_token"] * (2 if phase == "training" else 1) / matmul_bf16
            lines.append(f"| {phase} | {path} | {batch} | {x['samples_per_s']:.0f} | {x['tokens_per_s']:.0f} | "
                         f"{mfu:.1%} | {x['peak_memory_gib']:.1f} |")
    modes = {k: v for k, v in r.get("precision", {}).items() if isinstance(v, dict)}
    if modes:
        # first batch / first step: the first scoring batch and training step, which wait for the compiler
        lines += ["", "| our path | scoring samples/s | training samples/s | first batch s | first step s "
                  "| AUC − fp32 |", "|---|---|---|---|---|---|"]
        blank = lambda x, f: "" if x is None else format(x, f)  # noqa: E731  (earlier reports lack some keys)
        for mode, v in modes.items():
            lines.append(f"| {mode} | {v['scoring']['samples_per_s']:.0f} | "
                         f"{blank(v.get('training', {}).get('samples_per_s'), '.0f')} | {v['first_batch_s']:.1f} | "
                         f"{blank(v.get('first_step_s'), '.1f')} | "
                         f"{blank(v.get('vs_fp32', {}).get('auc_diff'), '+.4f')} |")
    if c.get("returncode", 0) != 0:
        lines += ["", f"benchmark.py exit {c['returncode']} (`{c['command']}`): the sections above are those it "
                  "finished"]
    if "train_batches_error" in c:
        lines += ["", f"batch sweep failed: `{c['train_batches_error'].strip().splitlines()[-1]}`"]
    sweep = c.get("train_batches", [])
    if sweep:
        lines += ["", "Our training path in bf16 by batch size:", "", "| batch | samples/s | s per step | peak GiB |",
                  "|---|---|---|---|"]
        lines += [f"| {r['batch']} | {r['error']} | | |" if "error" in r else
                  f"| {r['batch']} | {r['samples_per_s']:.0f} | {r['step_s']:.3f} | {r['peak_memory_gib']:.1f} |"
                  for r in sweep]
    return lines + [""]


def write(report, out, mirror):
    """report.json and report.md into `out` (and `mirror`), whole files only: a call stopped at its limit still has
    the parts that finished."""
    for folder in [out] + ([Path(mirror)] if mirror else []):
        folder.mkdir(parents=True, exist_ok=True)
        atomic_text(folder / "report.json", json.dumps(report, indent=2, default=str) + "\n")
        atomic_text(folder / "report.md", markdown(report))


def main(argv=None):
    p = argparse.ArgumentParser(description="the project's GPU check (see the module docstring)")
    p.add_argument("--smoke", action="store_true", help="toy sizes, any device: checks the script itself")
    p.add_argument("--device", default="cuda")
    p.add_argument("--parts", default="7b,rank,bf16,small", help="comma-separated subset of 7b,rank,bf16,small")
    p.add_argument("--merge", action="store_true",
                   help="keep the parts of an earlier report.json in --out that this call does not run (a check "
                        "split over several calls on one machine)")
    p.add_argument("--mirror", default=None, help="also write the report files here (the device tool's $OUT)")
    p.add_argument("--llama", default="gpu_cache/smollm2", help="SmolLM2 as a Hugging Face directory")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer directory for the 7B shape (default: gpu_cache/tokenizer if there, else --llama)")
    p.add_argument("--data", default="gpu_cache/ml-1m")
    p.add_argument("--dataset-key", default="movie_ood", help="datasets.<key> of the configs")
    p.add_argument("--binmf-config", default="train_configs/ml1m_binmf.yaml")
    p.add_argument("--binllm-config", default="train_configs/ml1m_binllm_it.yaml")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--train-steps-7b", type=int, default=5)
    p.add_argument("--rows-7b", type=int, default=1024)
    p.add_argument("--eval-rows", type=int, default=5000)
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--small-modes", default="fp32,bf16,bf16+compile",
                   help="part c's precision modes (benchmark.py --modes); bf16+compile compiles scoring (108 s on "
                        "an H200) and training (not yet measured there)")
    p.add_argument("--part-timeout", type=int, default=360, help="seconds each subprocess run may take")
    p.add_argument("--out", default="runs/gpu_check")
    args = p.parse_args(argv)
    parts = args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"--parts: unknown {unknown}; choose from {','.join(PARTS)}")
    if args.tokenizer is None:
        args.tokenizer = "gpu_cache/tokenizer" if Path("gpu_cache/tokenizer").is_dir() else args.llama
    needs_llama = {"bf16", "small"} & set(parts)
    if needs_llama and not (Path(args.llama) / "config.json").is_file():
        p.error(f"--llama {args.llama} has no config.json, and parts {sorted(needs_llama)} need SmolLM2's weights: "
                "carry gpu_pack/2 too (scripts/gpu_pack.sh), or pass --parts 7b,rank")
    device = torch.device(args.device if args.device == "cpu" or torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import peft
    import transformers

    command = "python scripts/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = {}
    if args.merge and (out / "report.json").is_file():
        rerun = {PARTS[part] for part in parts}
        report = {k: v for k, v in json.loads((out / "report.json").read_text()).items() if k not in rerun}
    report.update({"commands": report.get("commands", []) + [command],
                   "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                   "matmul_bf16": bench.matmul_flops(device, torch.bfloat16, n=256 if args.smoke else 8192)})
    write(report, out, args.mirror)
    def progress(partial):  # a part's results so far, written as they come: a call stopped at its limit keeps them
        report[PARTS[part]] = dict(partial, unfinished=True)
        write(report, out, args.mirror)

    for part in parts:  # each part is recorded as it ends; one that fails leaves its traceback and the rest run on
        start = time.perf_counter()
        try:
            if part == "7b":
                tokenizer = load_tokenizer(args.tokenizer, located=(args.tokenizer, None))  # a tokenizer alone
                rows = bench.load_rows(args.data, 64 if args.smoke else args.rows_7b, 0)
                bits = bench.random_codes(int(rows["uid"].max()) + 1, int(rows["iid"].max()) + 1)
                result = part_7b(args, device, tokenizer, rows, load_prompt(bench.PROMPT), bits, report["matmul_bf16"],
                                 progress)
            elif part == "rank":
                result = part_rank(args, device, load_tokenizer(args.tokenizer, located=(args.tokenizer, None)))
            elif part == "bf16":
                result = part_bf16(args, device, args.llama, progress)
            else:
                result = part_small(args, device, args.llama, progress)
        except Exception:  # what the part had measured before it failed stays in report.json
            so_far = report.get(PARTS[part], {}) if report.get(PARTS[part], {}).get("unfinished") else {}
            result = {**{k: v for k, v in so_far.items() if k != "unfinished"}, "error": traceback.format_exc()}
            print(result["error"], file=sys.stderr)
        result["part_seconds"] = time.perf_counter() - start
        report[PARTS[part]] = result
        write(report, out, args.mirror)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(markdown(report))
    print(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    return 1 if failures(report) else 0


def failures(report):
    """The parts of `report` that did not finish cleanly."""
    out = [key for key in PARTS.values() if "error" in report.get(key, {})]
    b = report.get("bf16_stability", {})
    out += [f"bf16_stability.{k}" for k in ("bf16", "fp32") if b.get(k, {}).get("returncode", 0) != 0]
    for key in ("small_model", "ranking"):
        if report.get(key, {}).get("returncode", 0) != 0:
            out.append(key)
    return out


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
