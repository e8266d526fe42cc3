"""Throughput of our training and scoring path against a reference-style path, same data, model and weights.

The reference-style path is written here the way the upstream does it: prompts re-rendered (code strings
included) and tokenised per batch, random batches padded to their longest prompt, full-vocabulary logits at
every position, fp32, `torch.no_grad` scoring, UAUC with a Python loop over users. Our path is the framework's
own: prompts tokenised once, length-grouped batches, only the last position's hidden state times the Yes/No rows,
`torch.inference_mode`, vectorised UAUC.

Reported per path: samples/s, real (non-pad) tokens/s, peak memory over the phase, and model FLOPs utilisation =
useful model FLOPs per second / this machine's measured matmul FLOP/s in the phase's number format. Our path runs
in the precision `run.dtype: auto` picks here (`minigpt4/precision.py`). Also, in the same run: our path in fp32,
bf16 and bf16 + compiled scoring (`run.dtype`, `run.compile`), for scoring and training, and how far bf16 moves
the scores and AUC/UAUC of the same rows from fp32; tokens per prompt for text-only / binary / dot-decimal prompts,
how much of a prompt a user's previous prompt shares (what a key/value prefix cache could save), and UAUC on 1M
synthetic rows, loop vs vectorised.

    python benchmark.py                      # 2 CPU cores: ML-1M prompts if data/ml-1m exists (results/speed/)
    python benchmark.py --device cuda --train-rows 512 --score-rows 2048
    python benchmark.py --ranking --out results/speed/ranking_cpu.json   # shared-prefix vs pointwise, K = 20
"""

import argparse
import contextlib
import json
import os
import platform
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from minigpt4.batching import TokenizedSplit, TrainBatches
from minigpt4.fileio import atomic_text
from minigpt4.metrics import auc, evaluate_scores, uauc
from minigpt4.precision import COMPILE_PAD_MULTIPLE, Precision, resolve_precision
from minigpt4.prompting import build_prompts, fill_prompt, history_text, load_prompt, target_text
from minigpt4.text_codes import CodeTable, render_codes
from minigpt4.train.optim import adamw

PROMPT = "prompts/collm_movie.txt"


# ------------------------------------------------------------------------------------------------- measuring
class PeakMemory:
    """Peak resident memory (CPU, sampled) or peak allocated CUDA memory during a `with` block, in GiB."""

    def __init__(self, device):
        self.device, self.peak = device, 0.0

    def _rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(0.02)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**30
        else:
            self._stop.set()
            self._thread.join()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device, dtype, n=1024, repeat=10, budget_s=5.0):
    """Measured dense matmul FLOP/s of this device in `dtype`: the hardware limit MFU is measured against.
    Stops after `budget_s` seconds (an emulated bf16 product takes seconds each)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    start, done = time.perf_counter(), 0
    while done < repeat and (done == 0 or time.perf_counter() - start < budget_s):
        a @ b
        done += 1
        sync(device)
    return 2 * n ** 3 * done / (time.perf_counter() - start)


def flops_per_token(lm):
    """Forward FLOPs per token of the transformer body: 2 x its weights (embeddings are lookups, not matmuls)."""
    body = sum(p.numel() for n, p in lm.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    return 2 * body


# ------------------------------------------------------------------------------------------------------ data
def load_rows(data_dir, n, seed):
    import pandas as pd

    df = pd.read_pickle(Path(data_dir) / "test_ood2.pkl")
    return df.iloc[np.sort(np.random.default_rng(seed).permutation(len(df))[:n])].reset_index(drop=True)


def random_codes(user_num, item_num, bits=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, (user_num, bits), dtype=np.uint8), rng.integers(0, 2, (item_num, bits), dtype=np.uint8)


# ---------------------------------------------------------------------------------------- reference-style path
def reference_tokens(tokenizer, rows, prompt, bits, mode, answers=None):
    """Per batch, as the upstream: codes rendered from the bit rows, prompts filled, '<s>' + prompt tokenised
    with padding to the batch's longest (left), the answer token appended when training."""
    users = render_codes(bits[0][rows["uid"].to_numpy()], mode)
    items = render_codes(bits[1][rows["iid"].to_numpy()], mode)
    texts = [tokenizer.bos_token + fill_prompt(prompt, history_text(h, t), target_text(title), u, i)
             for h, t, title, u, i in zip(rows["his"], rows["his_title"], rows["title"], users, items)]
    enc = tokenizer(texts, add_special_tokens=False, padding="longest", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if answers is not None:
        ids = torch.cat([ids, answers[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(answers)[:, None]], 1)
    return ids, mask


def reference_logits(rec, ids, mask, position):
    """Full-vocabulary logits at every position (the model's normal forward), then one position's answers."""
    logits = rec.llm(input_ids=ids, attention_mask=mask).logits
    yes = logits[:, position, rec.yes_id]
    return yes - logits[:, position, rec.no_id] if rec.score_type == "yes_minus_no" else yes


def reference_uauc(users, labels, scores):
    """UAUC with a Python loop over users, as the upstream's evaluation does it."""
    users, labels, scores = map(np.asarray, (users, labels, scores))
    values = []
    for u in np.unique(users):
        sel = users == u
        if labels[sel].min() != labels[sel].max():
            values.append(auc(labels[sel], scores[sel]))
    return float(np.mean(values)) if values else float("nan")


def reference_score(rec, tokenizer, rows, prompt, bits, mode, batch_size, device, seed=0):
    order = np.random.default_rng(seed).permutation(len(rows))  # random batches, as a shuffling loader
    scores, tokens = np.zeros(len(rows)), 0
    rec.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = reference_tokens(tokenizer, rows.iloc[idx], prompt, bits, mode)
            scores[idx] = reference_logits(rec, ids.to(device), mask.to(device), -1).float().cpu().numpy()
            tokens += int(mask.sum())
    return scores, tokens


def reference_train_steps(rec, tokenizer, rows, prompt, bits, mode, batch_size, steps, device, optimizer, seed=0):
    rng = np.random.default_rng(seed)
    rec.train()
    tokens = 0
    for _ in range(steps):
        idx = rng.choice(len(rows), batch_size, replace=False)
        batch = rows.iloc[idx]
        labels = torch.tensor(batch["label"].to_numpy(), dtype=torch.float32, device=device)
        answers = torch.where(labels > 0, rec.yes_id, rec.no_id).long().cpu()
        ids, mask = reference_tokens(tokenizer, batch, prompt, bits, mode, answers)
        loss = F.binary_cross_entropy_with_logits(reference_logits(rec, ids.to(device), mask.to(device), -2), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(mask.sum()) - batch_size  # prompt tokens, as counted for our path
    return tokens


# -------------------------------------------------------------------------------------------------- our path
def our_score(rec, split, batch_size, device, forward=None, pad_multiple=1):
    """forward: the module to call (a compiled one), default `rec`; tokens count real (non-pad) tokens."""
    rec.eval()
    forward = rec if forward is None else forward
    scores, tokens = np.zeros(len(split)), 0
    with torch.inference_mode():
        for pos, batch in split.eval_batches(batch_size, pad_multiple=pad_multiple):
            inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            scores[pos] = forward(**inputs).float().cpu().numpy()
            tokens += int(batch["attention_mask"].sum())
    return scores, tokens


def our_optimizer(rec, device):
    """AdamW over the trained parameters, built as the framework's loop builds it (fused on a GPU)."""
    return adamw([q for q in rec.parameters() if q.requires_grad], device, lr=1e-4)


def our_train_steps(rec, split, batch_size, steps, device, optimizer, seed=0, autocast=contextlib.nullcontext,
                    forward=None, pad_multiple=1):
    """forward: the module to call (a compiled one, as run.compile_train builds), default `rec`."""
    batches = TrainBatches(split, batch_size, seed, bucket=50, pad_multiple=pad_multiple)
    forward = rec if forward is None else forward
    rec.train()
    tokens = 0
    for _ in range(steps):
        batch = next(batches)
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        with autocast():
            scores = forward(**inputs)
        loss = rec.loss(scores, batch["labels"].to(device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
    return tokens


def timed(device, fn, *args, **kwargs):
    """(fn(*args, **kwargs), seconds, peak memory GiB)."""
    with PeakMemory(device) as mem:
        sync(device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sync(device)
        seconds = time.perf_counter() - start
    return out, seconds, mem.peak


def phase(samples, tokens, seconds, peak, flops_token, machine, train=False):
    # LoRA training costs about 2x the forward FLOPs: the backward pass computes activation gradients through the
    # frozen weights (as much as the forward) but no weight gradients except the adapters' (negligible)
    useful = flops_token * tokens * (2 if train else 1)
    return {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds,
            "peak_memory_gib": peak, "mfu": useful / seconds / machine}


# ------------------------------------------------------------------------------------------------ precision
MODES = ("fp32", "bf16", "bf16+compile")


def precision_modes(args, device, tok, rows, prompt, table, machine, flops_token, progress=None):
    """Our path in each of `args.modes` on the same rows and (seeded) weights: scoring and training speed, and how
    far bf16 and compiling move the scores from fp32 eager scoring of the same rows. `progress(out)` after each
    mode."""
    sub = rows.iloc[:args.dtype_rows]
    split = TokenizedSplit(tok, build_prompts(sub, prompt, table), sub, 10**6)
    train = TokenizedSplit(tok, build_prompts(rows, prompt, table), rows, 10**6)
    head = sub.iloc[:args.batch_eval]
    head_split = TokenizedSplit(tok, build_prompts(head, prompt, table), head, 10**6)
    out, scores = {"rows": len(split), "train_steps": args.dtype_steps}, {}
    for mode in args.modes:
        dtype = torch.bfloat16 if mode.startswith("bf16") else torch.float32
        p = Precision(dtype, device.type, f"benchmark mode {mode}")
        model = build(args, device, dtype)
        forward, pad, res = model, 1, {}
        if mode.endswith("+compile"):
            forward, pad = torch.compile(model, dynamic=True), COMPILE_PAD_MULTIPLE
        with p.autocast():  # warm-up: first kernels; for the compiled mode this is the compile
            _, res["first_batch_s"], _ = timed(device, our_score, model, head_split, args.batch_eval, device,
                                               forward, pad)
            (scores[mode], tokens), secs, mem = timed(device, our_score, model, split, args.batch_eval, device,
                                                      forward, pad)
        res["scoring"] = phase(len(split), tokens, secs, mem, flops_token, machine[p.name])
        m = evaluate_scores(split.uids, split.labels, scores[mode])
        res["scoring"].update(auc=m["auc"], uauc=m["uauc"])
        if args.dtype_steps:  # the +compile modes train compiled too (run.compile_train); the first step compiles
            opt = our_optimizer(model, device)
            _, res["first_step_s"], _ = timed(device, our_train_steps, model, train, args.batch_train, 1, device, opt,
                                              99, p.autocast, forward, pad)
            tokens, secs, mem = timed(device, our_train_steps, model, train, args.batch_train, args.dtype_steps,
                                      device, opt, 0, p.autocast, forward, pad)
            res["training"] = phase(args.dtype_steps * args.batch_train, tokens, secs, mem, flops_token,
                                    machine[p.name], train=True)
        out[mode] = res
        if progress:
            progress(out)
        del model, forward
        line = (f"{mode}: scoring {res['scoring']['samples_per_s']:.2f} samples/s "
                f"(first batch {res['first_batch_s']:.0f} s)")
        if "training" in res:
            line += f", training {res['training']['samples_per_s']:.2f} samples/s"
        print(line, flush=True)
    if "fp32" in scores:
        base = scores["fp32"]
        for mode in scores:
            if mode == "fp32":
                continue
            d = scores[mode] - base
            out[mode]["vs_fp32"] = {
                "max_abs_score_diff": float(np.abs(d).max()), "score_sd": float(base.std()),
                "pearson": float(np.corrcoef(base, scores[mode])[0, 1]),
                "auc_diff": out[mode]["scoring"]["auc"] - out["fp32"]["scoring"]["auc"],
                "uauc_diff": out[mode]["scoring"]["uauc"] - out["fp32"]["scoring"]["uauc"],
                "scoring_speedup": out[mode]["scoring"]["samples_per_s"] / out["fp32"]["scoring"]["samples_per_s"]}
            if "training" in out[mode] and "training" in out["fp32"]:
                out[mode]["vs_fp32"]["training_speedup"] = (out[mode]["training"]["samples_per_s"]
                                                           / out["fp32"]["training"]["samples_per_s"])
    return out


def profile_modes(args, device, tok, rows, prompt, table, folder):
    """torch.profiler's per-op table of one scoring batch and one training step in each eager mode (fp32, bf16),
    written to `folder/profile_<mode>.txt`; returns {mode: the ten ops with the most self CPU time}."""
    from torch.profiler import ProfilerActivity, profile

    sub = rows.iloc[:args.batch_train]
    split = TokenizedSplit(tok, build_prompts(sub, prompt, table), sub, 10**6)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    out = {}
    for mode in [m for m in args.modes if not m.endswith("+compile")]:
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        p = Precision(dtype, device.type, f"profile {mode}")
        model = build(args, device, dtype)
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)
        with p.autocast():
            our_score(model, split, args.batch_train, device)  # warm-up
        with profile(activities=activities) as prof:
            with p.autocast():
                our_score(model, split, args.batch_train, device)
            our_train_steps(model, split, args.batch_train, 1, device, opt, 0, p.autocast)
        table_text = prof.key_averages().table(sort_by=sort, row_limit=25)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"profile_{mode}.txt").write_text(table_text + "\n")
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        out[mode] = [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total,
                      "calls": e.count} for e in events]
        print(f"profile {mode}: " + ", ".join(f"{e['op']} {e['share']:.0%}" for e in out[mode][:5]), flush=True)
        del model, opt
    return out


# ------------------------------------------------------------------------------------------------- analyses
def prompt_lengths(tokenizer, rows, table_bits):
    out = {}
    text = load_prompt("prompts/tallrec_movie.txt")
    out["text_only"] = TokenizedSplit(tokenizer, build_prompts(rows, text, None), rows, 10**6).lengths.mean()
    for mode in ("binary", "ipv4"):
        table = CodeTable(*table_bits, mode=mode)
        prompts = build_prompts(rows, load_prompt(PROMPT), table)
        out[mode] = TokenizedSplit(tokenizer, prompts, rows, 10**6).lengths.mean()
    return {k: float(v) for k, v in out.items()}


def shared_prefix(split):
    """Mean fraction of a prompt's tokens equal to the start of the same user's previous prompt: the most a
    key/value prefix cache could skip when a user's rows are scored in sequence."""
    fractions, last = [], {}
    for u, ids in zip(split.uids, split.input_ids):
        prev = last.get(u)
        if prev is not None:
            n = 0
            for a, b in zip(prev, ids):
                if a != b:
                    break
                n += 1
            fractions.append(n / len(ids))
        last[u] = ids
    return float(np.mean(fractions)) if fractions else float("nan")


def uauc_speed(n_rows, n_users, seed=0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_rows)
    labels = rng.integers(0, 2, n_rows)
    scores = rng.normal(size=n_rows) + labels * 0.5
    start = time.perf_counter()
    fast, _ = uauc(users, labels, scores)
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = reference_uauc(users, labels, scores)
    t_slow = time.perf_counter() - start
    return {"rows": n_rows, "users": n_users, "vectorised_s": t_fast, "loop_s": t_slow, "speedup": t_slow / t_fast,
            "abs_diff": abs(fast - slow)}


# ------------------------------------------------------------------------------------------------------ ranking
def ranking_prompts(data_dir, users, k, seed):
    """One positive test row of each of `users` test users with k - 1 sampled negatives: the rows and groups."""
    from minigpt4.data.catalogue import TIME_ORDER, candidate_rows, item_catalogue, ranking_candidates
    from minigpt4.data.splits import FILES, read_split

    frames = {n: read_split(Path(data_dir) / FILES[n]) for n in TIME_ORDER}
    # one positive a user, their last (the longest history: most ML-100K test users are new, their first has none)
    sets = ranking_candidates(frames, k - 1, seed, users).drop_duplicates("uid", keep="last")
    return candidate_rows(frames["test"].loc[sets["row"]], [[p, *n] for p, n in zip(sets["positive"],
                                                                                    sets["negatives"])],
                          item_catalogue(frames), labels=[[1] + [0] * (k - 1)] * len(sets))


def shared_score(rec, split, groups, batch_size, device, precision):
    """The grouped rows' scores as the ranking stage computes them (Scorer.score_shared), and their batching (its
    prefix lengths and token counts)."""
    from minigpt4.shared_prefix import SharedPrefixBatches
    from minigpt4.train.scoring import Scorer

    scores = Scorer(rec, {"candidates": split}, device, precision, batch_size).score_shared("candidates", groups)[0]
    return scores, SharedPrefixBatches(split, groups, rec.shared_slots())


def ranking_speed(args, device, rec, precision):
    """Shared-prefix scoring against the pointwise path on the same candidate prompts (K per user, ML-100K test
    users by default): samples/s of each (the median of --rank-reps alternating measurements), the token bound
    K(P+S) / (P+KS) from the prompts' own lengths, the share of it reached, and the largest score difference. Both
    paths run at --rank-batch (a shared batch holds the tokens of that many whole prompts); the pointwise path also
    and the shared path also at each --rank-sweep batch, so the best of each is known too."""
    rows, groups = ranking_prompts(args.rank_data, args.rank_users, args.rank_k, args.seed)
    user_num, item_num = int(rows["uid"].max()) + 1, int(rows["iid"].max()) + 1
    table = CodeTable(*random_codes(user_num, item_num), mode="binary")
    out = {"data": args.rank_data, "users": len(groups), "k": args.rank_k, "batch": args.rank_batch,
           "batches": sorted({args.rank_batch, *args.rank_sweep}), "precision": precision.name}
    for name, prompt, codes in (("binllm", PROMPT, table), ("text_only", "prompts/tallrec_movie.txt", None)):
        split = TokenizedSplit(rec.tokenizer, build_prompts(rows, load_prompt(prompt), codes), rows, 10**6)
        sizes = out["batches"]
        shared_s, pointwise_s, diffs = {str(b): [] for b in sizes}, {str(b): [] for b in sizes}, []
        with precision.autocast():
            shared_score(rec, split, groups[:2], args.rank_batch, device, precision)  # warm-up, untimed
            for _ in range(args.rank_reps):  # the paths alternate, so a slow spell of the machine hits both
                for b in sizes:
                    (got, batches), s_s, s_mem = timed(device, shared_score, rec, split, groups, b, device, precision)
                    (ref, _), p_s, p_mem = timed(device, our_score, rec, split, b, device)
                    shared_s[str(b)].append(s_s)
                    pointwise_s[str(b)].append(p_s)
                    diffs.append(float(np.max(np.abs(got - ref))))

        def rates(times):
            return {b: {"samples_per_s": len(split) / float(np.median(t)),
                        "samples_per_s_each": [len(split) / x for x in t]} for b, t in times.items()}

        shared, pointwise = rates(shared_s), rates(pointwise_s)
        ran, full = batches.token_counts()
        bound = full / ran
        same = pointwise[str(args.rank_batch)]["samples_per_s"]
        shared_rate = shared[str(args.rank_batch)]["samples_per_s"]
        best = max(v["samples_per_s"] for v in pointwise.values())
        best_shared = max(v["samples_per_s"] for v in shared.values())
        out[name] = {"P": float(np.mean(batches.prefix_len)),
                     "S": float(np.mean([split.lengths[g].mean() - p for g, p in zip(batches.groups,
                                                                                     batches.prefix_len)])),
                     "pointwise_tokens": full, "shared_tokens": ran, "token_bound": bound,
                     "shared_samples_per_s": shared_rate, "shared": shared, "pointwise": pointwise,
                     "shared_peak_memory_gib": s_mem, "pointwise_peak_memory_gib": p_mem,
                     "speedup": shared_rate / same, "share_of_bound": shared_rate / same / bound,
                     "best_over_best": best_shared / best, "share_of_bound_best_over_best": best_shared / best / bound,
                     "max_abs_score_diff": max(diffs)}
        r = out[name]
        print(f"ranking {name}: P {r['P']:.0f}, S {r['S']:.1f}, K {args.rank_k}, bound x{bound:.2f}; samples/s by "
              "batch, shared / pointwise: " + ", ".join(f"{b}: {shared[b]['samples_per_s']:.1f} / "
                                                       f"{pointwise[b]['samples_per_s']:.1f}" for b in shared)
              + f" -> x{r['speedup']:.2f} ({r['share_of_bound']:.0%} of the bound) at batch {args.rank_batch}, "
              f"x{r['best_over_best']:.2f} ({r['share_of_bound_best_over_best']:.0%}) best over best; "
              f"max |score diff| {r['max_abs_score_diff']:.2e}")
    return out


# ------------------------------------------------------------------------------------------------------ main
def build(args, device, dtype):
    from omegaconf import OmegaConf

    from minigpt4.llm.recommender import LLMRecommender

    cfg = OmegaConf.create({"llama_model": args.llama, "score_type": args.score_type, "freeze_lora": False,
                            "lora_config": {"use_lora": True, "r": 8, "alpha": 16, "dropout": 0.0,
                                            "target_modules": ["q_proj", "v_proj"], "layers_to_transform": []}})
    torch.manual_seed(0)
    rec = LLMRecommender.from_config(cfg, dtype=dtype).to(device)
    return rec


def run(args):
    device = torch.device(args.device if args.device == "cpu" or torch.cuda.is_available() else "cpu")
    if args.ranking:
        precision = resolve_precision(SimpleNamespace(dtype=args.rank_dtype, amp=True, compile="false"), device)
        rec = build(args, device, precision.dtype)
        report = {"device": str(device), "platform": platform.processor() or platform.machine(),
                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "backbone": args.llama,
                  "ranking": ranking_speed(args, device, rec, precision)}
        save(report, args.out)
        print(f"wrote {args.out}")
        return report
    data = Path(args.data)
    if not (data / "test_ood2.pkl").is_file():
        from minigpt4.data.synthetic import generate_synthetic

        data = Path("data/synthetic")
        if not (data / "test_ood2.pkl").is_file():
            generate_synthetic(str(data))
    n = max(args.train_rows, args.score_rows)
    rows = load_rows(data, n, args.seed)
    user_num, item_num = int(rows["uid"].max()) + 1, int(rows["iid"].max()) + 1
    bits = random_codes(user_num, item_num)  # speed does not depend on the code values
    prompt = load_prompt(PROMPT)
    # our path in the precision the framework picks here (run.dtype: auto); the reference path stays fp32
    ours_p = resolve_precision(SimpleNamespace(dtype="auto", amp=True, compile="false"), device)
    fast_dtype = ours_p.dtype
    rec = build(args, device, torch.float32)
    tok = rec.tokenizer
    lm = rec.causal_lm
    flops_token = flops_per_token(lm)
    n = 8192 if device.type == "cuda" else 1024  # a GPU needs large products to reach its rate
    machine = {"fp32": matmul_flops(device, torch.float32, n), "bf16": matmul_flops(device, torch.bfloat16, n)}
    report = {"device": str(device), "platform": platform.processor() or platform.machine(),
              "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "data": str(data), "backbone": args.llama, "flops_per_token": flops_token,
              "matmul_flops": machine, "auto_precision": {"dtype": ours_p.name, "why": ours_p.reason},
              "train_rows": args.train_rows, "score_rows": args.score_rows, "batch_train": args.batch_train,
              "batch_eval": args.batch_eval}
    print(f"device {device}; machine matmul: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in machine.items()))
    print(f"our path: {ours_p.describe()}")

    # ---- scoring, same weights: ours vs reference; metrics must agree
    score_rows = rows.iloc[:args.score_rows]
    table = CodeTable(*bits, mode="binary")
    start = time.perf_counter()
    split = TokenizedSplit(tok, build_prompts(score_rows, prompt, table), score_rows, 10**6)
    report["tokenize_once_s"] = time.perf_counter() - start
    # Our path as the framework runs it: in bf16 the frozen weights are loaded in bf16, which also spares autocast
    # a cast of every weight in every forward; same seed, so the same weights up to bf16 rounding.
    fast = rec if fast_dtype == torch.float32 else build(args, device, fast_dtype)
    if device.type == "cuda":  # first kernels (cuBLAS handles, autotuning) are slow: one untimed batch per path
        head = score_rows.iloc[:args.batch_eval]
        with ours_p.autocast():
            head_split = TokenizedSplit(tok, build_prompts(head, prompt, table), head, 10**6)
            our_score(fast, head_split, args.batch_eval, device)
        reference_score(rec, tok, head, prompt, bits, "binary", args.batch_eval, device)
    with ours_p.autocast():
        (ours, o_tokens), o_s, o_mem = timed(device, our_score, fast, split, args.batch_eval, device)
    (ref, r_tokens), r_s, r_mem = timed(device, reference_score, rec, tok, score_rows, prompt, bits, "binary",
                                        args.batch_eval, device)
    m_fast = evaluate_scores(split.uids, split.labels, ours)
    m_ref = {"auc": auc(split.labels, ref), "uauc": reference_uauc(split.uids, split.labels, ref)}
    fast_machine = machine[ours_p.name]
    report["scoring"] = {"ours": phase(len(split), o_tokens, o_s, o_mem, flops_token, fast_machine),
                         "reference": phase(len(split), r_tokens, r_s, r_mem, flops_token, machine["fp32"]),
                         "ours_metrics": {k: m_fast[k] for k in ("auc", "uauc")}, "reference_metrics": m_ref,
                         "max_abs_score_diff": float(np.max(np.abs(ours - ref)))}
    scoring = report["scoring"]
    scoring["speedup"] = scoring["ours"]["samples_per_s"] / scoring["reference"]["samples_per_s"]
    print(f"scoring: ours {report['scoring']['ours']['samples_per_s']:.2f} samples/s, reference "
          f"{report['scoring']['reference']['samples_per_s']:.2f} -> x{report['scoring']['speedup']:.2f}; "
          f"AUC {m_fast['auc']:.6f} vs {m_ref['auc']:.6f}, UAUC {m_fast['uauc']:.6f} vs {m_ref['uauc']:.6f}")
    save(report, args.out)

    # ---- training
    train_rows = rows.iloc[:args.train_rows]
    train_split = TokenizedSplit(tok, build_prompts(train_rows, prompt, table), train_rows, 10**6)
    steps = max(args.train_rows // args.batch_train, 2)
    results = {}
    for name in ("ours", "reference"):
        model = build(args, device, fast_dtype if name == "ours" else torch.float32)
        opt = our_optimizer(model, device) if name == "ours" else \
            torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        if name == "ours":
            our_train_steps(model, train_split, args.batch_train, 1, device, opt, 99, ours_p.autocast)  # warm-up
            tokens, secs, mem = timed(device, our_train_steps, model, train_split, args.batch_train, steps,
                                      device, opt, 0, ours_p.autocast)
        else:
            reference_train_steps(model, tok, train_rows, prompt, bits, "binary", args.batch_train, 1, device, opt, 99)
            tokens, secs, mem = timed(device, reference_train_steps, model, tok, train_rows, prompt, bits, "binary",
                                      args.batch_train, steps, device, opt)
        results[name] = phase(steps * args.batch_train, tokens, secs, mem, flops_token,
                              fast_machine if name == "ours" else machine["fp32"], train=True)
        del model, opt
    results["speedup"] = results["ours"]["samples_per_s"] / results["reference"]["samples_per_s"]
    report["training"] = results
    print(f"training: ours {results['ours']['samples_per_s']:.2f} samples/s, reference "
          f"{results['reference']['samples_per_s']:.2f} -> x{results['speedup']:.2f}")
    save(report, args.out)

    # ---- our path in each precision: fp32, bf16, bf16 + compiled scoring
    report["precision"] = precision_modes(args, device, tok, rows, prompt, table, machine, flops_token,
                                          progress=lambda modes: save({**report, "precision": modes}, args.out))
    if args.profile:
        report["profile"] = profile_modes(args, device, tok, rows, prompt, table, Path(args.out).parent)

    report["tokens_per_prompt"] = prompt_lengths(tok, score_rows, bits)
    report["shared_prefix_fraction"] = shared_prefix(split)
    report["uauc"] = uauc_speed(args.uauc_rows, args.uauc_users)
    print(f"tokens per prompt: {report['tokens_per_prompt']}; shared prefix with the user's previous prompt: "
          f"{report['shared_prefix_fraction']:.1%}")
    print(f"UAUC on {args.uauc_rows:,} rows: vectorised {report['uauc']['vectorised_s']:.2f} s, loop "
          f"{report['uauc']['loop_s']:.2f} s -> x{report['uauc']['speedup']:.1f}")
    save(report, args.out)
    print(f"wrote {args.out}")
    return report


def save(report, path):
    """Write the report so far, whole (a run stopped at a time limit keeps the sections that finished)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_text(path, json.dumps(report, indent=2) + "\n")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llama", default="smollm2", help="backbone (model.llama_model)")
    p.add_argument("--data", default="data/ml-1m", help="processed split directory (falls back to synthetic)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--score-type", default="yes", choices=("yes", "yes_minus_no"))
    p.add_argument("--train-rows", type=int, default=48)
    p.add_argument("--score-rows", type=int, default=128)
    p.add_argument("--dtype-rows", type=int, default=16, help="rows scored in each precision mode")
    p.add_argument("--dtype-steps", type=int, default=2, help="training steps in each precision mode (0: none)")
    p.add_argument("--profile", action="store_true", help="also write torch.profiler's per-op tables of one scoring "
                   "batch and one training step per eager mode (profile_<mode>.txt next to --out)")
    p.add_argument("--modes", type=lambda v: v.split(","), default=list(MODES),
                   help=f"precision modes to measure, comma-separated: {','.join(MODES)}")
    p.add_argument("--batch-train", type=int, default=8)
    p.add_argument("--batch-eval", type=int, default=32)
    p.add_argument("--uauc-rows", type=int, default=1_000_000)
    p.add_argument("--uauc-users", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ranking", action="store_true", help="measure only shared-prefix against pointwise scoring of "
                   "ranking candidates (--rank-*)")
    p.add_argument("--rank-data", default="data/ml-100k", help="processed splits the candidates come from")
    p.add_argument("--rank-users", type=int, default=16, help="test users, one positive each")
    p.add_argument("--rank-k", type=int, default=20, help="candidates a user: 1 positive + K - 1 negatives")
    p.add_argument("--rank-batch", type=int, default=32, help="batch of both paths (run.batch_size_eval): whole "
                   "prompts for the pointwise path, their tokens for the shared one")
    p.add_argument("--rank-reps", type=int, default=3, help="measurements of each path, alternating; medians reported")
    p.add_argument("--rank-sweep", type=lambda v: [int(x) for x in v.split(",") if x], default=[10],
                   help="more batch sizes of both paths, comma-separated")
    p.add_argument("--rank-dtype", default="fp32", help="run.dtype of the ranking measurement (auto: the framework's "
                   "pick)")
    p.add_argument("--out", default="runs/bench/benchmark.json")
    args = p.parse_args(argv)
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; choose from {','.join(MODES)}")
    return args


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    run(parse())
