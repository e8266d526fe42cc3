"""Values read off a loaded config: the normalised run mode, the one dataset entry, the accumulation steps."""

from minigpt4.errors import ConfigError


def accumulation_steps(run, world):
    """Micro-batches per optimizer step for `world` processes (see run.global_batch_size)."""
    if not run.global_batch_size:
        return run.accum_grad_iters
    per_step = run.batch_size_train * world
    if run.global_batch_size % per_step:
        raise ConfigError(f"run.global_batch_size={run.global_batch_size} is not a multiple of run.batch_size_train="
                          f"{run.batch_size_train} x {world} processes; pick a batch size that divides it")
    return run.global_batch_size // per_step


def run_mode(cfg):
    """Normalise `run.mode`: upstream v2 -> text, v3 -> codes."""
    return {"v2": "text", "v3": "codes"}.get(cfg.run.mode, cfg.run.mode)


def dataset_cfg(cfg):
    (name, ds), = cfg.datasets.items()
    return name, ds
