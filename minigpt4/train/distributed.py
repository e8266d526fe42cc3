"""Process group from torchrun's environment; a plain `python script.py` is one process with no group.

`nccl` when the run uses CUDA, `gloo` on the CPU, with a timeout from `run.dist_timeout_minutes` so a hung
collective fails instead of waiting forever (the upstream's timeout was a year). Evaluation shards rows by rank
without padding (each row scored exactly once) and gathers the results; decisions that must agree across ranks
(early stopping, the best checkpoint) are taken on rank 0 and broadcast.
"""

import datetime
import os

import torch
import torch.distributed as dist


def init(device="auto", timeout_minutes=30):
    """Returns (rank, world_size, local_rank). `device` is `run.device`: nccl only when CUDA will be used."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        backend = "nccl" if (device == "auto" or device.startswith("cuda")) and torch.cuda.is_available() else "gloo"
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


def broadcast_object(obj):
    """Rank 0's `obj` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value):
    """The mean of a Python float over all ranks."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def max_over_ranks(value):
    if not dist.is_initialized():
        return value
    return max(gather_objects(value))


def is_peer_failure(err):
    """Whether an exception raised during a multi-process run comes from the process group (a rank died, a
    connection dropped, a collective timed out) rather than from this process's own work."""
    if not dist.is_initialized() or dist.get_world_size() < 2:
        return False
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err)
    return any(s in text for s in ("gloo", "NCCL", "Connection reset", "Connection closed", "timed out", "Timed out"))


def barrier():
    if dist.is_initialized():
        dist.barrier()


def shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()
