"""What the top-level scripts run: parse the arguments, load the config and make it read-only, run the stage's
recipe, and turn errors into exit codes.

Stages: the table in minigpt4/stages.py names each stage's scripts, recipe and checks.
Exit codes: 2 a configuration, data or prompt error, or an existing run directory (one clear message, printed
before any heavy work); 3 another process of a multi-process run failed; 4 the loss is not finite.

Fast errors: this module imports nothing heavy. `main` loads the config and runs the stage's checks
(minigpt4/preflight.py: the dataset's split files, the prompt, the checkpoint and encoder a run starts from, a free
run directory) before the recipes, torch and transformers are imported, so a typo costs about a second (the
registry imports a kind's components only when that kind is first looked up).
"""

import argparse
import importlib
import os
import sys

from omegaconf import OmegaConf

from minigpt4 import stages
from minigpt4.config import ConfigError, load_config, reference_markdown, reference_text
from minigpt4.errors import DataError, PromptError
from minigpt4.preflight import preflight


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


def main(stage, description, argv=None):
    """Run stage `stage` (a name in minigpt4/stages.py) with the arguments `argv`; returns the recipe's metrics."""
    asked = stages.get(stage)
    args = parse_args(description, argv, asked.name)
    dist = None
    try:
        cfg = load_config(args.cfg_path, args.options)
        OmegaConf.set_readonly(cfg, True)  # what a run derives lives in recipes.derived.Derived, not in cfg
        stage = asked.under(cfg.run)  # run.evaluate: the LLM stage scores model.ckpt, as eval.py does
        preflight(cfg, stage, args.cfg_path)
        recipe = importlib.import_module(stage.recipe)  # the recipes import torch: only now
        from minigpt4.train import distributed as dist

        if not args.verbose:  # transformers' bars for loading (and converting a GGUF file) are noise in a run's log
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

        return recipe.main(cfg, stage)
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
