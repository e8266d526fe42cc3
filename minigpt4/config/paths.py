"""Paths in a config: relative ones are found from the working directory or the repository, and a missing one is an
error naming the key that holds it."""

import os
from pathlib import Path

from minigpt4.config.schema import NOT_HAVE
from minigpt4.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(value):
    """Relative paths are tried against the working directory, then the repository root (for prompts/)."""
    p = Path(os.path.expanduser(str(value)))
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def require_path(where, value, how, is_dir=None):
    """Check that a configured path exists, with an error naming the key and how to create the file."""
    p = resolve_path(value)
    ok = p.is_dir() if is_dir else (p.is_file() if is_dir is False else p.exists())
    if not ok:
        raise ConfigError(f"{where} = {value!r}: no such {'directory' if is_dir else 'file'}. {how}")
    return p


# The paths every stage's checks and loaders name, each written once: the key, and how to create what is missing.
def is_set(value):
    """An optional path names a file: upstream writes `not_have` (or leaves it empty) for none."""
    return value not in ("", NOT_HAVE)


def prompt_file(model_cfg):
    return require_path("model.prompt_path", model_cfg.prompt_path, "Prompt files ship in prompts/.", is_dir=False)


def encoder_file(model_cfg):
    """`model.rec_config.pretrained_path`, the encoder state dict stage 0 wrote."""
    return require_path("model.rec_config.pretrained_path", model_cfg.rec_config.pretrained_path,
                        f"Create it with `python pretrain_collab.py` for rec_model {model_cfg.rec_model} (it writes "
                        "<run dir>/rec_model.pth).", is_dir=False)


def dataset_dir(name, ds):
    """`datasets.<name>.path`, the processed splits' directory."""
    return require_path(f"datasets.{name}.path", ds.path, "Unzip the processed dataset there (docs/DATA.md).",
                        is_dir=True)
