"""Backbone profiles: shipped configs read LoRA layers and learning rates as ${backbone:KEY} from
train_configs/backbones/<llama_model>.yaml, so switching the backbone is one key."""

import re

import pytest
from omegaconf import OmegaConf

from minigpt4 import config
from minigpt4.config import BACKBONES_DIR, ConfigError, backbone_profile, compose, load_config

SHIPPED = sorted((config.REPO_ROOT / "train_configs").glob("*.yaml"))
READS = re.compile(r"\$\{backbone:([\w.]+)\}")


def _reads(path):
    """The ${backbone:KEY} keys a config reads, its layers (defaults:) included."""
    return set(READS.findall(OmegaConf.to_yaml(compose(path))))


def test_every_profile_defines_every_key_the_configs_read():
    keys = {k for f in SHIPPED for k in _reads(f)}
    assert {"target_modules", "layers_to_transform", "init_lr.tallrec", "init_lr.binllm"} <= keys
    for profile in BACKBONES_DIR.glob("*.yaml"):
        loaded = OmegaConf.load(profile)
        missing = [k for k in keys if OmegaConf.select(loaded, k, default=None) is None]
        assert not missing, f"{profile.name} lacks {missing}"


def test_profile_follows_llama_model():
    assert backbone_profile("smollm2") == BACKBONES_DIR / "smollm2.yaml"
    assert backbone_profile("gemma3-270m") == BACKBONES_DIR / "gemma3-270m.yaml"
    assert backbone_profile("/models/vicuna-7b") == BACKBONES_DIR / "default.yaml"
    assert backbone_profile("weights/model.gguf") == BACKBONES_DIR / "default.yaml"
    assert backbone_profile(None) == BACKBONES_DIR / "smollm2.yaml"  # the schema's default backbone


def test_one_key_switches_every_backbone_setting(tmp_path, monkeypatch):
    (tmp_path / "smollm2.yaml").write_text((BACKBONES_DIR / "smollm2.yaml").read_text())
    (tmp_path / "other.yaml").write_text("target_modules: [q_proj, k_proj, v_proj]\nlayers_to_transform: [-2, -1]\n"
                                         "init_lr: {tallrec: 3e-4, binllm: 5e-4, collm: 6e-4, softprompt: 7e-4, "
                                         "personprompt: 8e-4}\n")
    monkeypatch.setattr(config.backbones, "BACKBONES_DIR", tmp_path)  # where the resolver reads it
    cfg = load_config(config.REPO_ROOT / "train_configs/ml1m_binllm.yaml", ["model.llama_model=other"])
    assert cfg.run.init_lr == 5e-4
    assert list(cfg.model.lora_config.layers_to_transform) == [-2, -1]
    assert list(cfg.model.lora_config.target_modules) == ["q_proj", "k_proj", "v_proj"]
    # an explicit option still wins over the profile
    cfg = load_config(config.REPO_ROOT / "train_configs/ml1m_binllm.yaml",
                      ["model.llama_model=other", "run.init_lr=1e-5"])
    assert cfg.run.init_lr == 1e-5
    smol = load_config(config.REPO_ROOT / "train_configs/ml1m_tallrec.yaml")
    assert smol.run.init_lr == 2e-3 and len(smol.model.lora_config.layers_to_transform) == 8


@pytest.mark.slow
def test_shipped_configs_differ_between_backbones_only_in_profile_keys():
    for f in SHIPPED:
        if not _reads(f):
            continue
        smol = OmegaConf.to_container(load_config(f))
        gemma = OmegaConf.to_container(load_config(f, ["model.llama_model=gemma3-270m"]))
        path = OmegaConf.to_container(load_config(f, ["model.llama_model=/models/vicuna"]))
        assert path["model"]["lora_config"]["layers_to_transform"] == []  # the paper's LoRA: every layer
        for other in (gemma, path):
            other["model"]["llama_model"] = "smollm2"
            other["model"]["lora_config"]["layers_to_transform"] = smol["model"]["lora_config"]["layers_to_transform"]
            other["run"]["init_lr"] = smol["run"]["init_lr"]
            assert other == smol, f.name


def test_missing_profile_key_names_file_and_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {llama_model: gemma3-270m}\ndatasets: {movie_ood: {path: data/ml-1m}}\n"
                   "run: {init_lr: '${backbone:init_lr.nosuch}'}\n")
    with pytest.raises(ConfigError, match=r"c.yaml: \$\{backbone:init_lr.nosuch\}: .*gemma3-270m.yaml has no key"):
        load_config(cfg)
