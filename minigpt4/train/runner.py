"""The LLM training loop: AdamW groups, warm-up + cosine on the global step, accumulation, AMP, validation
after every epoch of `iters_per_epoch` steps, early stopping on valid AUC, best-adapter checkpoints, and the
final scoring of `run.test_splits` with the best adapter.

Several processes (torchrun): DDP, or FSDP with `run.fsdp`. The rows of each optimizer step depend only on the
global batch (`TrainBatches`), so N processes x batch b train like 1 process x batch N*b. Validation metrics are
taken from rank 0 and broadcast, so every rank makes the same early-stopping decision; rank 0 writes."""

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from minigpt4.batching import TrainBatches
from minigpt4.config import accumulation_steps
from minigpt4.metrics import evaluate_scores
from minigpt4.precision import COMPILE_PAD_MULTIPLE, resolve_precision
from minigpt4.registry import register
from minigpt4.train import distributed as dist
from minigpt4.train.checkpoint import save_checkpoint
from minigpt4.train.sharding import restore_state, shard_model, trained_state


@register("lr_scheduler", "linear_warmup_cosine_lr")
def linear_warmup_cosine_lr(step, run):
    """Linear warm-up from warmup_lr to init_lr over warmup_steps global steps, then a half cosine from
    init_lr to min_lr over max_epoch * iters_per_epoch steps (upstream's warm-up restarted every epoch)."""
    if step < run.warmup_steps:
        return min(run.init_lr, run.warmup_lr + (run.init_lr - run.warmup_lr) * step / max(run.warmup_steps, 1))
    total = run.max_epoch * run.iters_per_epoch
    return run.min_lr + (run.init_lr - run.min_lr) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def param_groups(model, weight_decay):
    """Upstream grouping: decay for matrices, none for biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "bias" in name or "ln" in name or "bn" in name or "norm" in name
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@register("runner", "rec_runner_base")
class RecRunner:
    def __init__(self, cfg, model, splits, run_dir, device, meta, precision=None):
        self.cfg, self.run = cfg, cfg.run
        self.model, self.splits, self.run_dir, self.device = model, splits, run_dir, device
        self.meta = meta  # written next to each checkpoint, checked when it is loaded again
        self.precision = precision or resolve_precision(cfg.run, device)
        self.autocast = self.precision.autocast
        self.compiled = None  # the compiled scoring forward, built on first use when run.compile asks for it
        self.compiled_info = {"compiled": False}
        self.ckpt_path = run_dir.path / "checkpoint_best"
        self.log = print if dist.is_main() else (lambda *a, **k: None)
        self.sharded = False  # True once FSDP has sharded the model: every rank must then run every forward
        self.best_state = None  # the best epoch's trained tensors, restored in memory before the final test

    def trainable(self):
        return [p for p in self.model.parameters() if p.requires_grad]

    def inputs(self, batch):
        """The model's keyword arguments of a batch (everything but the labels), on the device."""
        return {k: v.to(self.device) for k, v in batch.items() if k != "labels"}

    # ------------------------------------------------------------------------------------------------ scoring
    @torch.inference_mode()
    def score(self, split, memo=None):
        """Scores of every row of a split; rows are sharded over ranks, each scored exactly once.

        `memo` ((user, item, prompt ids) -> score) lets the final test skip prompts it has already scored with the
        same adapter: test_warm and test_cold are subsets of test, so scoring all three costs one pass."""
        self.model.eval()
        data = self.splits[split]
        memo = {} if memo is None else memo
        # the ids and the (user, item) pair: CoLLM slots make equal ids of different pairs score differently
        keys = [(u, i, tuple(ids)) for u, i, ids in zip(data.uids.tolist(), data.iids.tolist(), data.input_ids)]
        need = np.array([i for i, k in enumerate(keys) if k not in memo], dtype=int)
        mine = need[dist.rank()::dist.world_size()]
        pos_out, score_out = [], []
        start = time.time()
        forward = self._scoring_forward(len(need))
        pad = COMPILE_PAD_MULTIPLE if forward is not self.model else 1
        batches = data.eval_batches(self.run.batch_size_eval, mine, pad_multiple=pad)
        total = -(-len(mine) // self.run.batch_size_eval)
        for pos, batch in tqdm(batches, total=total, desc=f"scoring {split}", leave=False, mininterval=10,
                               disable=not dist.is_main()):
            first = time.time()
            with self.autocast():
                s = forward(**self.inputs(batch))
            if forward is not self.model and "compile_s" not in self.compiled_info:
                self.compiled_info["compile_s"] = time.time() - first  # the first batch waits for the compiler
                self.log(f"compiled the scoring forward in {self.compiled_info['compile_s']:.0f} s (first batch included)")
            pos_out.append(pos)
            score_out.append(s.float().cpu().numpy())
        if self.sharded:  # sharded forwards are collectives: a rank with fewer batches runs throw-away ones
            for _ in range(dist.max_over_ranks(total) - total):
                with self.autocast():
                    self.model(**self.inputs(data.batch(np.array([0]))))
        local = (np.concatenate(pos_out) if pos_out else np.zeros(0, int),
                 np.concatenate(score_out) if score_out else np.zeros(0, np.float32))
        scores = np.zeros(len(data), dtype=np.float64)
        for pos, s in dist.gather_objects(local):
            scores[pos] = s
        for i in np.setdiff1d(np.arange(len(data)), need):
            scores[i] = memo[keys[i]]
        memo.update((keys[i], scores[i]) for i in need)
        # no speed when every prompt came from the memo: nothing was scored here
        return scores, (len(need) / max(time.time() - start, 1e-9) if len(need) else None)

    def _scoring_forward(self, rows):
        """The model, or its compiled forward when run.compile asks for it for `rows` rows to score. Compiled once
        with dynamic shapes; batches are padded to a multiple of COMPILE_PAD_MULTIPLE tokens, which keeps the
        shapes few (left padding changes no score: positions count real tokens only)."""
        if self.compiled is not None:
            return self.compiled
        wanted, why = self.precision.compile_scoring(rows)
        if not wanted or self.sharded:
            if "compile_why" not in self.compiled_info:
                self.compiled_info["compile_why"] = why if not self.sharded else "FSDP-sharded model: not compiled"
            return self.model
        self.log(f"compiling the scoring forward ({why})")
        self.compiled = torch.compile(self.model, dynamic=True)
        self.compiled_info = {"compiled": True, "compile_why": why}
        return self.compiled

    def evaluate(self, split, memo=None):
        data = self.splits[split]
        scores, speed = self.score(split, memo)
        metrics = evaluate_scores(data.uids, data.labels, scores)
        metrics["samples_per_s"] = speed
        return metrics, scores

    # ----------------------------------------------------------------------------------------------- training
    def train(self):
        run, model = self.run, self.model
        world = dist.world_size()
        accum = accumulation_steps(run, world)
        params = self.trainable()
        wrap = "FSDP" if run.fsdp and world > 1 else ("DDP" if world > 1 else "one process")
        self.log(f"training {sum(p.numel() for p in params):,} parameters; world size {world} ({wrap}), "
                 f"batch {run.batch_size_train} per process x {accum} accumulation = global batch "
                 f"{run.batch_size_train * accum * world}; lr {run.lr_sched} "
                 f"{run.warmup_lr:g}->{run.init_lr:g}->{run.min_lr:g}, warm-up {run.warmup_steps} steps, "
                 f"{run.max_epoch} epochs x {run.iters_per_epoch} steps")
        train_model = model
        if wrap == "FSDP":
            train_model = shard_model(model)  # in place: scoring goes through the sharded model too
            self.sharded = True
        elif wrap == "DDP":
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        optimizer = torch.optim.AdamW(param_groups(model, run.weight_decay), lr=run.init_lr, betas=(0.9, run.beta2))
        lr_at = self._schedule()
        batches = TrainBatches(self.splits["train"], run.batch_size_train, run.seed, world, dist.rank(), accum,
                               run.length_buckets)
        valid = run.valid_splits[0] if run.valid_splits else None  # None: no model selection, keep the last
        state = {"epoch": 0, "iter": 0, "step": 0, "losses": [], "best": -math.inf, "best_epoch": -1, "bad": 0,
                 "stopped": False}
        if run.resume_ckpt_path:
            state = self._resume(optimizer, batches)
        epoch = state["epoch"]
        while epoch < run.max_epoch and not state["stopped"]:
            model.train()
            start, first_iter = time.time(), state["iter"]
            for _ in tqdm(range(first_iter, run.iters_per_epoch), desc=f"epoch {epoch}", leave=False, mininterval=10,
                          disable=not dist.is_main()):
                step = state["step"]
                lr = lr_at(step, run)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                step_loss = 0.0
                for _ in range(accum):
                    batch = next(batches)
                    with self.autocast():
                        scores = train_model(**self.inputs(batch))
                    loss = model.loss(scores, batch["labels"].to(self.device))
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"loss is {loss.item()} at epoch {epoch} step {step}; training stopped. The last good "
                            f"checkpoint is {self.ckpt_path} (resume point: {self.run_dir.path / 'resume'}). "
                            "Lower run.init_lr, or use run.dtype: fp32 if this ran in bf16.")
                    (loss / accum).backward()
                    step_loss += loss.item() / accum
                state["losses"].append(dist.mean_over_ranks(step_loss))  # the loss of the global batch
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"], state["iter"] = step + 1, state["iter"] + 1
                if state["step"] % run.log_freq == 0:
                    self.log(f"epoch {epoch} step {state['step']} loss {np.mean(state['losses'][-run.log_freq:]):.4f} "
                             f"lr {lr:.3g}")
                if run.save_every_steps and state["step"] % run.save_every_steps == 0 and state["iter"] < run.iters_per_epoch:
                    self._save_resume(state, optimizer, batches)
            seen = (run.iters_per_epoch - first_iter) * accum * run.batch_size_train * world
            train_speed = seen / (time.time() - start)
            if valid is None:
                metrics, improved = {}, True
            else:
                metrics = dist.broadcast_object(self.evaluate(valid)[0])  # one decision, taken on rank 0
                improved = metrics["auc"] > state["best"]
            if improved:
                state.update(best=metrics.get("auc", state["best"]), best_epoch=epoch, bad=0)
                self.best_state = trained_state(model)  # a collective under FSDP: every rank calls it
                if dist.is_main():
                    save_checkpoint(model, self.ckpt_path, {**self.meta, "epoch": epoch, "step": state["step"],
                                                            "valid_auc": metrics.get("auc")}, self.best_state)
            else:
                state["bad"] += 1
            record = {"epoch": epoch, "step": state["step"], "train_loss": float(np.mean(state["losses"])), "lr": lr,
                      "train_samples_per_s": train_speed, **{f"{valid}_{k}": v for k, v in metrics.items()},
                      "best_epoch": state["best_epoch"]}
            self.run_dir.log(record, step=state["step"])
            scored = (f"{valid} auc {metrics['auc']:.4f} uauc {metrics['uauc']:.4f} loss {metrics['loss']:.4f} "
                      f"({metrics['samples_per_s']:.1f} samples/s)" if metrics else "no valid split: adapter saved")
            self.log(f"epoch {epoch}: train loss {record['train_loss']:.4f} ({train_speed:.1f} samples/s) | "
                     f"{scored} | lr {lr:.3g}{' | best' if improved and metrics else ''}")
            state["stopped"] = state["bad"] >= run.patience
            if state["stopped"]:
                self.log(f"early stop: valid auc has not improved for {state['bad']} evaluations (run.patience)")
            else:
                epoch += 1
            state.update(epoch=epoch, iter=0, losses=[])
            self._save_resume(state, optimizer, batches, self.best_state if improved else None)
        epoch, step, best, best_epoch = min(epoch, run.max_epoch - 1), state["step"], state["best"], state["best_epoch"]
        print(f"rank {dist.rank()}: training finished at epoch {epoch} step {step}", flush=True)
        dist.barrier()
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        return {"best_valid_auc": best, "best_epoch": best_epoch, "steps": step, "peak_gpu_memory_gib": peak}

    def _save_resume(self, state, optimizer, batches, trained=None):
        """trained: the current trained tensors when the caller already gathered them (the epoch's new best)."""
        from minigpt4.train import resume

        trained = trained if trained is not None else trained_state(self.model)
        resume.save(self.run_dir.path, state, trained, self.best_state, optimizer, batches)

    def _resume(self, optimizer, batches):
        """Restore a resume point of this run: weights, optimizer, RNG, batch position, best state, progress."""
        from minigpt4.train import resume

        state, trained, self.best_state, own = resume.load(self.run.resume_ckpt_path)
        restore_state(self.model, trained)
        optimizer.load_state_dict(own["optimizer"])
        batches.load_state(own["batches"])
        resume.restore_rng(own)
        self.log(f"resumed {self.run.resume_ckpt_path} at epoch {state['epoch']} step {state['step']}")
        return state

    def _schedule(self):
        from minigpt4 import registry

        return registry.get("lr_scheduler", self.run.lr_sched)

    # ------------------------------------------------------------------------------------------------ testing
    def test(self, splits, reload_best=True):
        """Score each split (with the best adapter when one was saved); write predictions; return metrics."""
        if reload_best and self.best_state is not None:
            restore_state(self.model, self.best_state)
        results, memo = {}, {}
        for split in splits:
            metrics, scores = self.evaluate(split, memo)
            data = self.splits[split]
            self.run_dir.write_predictions(f"predictions_{split}.csv", data.uids, data.iids, data.labels, scores)
            results[split] = metrics
            self.log(f"{split}: auc {metrics['auc']:.4f} uauc {metrics['uauc']:.4f} over {metrics['rows']} rows "
                     f"({metrics['users']} users in UAUC; skipped {metrics['one_sample_users']} with one row, "
                     f"{metrics['one_class_users']} with one class)")
        return results
