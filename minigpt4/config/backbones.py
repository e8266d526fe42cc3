"""Backbone profiles: backbone-specific settings (LoRA targets and layers, learning rates per method) live in one
file per backbone; a config reads them as `${backbone:KEY}` from the file its model.llama_model names."""

import re

import omegaconf
from omegaconf import OmegaConf

from minigpt4.config.paths import REPO_ROOT
from minigpt4.config.schema import EMBEDDED_LLM
from minigpt4.errors import ConfigError

BACKBONES_DIR = REPO_ROOT / "train_configs" / "backbones"
_OMEGACONF = tuple(int(x) for x in re.findall(r"\d+", omegaconf.__version__)[:2])


def backbone_profile(llama_model):
    """train_configs/backbones/<name>.yaml for a backbone named there (the embedded ones), else default.yaml
    (any Hugging Face directory or .gguf file)."""
    name = str(llama_model or EMBEDDED_LLM)
    own = BACKBONES_DIR / f"{name}.yaml"
    return own if "/" not in name and own.is_file() else BACKBONES_DIR / "default.yaml"


def _backbone_setting(key, _root_):
    path = backbone_profile(OmegaConf.select(_root_, "model.llama_model", default=None))
    value = OmegaConf.select(OmegaConf.load(path), key, default=None)
    if value is None:
        raise ConfigError(f"${{backbone:{key}}}: {path} has no key {key!r}; every file in {BACKBONES_DIR} must "
                          "define the keys the configs read (see smollm2.yaml)")
    return value


# OmegaConf 2.4 renamed register_new_resolver (2.1-2.3's register_resolver is a different, legacy API).
_register = OmegaConf.register_resolver if _OMEGACONF >= (2, 4) else OmegaConf.register_new_resolver
_register("backbone", _backbone_setting, replace=True)
