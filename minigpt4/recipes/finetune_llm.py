"""Stages 1 and 2 (train_collm_mf_din.py, train_binllm.py) and eval.py: an LLM recommender that scores a prompt by
its Yes logit, fine-tuned with LoRA and, for CoLLM, the slot weights. Stage 1 (TALLRec) and stage 2 (BinLLM codes,
CoLLM slots) differ only in their config; eval.py (or run.evaluate) scores model.ckpt and trains nothing.

Read top to bottom: config -> data -> model -> loop -> evaluation -> files.
- config: `cfg` is read-only; what the run derives from it and the data is one frozen `Derived` (`d`).
- loop: AdamW (`run.weight_decay`, `run.beta2`) at the rate of the `run.lr_sched` schedule on the global step,
  `d.accum` micro-batches per step, `run.iters_per_epoch` steps per epoch, validation after each epoch, early
  stopping after `run.patience` epochs without a better valid AUC. Several processes (torchrun): DDP, or FSDP
  with `run.fsdp`; the rows of a step depend only on the global batch, so N processes x batch b train like one
  process x batch N*b. Valid metrics are taken on rank 0 and broadcast, so every rank stops alike; rank 0 writes.
- files: `{run.output_dir}/{job_id}/`: config.yaml, log.jsonl, checkpoint_best/ (the best epoch's adapter),
  resume/ (resume points), predictions_<split>.csv, metrics.json.
"""

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from minigpt4.batching import TrainBatches, decode
from minigpt4.config import load_in_bits
from minigpt4.llm import memory
from minigpt4.llm.backbone import load_tokenizer, set_checkpointing
from minigpt4.precision import COMPILE_PAD_MULTIPLE, resolve_precision
from minigpt4.recipes.derived import derive_llm, pick_device, saved_config, seed_everything
from minigpt4.recommender import Recommender
from minigpt4.tasks import RecTask
from minigpt4.train import distributed as dist
from minigpt4.train import resume
from minigpt4.train.checkpoint import save_checkpoint
from minigpt4.train.eta import RunClock, rows_to_score
from minigpt4.train.optim import LearningRate, adamw, param_groups, wrap_for_training
from minigpt4.train.run_dir import RunDir
from minigpt4.train.scoring import Scorer, log, on_device
from minigpt4.train.selection import Progress
from minigpt4.train.sharding import restore_state, trained_state


def main(cfg, stage):
    """`stage` (minigpt4/stages.py) trains, or scores model.ckpt (eval.py, run.evaluate); `cfg` is read-only.
    Returns metrics.json's content."""
    # ------------------------------------------------------------------------------------------------- config
    run = cfg.run
    _, _, local_rank = dist.init(run.device, run.dist_timeout_minutes)
    seed_everything(run.seed)  # the same on every rank: identical initial weights, also when sharded
    device = pick_device(cfg, local_rank)
    # --------------------------------------------------------------------------------------------------- data
    task = RecTask(cfg)  # the dataset's splits as rows
    d = derive_llm(cfg, stage, task)  # counts, mode, prompt, codes, LoRA, job id: every input checked first
    precision = resolve_precision(run, device)
    # -------------------------------------------------------------------------------------------------- model
    if device.type == "cuda" and dist.is_main():  # will it fit? Known before any weight loads; CPU runs skip it
        print_memory_estimate(cfg, d, task, precision.dtype, device)
    # backbone, LoRA (+ CoLLM's slot module and encoder), model.ckpt loaded: stage 1's adapter for stage 2, eval's
    rec = Recommender(cfg, task, d, device, precision)
    model, meta = rec.model, rec.meta  # meta: written beside each checkpoint, checked on loading
    names = stage.split_names(run)  # train, valid and test splits; only the test splits when it trains nothing
    splits = rec.token_splits(names)  # the splits' prompts as token batches, with the model's tokenizer
    run_dir = RunDir(d.run_path, saved_config(cfg, d), dist.is_main(), d.resume_step)  # inputs all checked
    dist.barrier()
    print(f"run directory: {run_dir.path}; mode {d.mode}; backbone {cfg.model.llama_model}; device {device}"
          + (f"; slots filled by {cfg.model.rec_model}" if d.mode == "slots" else ""))
    print(precision.describe())
    example = splits[names[0]]
    i = example.example_row()
    print(f"example prompt ({example.name} row {i}, {example.lengths[i]} tokens): "
          f"{decode(model.tokenizer, example.input_ids[i])}")
    scorer = Scorer(model, splits, device, precision, run.batch_size_eval)
    # --------------------------------------------------------------------------------------------------- loop
    results = {}
    if not d.evaluate and any(p.requires_grad for p in model.parameters()):
        results["train"], best_state = train(cfg, d, model, splits["train"], scorer, run_dir, meta)
        if best_state is not None:
            restore_state(model, best_state)  # the final test scores the best epoch's adapter
    # --------------------------------------------------------------------------------------------- evaluation
    results.update(scorer.test(run.test_splits, run_dir))
    # score_head: the Yes/No logits are fp32 whatever the backbone's dtype (runs before that fix lack the key)
    results["precision"] = {"dtype": precision.name, "why": precision.reason, "score_head": "fp32",
                            **scorer.compiled_info}
    results["warm_cold_rules"] = task.warm_cold_rules()  # which rows test_warm / test_cold hold
    if {"test_warm", "test_cold"} & set(run.test_splits):
        print(f"test_warm / test_cold rules: {results['warm_cold_rules']}")
    # -------------------------------------------------------------------------------------------------- files
    run_dir.write_json("metrics.json", results)
    done = [f"{s} AUC {m['auc']:.4f} UAUC {m['uauc']:.4f} ({m['rows']} rows)"
            for s, m in results.items() if s in run.test_splits]
    if "train" in results:
        t = results["train"]
        valid = f", valid AUC {t['best_valid_auc']:.4f}" if math.isfinite(t["best_valid_auc"]) else ""
        done.insert(0, f"{t['steps']} steps, adapter of epoch {t['best_epoch']}{valid}")
    print(f"finished: {'; '.join(done) or 'nothing trained or scored'}. Files: {run_dir.path}/")
    run_dir.close()
    return results


def train(cfg, d, model, train_split, scorer, run_dir, meta):
    """Train the model's trainable parameters on batches of `train_split` (a TokenizedSplit), scoring the valid
    split with `scorer`; returns (summary, the best epoch's trained tensors or None)."""
    run, device, world = cfg.run, scorer.device, dist.world_size()
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if run.grad_checkpointing:  # backward recomputes each decoder layer instead of keeping its activations
        set_checkpointing(model.causal_lm, True)
    train_model, wrap = wrap_for_training(model, run.fsdp, device)  # DDP, FSDP (in place) or the model itself
    if run.compile_train:  # fewer, fused kernels; the backward is compiled with the forward (AOTAutograd)
        train_model = torch.compile(train_model, dynamic=True)
    schedule = LearningRate(run)  # run.lr_sched over warmup_lr, init_lr, min_lr: it sets the rate of every step
    optimizer = adamw(param_groups(model, run.weight_decay), device, sharded=wrap == "FSDP", lr=schedule(0),
                      betas=(0.9, run.beta2))
    batches = TrainBatches(train_split, run.batch_size_train, run.seed, world, dist.rank(), d.accum,
                           run.length_buckets, COMPILE_PAD_MULTIPLE if run.compile_train else 1)
    extras = "".join(f"; {what}" for on, what in ((run.grad_checkpointing, "gradient checkpointing"),
                                                  (run.compile_train, "compiled (the first step waits for the "
                                                                      "compiler)")) if on)
    log(f"training {n_trained:,} parameters{extras}; world "
        f"size {world} ({wrap}), batch {run.batch_size_train} per process "
        f"x {d.accum} accumulation = global batch {run.batch_size_train * d.accum * world}; {schedule}, "
        f"{run.max_epoch} epochs x {run.iters_per_epoch} steps")
    valid = run.valid_splits[0] if run.valid_splits else None  # None: no model selection, keep the last
    clock = RunClock(run.max_epoch, run.iters_per_epoch, run.batch_size_train * d.accum * world,
                     len(scorer.splits[valid]) if valid else 0, rows_to_score(scorer.splits, run.test_splits))
    ckpt = run_dir.path / "checkpoint_best"
    state = Progress()  # epoch, step, this epoch's losses, and model selection's best epoch and patience count
    best_state = None  # the best epoch's trained tensors, restored in memory before the final test
    if d.resume_step is not None:
        state, best_state = resume.restore(run.resume_ckpt_path, model, optimizer, batches)
    epoch, first_step = state.epoch, state.step  # first_step: where this process started (0, or a resume)
    while epoch < run.max_epoch and not state.stopped:
        model.train()
        start, first_iter = time.time(), state.iter
        for _ in tqdm(range(first_iter, run.iters_per_epoch), desc=f"epoch {epoch}", leave=False, mininterval=10,
                      disable=not dist.is_main()):
            step, step_start = state.step, time.time()
            lr = schedule.apply(optimizer, step)
            step_loss = 0.0
            for _ in range(d.accum):
                batch = next(batches)
                with scorer.autocast():
                    scores = train_model(**on_device(batch, device))
                loss = model.loss(scores, batch["labels"].to(device))
                value = loss.item()  # the micro-batch's one wait for the device
                if not math.isfinite(value):
                    raise FloatingPointError(
                        f"loss is {value} at epoch {epoch} step {step}; training stopped. The last good "
                        f"checkpoint is {ckpt} (resume point: {run_dir.path / 'resume'}). "
                        "Lower run.init_lr, or use run.dtype: fp32 if this ran in bf16.")
                (loss / d.accum).backward()
                step_loss += value / d.accum
            state.losses.append(dist.mean_over_ranks(step_loss))  # the loss of the global batch
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step, state.iter = step + 1, state.iter + 1
            clock.stepped(time.time() - step_start)
            if step == first_step:  # the estimate a new run prints first
                log(f"first step: {clock.step_seconds:.1f} s; {clock.describe(state.step, epoch)}")
            if state.step % run.log_freq == 0:
                log(f"epoch {epoch} step {state.step} loss {np.mean(state.losses[-run.log_freq:]):.4f} "
                    f"lr {lr:.3g} | {clock.describe(state.step, epoch)}")
            mid_epoch = state.iter < run.iters_per_epoch  # an epoch's end writes its own below
            if run.save_every_steps and state.step % run.save_every_steps == 0 and mid_epoch:
                resume.save_point(run_dir.path, state, model, best_state, optimizer, batches)
        seen = (run.iters_per_epoch - first_iter) * d.accum * run.batch_size_train * world
        train_speed = seen / (time.time() - start)
        metrics = {}
        if valid is not None:
            valid_start = time.time()
            metrics = dist.broadcast_object(scorer.evaluate(valid)[0])  # one decision, taken on rank 0
            clock.scored(len(scorer.splits[valid]), time.time() - valid_start)
        improved = state.evaluated(epoch, metrics.get("auc"), run.patience)  # no valid split: the last epoch
        if improved:
            best_state = trained_state(model)  # a collective under FSDP: every rank calls it
            if dist.is_main():
                save_checkpoint(model, ckpt, {**meta, "epoch": epoch, "step": state.step,
                                              "valid_auc": metrics.get("auc")}, best_state)
        record = {"epoch": epoch, "step": state.step, "train_loss": float(np.mean(state.losses)), "lr": lr,
                  "train_samples_per_s": train_speed, **{f"{valid}_{k}": v for k, v in metrics.items()},
                  "best_epoch": state.best_epoch}
        run_dir.log(record, step=state.step)
        scored = (f"{valid} auc {metrics['auc']:.4f} uauc {metrics['uauc']:.4f} loss {metrics['loss']:.4f} "
                  f"({metrics['samples_per_s']:.1f} samples/s)" if metrics else "no valid split: adapter saved")
        log(f"epoch {epoch}: train loss {record['train_loss']:.4f} ({train_speed:.1f} samples/s) | {scored} | "
            f"lr {lr:.3g}{' | best' if improved and metrics else ''}")
        if state.stopped:
            log(f"early stop: valid auc has not improved for {state.bad} evaluations (run.patience)")
        else:
            epoch += 1
            if epoch < run.max_epoch:
                log(clock.describe(state.step, epoch))
        state.epoch, state.iter, state.losses = epoch, 0, []
        resume.save_point(run_dir.path, state, model, best_state, optimizer, batches, best_state if improved else None)
    print(f"rank {dist.rank()}: training finished at epoch {min(epoch, run.max_epoch - 1)} step {state.step}",
          flush=True)
    dist.barrier()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"best_valid_auc": state.best, "best_epoch": state.best_epoch, "steps": state.step,
            "peak_gpu_memory_gib": peak}, best_state


def print_memory_estimate(cfg, d, task, dtype, device):
    """GPU runs: the memory the run needs per GPU (minigpt4/llm/memory.py) against what this GPU has, with the
    settings that would make it fit when it does not. The longest prompt is measured with the tokenizer alone."""
    run, model_cfg = cfg.run, cfg.model
    train = not d.evaluate and not (model_cfg.freeze_lora and d.mode != "slots")
    split = run.train_splits[0] if train else run.test_splits[0]
    tokenizer = load_tokenizer(model_cfg.llama_model)
    lengths = task.token_splits(tokenizer, d.prompt, [split], d.codes, mode=d.mode)[split].lengths
    lora = memory.lora_shape(d.lora if d.lora is not None else model_cfg.lora_config, trained=not model_cfg.freeze_lora)
    setting = dict(dtype=dtype, lora=lora,
                   batch=run.batch_size_train if train else run.batch_size_eval, seq_len=int(lengths.max()),
                   train=train, processes=dist.world_size(), fsdp=run.fsdp, grad_checkpointing=run.grad_checkpointing,
                   load_in_bits=load_in_bits(model_cfg), slots=d.mode == "slots")
    available = torch.cuda.get_device_properties(device).total_memory / memory.GIB
    try:  # a meta-device trace this architecture does not support must not stop the run: the line is advice
        lines = memory.report(memory.backbone_config(model_cfg.llama_model), available, **setting)
    except Exception as err:
        lines = [f"memory estimate: not available for this backbone ({type(err).__name__}: {err})"]
    print("\n".join(lines))
