"""Configuration: YAML + `--options` overrides, checked against one typed schema before any heavy work.

- `schema`: the dataclasses (`Config` and one per section): every key, its type, default and meaning.
- `load`: `compose` (YAML layering through `defaults:`) and `load_config` (merge into the schema, check, resolve).
- `backbones`: the `${backbone:KEY}` resolver and the per-backbone profile files it reads.
- `paths`, `derived`, `reference`: path helpers, values read off a loaded config, the generated docs/CONFIG.md.
"""

from minigpt4.config.backbones import BACKBONES_DIR, backbone_profile
from minigpt4.config.derived import accumulation_steps, dataset_cfg, load_in_bits, run_mode
from minigpt4.config.load import INCLUDE_KEY, compose, load_config, parse_options
from minigpt4.config.paths import REPO_ROOT, dataset_dir, encoder_file, is_set, prompt_file, require_path, resolve_path
from minigpt4.config.reference import reference_markdown, reference_text
from minigpt4.config.schema import (
    EMBEDDED_LLM,
    NOT_HAVE,
    BuildInfo,
    Config,
    DatasetConfig,
    LoraConfig,
    ModelConfig,
    RecConfig,
    RunConfig,
)
from minigpt4.errors import ConfigError

__all__ = ["BACKBONES_DIR", "EMBEDDED_LLM", "INCLUDE_KEY", "NOT_HAVE", "REPO_ROOT", "BuildInfo", "Config",
           "ConfigError", "DatasetConfig", "LoraConfig", "ModelConfig", "RecConfig", "RunConfig", "accumulation_steps",
           "backbone_profile", "compose", "dataset_cfg", "dataset_dir", "encoder_file", "is_set", "load_config",
           "load_in_bits", "parse_options", "prompt_file", "reference_markdown", "reference_text", "require_path",
           "resolve_path", "run_mode"]
