"""What the LLM loop (`recipes/finetune_llm.py`) builds its optimizer step from: the learning-rate schedules that
`run.lr_sched` names, AdamW's parameter groups, and the DDP / FSDP wrapping of the model for several processes."""

import math

import torch

from minigpt4 import registry
from minigpt4.registry import register
from minigpt4.train import distributed as dist
from minigpt4.train.sharding import shard_model


@register("lr_scheduler", "linear_warmup_cosine_lr")
def linear_warmup_cosine_lr(step, run):
    """Linear warm-up from warmup_lr to init_lr over warmup_steps global steps, then a half cosine from
    init_lr to min_lr over max_epoch * iters_per_epoch steps (upstream's warm-up restarted every epoch)."""
    if step < run.warmup_steps:
        return min(run.init_lr, run.warmup_lr + (run.init_lr - run.warmup_lr) * step / max(run.warmup_steps, 1))
    total = run.max_epoch * run.iters_per_epoch
    return run.min_lr + (run.init_lr - run.min_lr) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


class LearningRate:
    """The learning rate of every optimizer step of an LLM run: the `run.lr_sched` schedule, the one reader of
    run.warmup_lr, run.init_lr and run.min_lr. `apply` sets it on the optimizer before each step."""

    def __init__(self, run):
        self.run, self.at = run, registry.get("lr_scheduler", run.lr_sched)

    def __call__(self, step):
        return self.at(step, self.run)

    def apply(self, optimizer, step):
        lr = self(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def __str__(self):
        r = self.run
        return f"lr {r.lr_sched} {r.warmup_lr:g}->{r.init_lr:g}->{r.min_lr:g}, warm-up {r.warmup_steps} steps"


def param_groups(model, weight_decay):
    """Upstream grouping: decay for matrices, none for biases and norms."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "bias" in name or "ln" in name or "bn" in name or "norm" in name
        (no_decay if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw(params, device, sharded=False, **kwargs):
    """AdamW as every LLM training step uses it: fused (the whole update in one kernel launch, where launches bound
    a small model's step) on a GPU unless the parameters are FSDP-sharded; the default implementation elsewhere."""
    return torch.optim.AdamW(params, fused=device.type == "cuda" and not sharded, **kwargs)


def wrap_for_training(model, fsdp, device):
    """(the module the training forwards run through, how: FSDP, DDP or one process). FSDP (`run.fsdp` with
    several processes) shards `model` in place, so its scoring forwards become collectives too."""
    if dist.world_size() == 1:
        return model, "one process"
    if fsdp:
        return shard_model(model), "FSDP"
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids), "DDP"
