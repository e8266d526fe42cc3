"""Paths in a config: relative ones are found from the working directory or the repository, and a missing one is an
error naming the key that holds it."""

import os
from pathlib import Path

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
