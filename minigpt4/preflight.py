"""The checks run before a stage's recipe, torch and transformers are imported, so a typo costs about a second:
the dataset's directory and split files, a free run directory, and for the LLM stages the prompt file, BinLLM's
encoder and model.ckpt. Each stage names the checks it needs (`Stage.checks`, minigpt4/stages.py); `preflight`
runs them in that order. The recipes check again only what needs the data's contents or torch (minigpt4/
recipes/derived.py).
"""

import os
from pathlib import Path

from omegaconf import OmegaConf

from minigpt4 import registry
from minigpt4.config import dataset_cfg, dataset_dir, encoder_file, is_set, prompt_file, run_mode
from minigpt4.config.reference import read_by
from minigpt4.data import splits as data_splits
from minigpt4.errors import ConfigError, DataError
from minigpt4.llm.location import check_backbone as backbone_location
from minigpt4.prompting import model_prompt
from minigpt4.train.checkpoint import find_checkpoint
from minigpt4.train.run_dir import free_path


def needed_splits(cfg, stage):
    """The split files a stage reads: train, valid_full and test always (the id counts), plus the stage's splits."""
    names = stage.split_names(cfg.run)
    for split in names:
        if split not in data_splits.SPLITS:
            raise DataError(f"unknown split {split!r}; splits are {list(data_splits.SPLITS)}")
    return dict.fromkeys(["train", "valid_full", "test", *(s for s in names if s in data_splits.FILES)])


def stage1_command(cfg_path):
    """`python train_collm_mf_din.py --cfg-path train_configs/<prefix>_tallrec.yaml` for a config named
    `<prefix>_<method>.yaml` whose folder holds that stage-1 config; None otherwise."""
    path = Path(cfg_path)
    first = path.with_name(path.stem.split("_")[0] + "_tallrec.yaml")
    if not first.is_file() or first.resolve() == path.resolve():
        return None
    return f"python train_collm_mf_din.py --cfg-path {first}"


# Keys that name the one implementation of a kind: upstream YAMLs name it, any other name is an error (today's).
ONE_IMPLEMENTATION = {"run.task": ("task", "rec_pretrain"), "model.arch": ("model", "mini_gpt4rec_v2"),
                      "run.runner": ("runner", "rec_runner_base")}


def check_names(cfg, stage, cfg_path):
    """`run.task`, `model.arch`, `run.runner` (those the stage reads) name upstream's one task, model and loop."""
    for key, (kind, name) in ONE_IMPLEMENTATION.items():
        value = OmegaConf.select(cfg, key)
        if stage.name in read_by(key) and value != name:
            raise KeyError(f"no {kind} named {value!r} is registered (known: {name}); {key} names upstream's one "
                           f"{kind}, kept so that upstream YAMLs load")


def check_dataset(cfg, stage, cfg_path):
    name, ds = dataset_cfg(cfg)
    builder = registry.get("dataset", name)
    if builder.ensure is not data_splits.RecDataset.ensure:  # a dataset that writes itself on first use (synthetic)
        needed_splits(cfg, stage)
        return
    dataset_dir(name, ds)
    for split in needed_splits(cfg, stage):
        path = Path(ds.path) / data_splits.FILES[split]
        if not (path.is_file() or path.with_suffix(".parquet").is_file()):
            raise DataError(f"{path}: missing. Unzip the processed dataset there (docs/DATA.md), or generate "
                            f"synthetic data with `python -m minigpt4.data.synthetic --out {path.parent}`")


def check_run_dir(cfg, stage, cfg_path):
    """A new run must not write into an existing directory; a resumed one continues in its own."""
    run = cfg.run
    resuming = stage.resumes and run.resume_ckpt_path
    if run.job_id and not resuming and os.environ.get("RANK", "0") == "0":
        free_path(Path(run.output_dir) / run.job_id)


def check_prompt(cfg, stage, cfg_path):
    model_prompt(cfg.model, prompt_file(cfg.model))


def check_encoder(cfg, stage, cfg_path):
    """BinLLM's pretrained binary encoder (the recipe reads its codes)."""
    m = cfg.model
    if run_mode(cfg) == "codes" and m.rec_model == "hash" and is_set(m.rec_config.pretrained_path):
        encoder_file(m)


def check_checkpoint(cfg, stage, cfg_path):
    if cfg.model.ckpt:
        find_checkpoint(cfg.model.ckpt, writer=cfg_path and stage1_command(cfg_path))


def check_start(cfg, stage, cfg_path):
    """A stage-0 run that starts from given weights (CTRL's second stage: the aligned model) finds them."""
    if is_set(cfg.model.rec_config.pretrained_path):
        encoder_file(cfg.model)


def check_backbone(cfg, stage, cfg_path):
    """The language model the stage loads is there (CTRL's alignment writes its text view with it)."""
    backbone_location(cfg.model.llama_model)


def check_aligned_model(cfg, stage, cfg_path):
    """CTRL aligns the layer under a CTR model's output layer; DIN is the collaborative model that has one here."""
    if cfg.model.rec_model != "DIN":
        raise ConfigError(f"model.rec_model = {cfg.model.rec_model!r}: CTRL's alignment (align_ctrl.py) aligns a DIN "
                          "(the paper's collaborative CTR model): set model.rec_model: DIN, as train_configs/*_ctrl_"
                          "align.yaml do")


def check_ranked_run(cfg, stage, cfg_path):
    """rank.py ranks a finished run (run.rank_run): a stage-0 run's directory with rec_model.pth, or an LLM run's
    with config.yaml and its checkpoint_best/ (an eval run's: metrics.json, the checkpoint it scored)."""
    ranked = cfg.run.rank_run
    if not ranked:
        raise ConfigError("run.rank_run is empty: set it to the finished run directory to rank with, e.g. "
                          "run.rank_run=runs/ml100k/binllm")
    path = Path(ranked)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"run.rank_run = {ranked}: no run there (no config.yaml); train the run first, or point "
                          "run.rank_run at a finished run directory")
    if not any((path / f).exists() for f in ("rec_model.pth", "checkpoint_best", "metrics.json")):
        raise ConfigError(f"run.rank_run = {ranked}: the run has not finished (no rec_model.pth, checkpoint_best/ or "
                          "metrics.json); rank with it once it has")


CHECKS = {"names": check_names, "dataset": check_dataset, "run_dir": check_run_dir, "prompt": check_prompt,
          "encoder": check_encoder, "checkpoint": check_checkpoint, "start": check_start, "backbone": check_backbone,
          "aligned_model": check_aligned_model, "ranked_run": check_ranked_run}


def preflight(cfg, stage, cfg_path=None):
    """Run the checks `stage` (a `stages.Stage`) names, with the same messages the recipes would give later."""
    for name in stage.checks:
        CHECKS[name](cfg, stage, cfg_path)
