"""Resume points: everything a killed LLM training run needs to continue exactly where it stopped.

Saved into `<run dir>/resume/step_<N>/` after every epoch and, with `run.save_every_steps`, every N steps:
`trained.pt` (the trained tensors), `best.pt` (the best epoch's, for the final test), `progress.json` (epoch,
step, the epoch's losses so far, early-stopping state) from rank 0, and `rank<r>.pt` from every rank (optimizer
state, RNG states, position in the training batches). `resume/latest` names the newest complete point and is
replaced only after every rank has written, so a kill during a save leaves the previous point usable.

Rank 0 reads the shared parts and broadcasts them; each rank reads its own file, so nodes need no shared disk
for the trained tensors (each rank's own file must be where it wrote it).
"""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from minigpt4.config import ConfigError
from minigpt4.fileio import atomic_text, atomic_write
from minigpt4.train import distributed as dist
from minigpt4.train.selection import Progress
from minigpt4.train.sharding import restore_state, trained_state


def _rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(run_dir, progress, trained, best, optimizer, batches):
    """Called by every rank at the same point of training; `progress`: the loop's `Progress`."""
    root = Path(run_dir) / "resume"
    point = root / f"step_{progress.step}"
    if dist.is_main():
        point.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    own = {"optimizer": optimizer.state_dict(), "rng": _rng_state(), "batches": batches.state()}
    atomic_write(point / f"rank{dist.rank()}.pt", lambda tmp: torch.save(own, tmp))
    if dist.is_main():
        atomic_write(point / "trained.pt", lambda tmp: torch.save(trained, tmp))
        if best is not None:
            atomic_write(point / "best.pt", lambda tmp: torch.save(best, tmp))
        atomic_text(point / "progress.json", json.dumps(progress.to_json()) + "\n")
    dist.barrier()  # every rank's file is complete before `latest` moves
    if dist.is_main():
        atomic_text(root / "latest", point.name + "\n")
        for old in root.glob("step_*"):
            if old.name != point.name:
                shutil.rmtree(old, ignore_errors=True)


def find(value):
    """The newest complete resume point of a run directory (or of its `resume/` folder)."""
    path = Path(value)
    root = path / "resume" if (path / "resume").is_dir() else path
    latest = root / "latest"
    if not latest.is_file():
        raise ConfigError(f"run.resume_ckpt_path = {value!r}: no resume point ({latest} is missing). A run writes "
                          "one after its first epoch (or every run.save_every_steps steps); start a new run instead")
    point = root / latest.read_text().strip()
    if not (point / "progress.json").is_file():
        raise ConfigError(f"run.resume_ckpt_path = {value!r}: {point} is incomplete; it cannot be resumed")
    return point


def read_progress(point):
    """The `Progress` saved in resume point `point`."""
    path = Path(point) / "progress.json"
    return Progress.from_json(json.loads(path.read_text()), where=path)


def load(value):
    """(Progress, trained, best, own) for this rank; rank 0's shared parts reach every rank by broadcast."""
    point = find(value)
    shared = None
    if dist.is_main():
        best = point / "best.pt"
        shared = (read_progress(point),
                  torch.load(point / "trained.pt", weights_only=False),
                  torch.load(best, weights_only=False) if best.is_file() else None)
    progress, trained, best = dist.broadcast_object(shared)
    own_file = point / f"rank{dist.rank()}.pt"
    if not own_file.is_file():
        raise ConfigError(f"run.resume_ckpt_path: {own_file} is missing: resume with the process count of the "
                          "interrupted run")
    return progress, trained, best, torch.load(own_file, weights_only=False)


def save_point(run_dir, progress, model, best, optimizer, batches, trained=None):
    """`save` from the training loop, on every rank. trained: the model's trained tensors when the caller already
    gathered them (an epoch's new best); else gathered here (a collective under FSDP)."""
    save(run_dir, progress, trained if trained is not None else trained_state(model), best, optimizer, batches)


def restore(value, model, optimizer, batches):
    """Continue from the newest resume point of run directory `value`: the trained weights, optimizer state,
    position in the training batches and RNG states are restored; returns (progress, best epoch's tensors)."""
    progress, trained, best, own = load(value)
    restore_state(model, trained)
    optimizer.load_state_dict(own["optimizer"])
    batches.load_state(own["batches"])
    _set_rng_state(own["rng"])
    if dist.is_main():
        print(f"resumed {value} at epoch {progress.epoch} step {progress.step}")
    return progress, best
