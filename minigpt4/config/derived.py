"""Values read off a loaded config: the normalised run mode, the one dataset entry, the accumulation steps, the
bits the frozen backbone is stored in."""

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


def load_in_bits(model):
    """8, 4 or None: how the frozen backbone is stored (`model.load_in_8bit`, `model.load_in_4bit`; upstream's
    `model.low_resource: True` means 8 bits). A model section without these keys (benchmark.py's) loads as is."""
    eight = [key for key in ("load_in_8bit", "low_resource") if model.get(key, False)]
    four = model.get("load_in_4bit", False)
    if eight and four:
        raise ConfigError(f"model.{eight[0]} and model.load_in_4bit are both True: the backbone is stored in 8 or in "
                          "4 bits, not both; set one of them to False")
    return 8 if eight else 4 if four else None
