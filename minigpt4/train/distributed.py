"""Process group from torchrun's environment; a plain `python script.py` is one process with no group.

Evaluation shards rows by rank without padding (each row scored exactly once) and gathers the results, so
every rank computes identical metrics and takes identical early-stopping decisions."""

import datetime
import os

import torch
import torch.distributed as dist


def init(timeout_minutes=30):
    """Returns (rank, world_size, local_rank)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0"))


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def is_main():
    return rank() == 0


def gather_objects(obj):
    """List of every rank's `obj`, in rank order (just [obj] without a process group)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier():
    if dist.is_initialized():
        dist.barrier()


def shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()
