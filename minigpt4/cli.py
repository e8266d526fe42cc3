"""What the top-level scripts run: parse the arguments, load the config and make it read-only, run the stage's
recipe, and turn errors into exit codes.

Stages: `collab` (pretrain_collab.py: `recipes/pretrain_encoder.py`), `llm` (train_collm_mf_din.py,
train_binllm.py) and `eval` (eval.py), both `recipes/finetune_llm.py`.
Exit codes: 2 a configuration, data or prompt error, or an existing run directory (one clear message, printed
before any heavy work); 3 another process of a multi-process run failed; 4 the loss is not finite.

Fast errors: this module imports nothing heavy. `main` loads the config and runs `preflight` (the dataset's split
files, the prompt, the checkpoint and encoder a run starts from, a free run directory) before the recipes, torch and
transformers are imported, so a typo costs about a second (the registry imports a kind's components only when
that kind is first looked up).
"""

import argparse
import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from minigpt4 import registry
from minigpt4.config import (
    NOT_HAVE,
    ConfigError,
    dataset_cfg,
    load_config,
    reference_markdown,
    reference_text,
    require_path,
    run_mode,
)
from minigpt4.data import splits as data_splits
from minigpt4.errors import DataError, PromptError
from minigpt4.prompting import load_prompt
from minigpt4.train.checkpoint import find_checkpoint
from minigpt4.train.run_dir import free_path


def __getattr__(name):
    if name == "pick_device":  # importable from here as before, without importing torch with this module
        from minigpt4.recipes.derived import pick_device

        return pick_device
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_args(description, argv=None, stage=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg-path", help="YAML config (see train_configs/)")
    parser.add_argument("--options", nargs="+", default=[],
                        help="overrides as key=value, e.g. run.init_lr=1e-3 model.ckpt=runs/x/checkpoint_best")
    parser.add_argument("--help-config", nargs="?", const=True, metavar="KEY",
                        help="print the config keys this script reads, with their default and the first sentence "
                             "of their meaning, or one KEY (e.g. run.init_lr) in full")
    parser.add_argument("--help-config-md", action="store_true", help="the same as Markdown (docs/CONFIG.md)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show third-party progress bars (loading and converting the backbone's weights)")
    args = parser.parse_args(argv)
    if args.help_config_md:
        print(reference_markdown(), end="")
        sys.exit(0)
    if args.help_config:
        print(reference_text(None if args.help_config is True else args.help_config, stage=stage), end="")
        sys.exit(0)
    if not args.cfg_path:
        parser.error("--cfg-path is required")
    return args


def _needed_splits(cfg, stage):
    """The split files a stage reads: train, valid_full and test always (the id counts), plus the named splits."""
    run = cfg.run
    if stage == "collab":
        names = ["train", "valid_full", "test", "test_warm", "test_cold"]
    elif stage == "eval" or run.evaluate:
        names = [*run.test_splits]
    else:
        names = [*run.train_splits, *run.valid_splits, *run.test_splits]
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


def preflight(cfg, stage, cfg_path=None):
    """Checks that need neither torch nor the data's contents, run before the recipes are imported: the dataset's
    directory and split files, the run directory, and for the LLM stages the prompt file, BinLLM's encoder and
    model.ckpt. The recipes check all of this again, and more, where they use it; this only moves the common
    mistakes ahead of several seconds of imports, with the same messages."""
    run, m = cfg.run, cfg.model
    name, ds = dataset_cfg(cfg)
    builder = registry.get("dataset", name)
    if builder.ensure is data_splits.RecDataset.ensure:  # not a dataset that writes itself on first use (synthetic)
        require_path(f"datasets.{name}.path", ds.path, "Unzip the processed dataset there (docs/DATA.md).",
                     is_dir=True)
        for split in _needed_splits(cfg, stage):
            path = Path(ds.path) / data_splits.FILES[split]
            if not (path.is_file() or path.with_suffix(".parquet").is_file()):
                raise DataError(f"{path}: missing. Unzip the processed dataset there (docs/DATA.md), or generate "
                                f"synthetic data with `python -m minigpt4.data.synthetic --out {path.parent}`")
    else:
        _needed_splits(cfg, stage)
    evaluate = stage == "eval" or run.evaluate
    resuming = stage != "collab" and run.resume_ckpt_path and not evaluate
    if run.job_id and not resuming and os.environ.get("RANK", "0") == "0":
        free_path(Path(run.output_dir) / run.job_id)
    if stage == "collab":
        return
    prompt_file = require_path("model.prompt_path", m.prompt_path, "Prompt files ship in prompts/.", is_dir=False)
    load_prompt(prompt_file, m.prompt_template)
    if run_mode(cfg) == "codes" and m.rec_model == "hash" and m.rec_config.pretrained_path not in ("", NOT_HAVE):
        require_path("model.rec_config.pretrained_path", m.rec_config.pretrained_path,
                     "Create it with pretrain_collab.py (it writes <run dir>/rec_model.pth).", is_dir=False)
    if m.ckpt:
        find_checkpoint(m.ckpt, writer=cfg_path and stage1_command(cfg_path))


def main(stage, description, argv=None):
    args = parse_args(description, argv, stage)
    dist = None
    try:
        cfg = load_config(args.cfg_path, args.options)
        OmegaConf.set_readonly(cfg, True)  # what a run derives lives in recipes.derived.Derived, not in cfg
        preflight(cfg, stage, args.cfg_path)
        from minigpt4.recipes import finetune_llm, pretrain_encoder
        from minigpt4.train import distributed as dist

        if not args.verbose:  # transformers' bars for loading (and converting a GGUF file) are noise in a run's log
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

        if stage == "collab":
            return pretrain_encoder.main(cfg)
        return finetune_llm.main(cfg, stage)
    except (ConfigError, DataError, PromptError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(4)
    except RuntimeError as err:
        if dist is None or not dist.is_peer_failure(err):
            raise
        print(f"error: rank {dist.rank()}: another process of this run failed or stopped answering, so this one "
              f"stops too (its own log says why; collectives wait at most run.dist_timeout_minutes). "
              f"{str(err).splitlines()[0][:300]}", file=sys.stderr)
        os._exit(3)  # a clean shutdown would wait on the dead peer
    finally:
        if dist is not None:
            dist.shutdown()


def script_main(stage, description):
    """Entry used by the top-level scripts; keeps them a few lines long."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(stage, description)
