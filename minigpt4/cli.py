"""What the top-level scripts run: parse the arguments, load the config and make it read-only, run the stage's
recipe, and turn errors into exit codes.

Stages: `collab` (pretrain_collab.py: `recipes/pretrain_encoder.py`), `llm` (train_collm_mf_din.py,
train_binllm.py) and `eval` (eval.py), both `recipes/finetune_llm.py`.
Exit codes: 2 a configuration, data or prompt error, or an existing run directory (one clear message, printed
before any heavy work); 3 another process of a multi-process run failed; 4 the loss is not finite.
"""

import argparse
import os
import sys

from omegaconf import OmegaConf

import minigpt4  # noqa: F401  (fills the registry)
from minigpt4.config import ConfigError, load_config, reference_markdown
from minigpt4.data.splits import DataError
from minigpt4.prompting import PromptError
from minigpt4.recipes import finetune_llm, pretrain_encoder
from minigpt4.recipes.derived import pick_device  # noqa: F401  (importable from here as before)
from minigpt4.train import distributed as dist


def parse_args(description, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg-path", help="YAML config (see train_configs/)")
    parser.add_argument("--options", nargs="+", default=[],
                        help="overrides as key=value, e.g. run.init_lr=1e-3 model.ckpt=runs/x/checkpoint_best")
    parser.add_argument("--help-config", action="store_true",
                        help="print every config key with its default and meaning")
    args = parser.parse_args(argv)
    if args.help_config:
        print(reference_markdown(), end="")
        sys.exit(0)
    if not args.cfg_path:
        parser.error("--cfg-path is required")
    return args


def main(stage, description, argv=None):
    args = parse_args(description, argv)
    try:
        cfg = load_config(args.cfg_path, args.options)
        OmegaConf.set_readonly(cfg, True)  # what a run derives lives in recipes.derived.Derived, not in cfg
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
        if not dist.is_peer_failure(err):
            raise
        print(f"error: rank {dist.rank()}: another process of this run failed or stopped answering, so this one "
              f"stops too (its own log says why; collectives wait at most run.dist_timeout_minutes). "
              f"{str(err).splitlines()[0][:300]}", file=sys.stderr)
        os._exit(3)  # a clean shutdown would wait on the dead peer
    finally:
        dist.shutdown()


def script_main(stage, description):
    """Entry used by the top-level scripts; keeps them a few lines long."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(stage, description)
