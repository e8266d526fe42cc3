"""What the top-level scripts run: parse arguments, validate the config, then one stage.

Stages: `collab` (pretrain_collab.py), `llm` (train_collm_mf_din.py, train_binllm.py), `eval` (eval.py).
Configuration and data errors print one clear message and exit with status 2, before any heavy work.
"""

import argparse
import json
import os
import random
import sys

import numpy as np
import torch

import minigpt4  # noqa: F401  (fills the registry)
from minigpt4 import registry
from minigpt4.config import ConfigError, load_config, reference_markdown
from minigpt4.data.splits import DataError
from minigpt4.precision import resolve_precision
from minigpt4.prompting import PromptError
from minigpt4.train import distributed as dist
from minigpt4.train.run_dir import RunDir


def parse_args(description, argv=None):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg-path", help="YAML config (see train_configs/)")
    parser.add_argument("--options", nargs="+", default=[],
                        help="overrides as key=value, e.g. run.init_lr=1e-3 model.ckpt=runs/x/checkpoint_best")
    parser.add_argument("--help-config", action="store_true", help="print every config key with its default and meaning")
    args = parser.parse_args(argv)
    if args.help_config:
        print(reference_markdown(), end="")
        sys.exit(0)
    if not args.cfg_path:
        parser.error("--cfg-path is required")
    return args


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(cfg, local_rank):
    if cfg.run.device.startswith("cuda"):
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            # fp32 products in TF32 unless strict fp32 is asked for (bf16 runs are unaffected)
            torch.set_float32_matmul_precision("high" if cfg.run.tf32 else "highest")
            return torch.device("cuda", local_rank)
        print("warning: run.device is cuda but no GPU is visible; running on the CPU")
    return torch.device("cpu")


def main(stage, description, argv=None):
    args = parse_args(description, argv)
    try:
        cfg = load_config(args.cfg_path, args.options)
        if stage == "eval":
            cfg.run.evaluate = True
        _, _, local_rank = dist.init(cfg.run.device, cfg.run.dist_timeout_minutes)
        seed_everything(cfg.run.seed)  # the same on every rank: identical initial weights, also when sharded
        task = registry.get("task", cfg.run.task)(cfg)
        task.set_id_counts()
        if stage == "collab":
            return run_collab(cfg, task)
        return run_llm(cfg, task, pick_device(cfg, local_rank))
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


def run_collab(cfg, task):
    from minigpt4.encoders.factory import encoder_class
    from minigpt4.train.collab import pretrain

    encoder_class(cfg.model)  # an unknown rec_model fails before the run directory exists
    frames = {s: task.rows(s) for s in ("train", "valid_full", "test", "test_warm", "test_cold")}
    run_dir = RunDir(cfg, dist.is_main())
    print(f"run directory: {run_dir.path}; {cfg.model.rec_model} on {len(frames['train'])} train rows, "
          f"{cfg.model.user_num} users / {cfg.model.item_num} items")
    _, results = pretrain(cfg, frames, run_dir)
    run_dir.write_json("metrics.json", results)
    for split in ("valid_full", "test", "test_warm", "test_cold"):
        m = results[split]
        print(f"{split}: auc {m['auc']:.4f} uauc {m['uauc']:.4f} ({m['rows']} rows)")
    print(f"encoder state dict: {run_dir.path / 'rec_model.pth'}")
    run_dir.close()
    return results


def run_llm(cfg, task, device):
    from minigpt4.batching import decode
    from minigpt4.train.checkpoint import has_collab, load_checkpoint, lora_layout
    from minigpt4.encoders.factory import attach_graph

    evaluate = cfg.run.evaluate
    resume_step = None
    if cfg.run.resume_ckpt_path and not evaluate:  # continue that run, in its directory
        from minigpt4.train import resume

        point = resume.find(cfg.run.resume_ckpt_path) if dist.is_main() else None
        resume_step = dist.broadcast_object(json.loads((point / "progress.json").read_text())["step"] if point else None)
    else:
        RunDir.free_path(cfg)
    prompt = task.check_llm_paths(evaluate)
    codes = task.code_table()
    if evaluate and cfg.model.ckpt:
        # Evaluation takes the adapter's shape from the checkpoint, so eval configs need not repeat it.
        from minigpt4.train.checkpoint import adapter_lora_config, find_checkpoint

        cfg.model.lora_config.update(adapter_lora_config(find_checkpoint(cfg.model.ckpt)))
    precision = resolve_precision(cfg.run, device)
    model_cls = registry.get("model", cfg.model.arch)
    mode, rc = task.llm_mode, cfg.model.rec_config
    model = model_cls.from_config(cfg.model, dtype=precision.dtype, slots=mode == "slots")
    if model.collab is not None and model.collab.encoder is not None:
        attach_graph(model.collab.encoder, task.rows("train"))  # LightGCN propagates over the train graph
    model = model.to(device)
    meta = {"llama_model": cfg.model.llama_model, "backbone": model.backbone_signature(), "mode": mode,
            "score_type": cfg.model.score_type, "prompt_path": cfg.model.prompt_path, "lora": lora_layout(model),
            "add_bos": cfg.model.add_bos}
    if codes is not None:
        meta.update(code_mode=rc.code_mode, code_bits=codes.bits_per_code)
    if model.collab is not None:
        meta.update(rec_model=cfg.model.rec_model, proj_token_num=cfg.model.proj_token_num,
                    slot_layout=cfg.model.slot_layout)
    if cfg.model.ckpt:
        # backbone: the architecture, wherever its files lie. mode and prompt_path differ legitimately between
        # stage 1 (text) and stage 2 (codes or slots); the score type may not. The LoRA layout is compared with
        # the model's by load_checkpoint.
        expect = {k: meta[k] for k in ("backbone", "score_type", "add_bos")}
        if codes is not None:  # checked only against a checkpoint that had codes (stage 1 has none)
            expect.update(code_mode=meta["code_mode"], code_bits=meta["code_bits"])
        if model.collab is not None and has_collab(cfg.model.ckpt):
            expect.update({k: meta[k] for k in ("rec_model", "proj_token_num")})
            if cfg.model.proj_token_num > 1:  # with one position per slot both layouts are the same prompt
                expect.update(slot_layout=meta["slot_layout"])
        # checkpoints older than these keys: every prompt began with BOS, and k > 1 slots were contiguous
        loaded = load_checkpoint(model, cfg.model.ckpt, expect, before={"add_bos": True, "slot_layout": "contiguous"})
        print(f"loaded {cfg.model.ckpt} (trained as {loaded.get('mode')}, epoch {loaded.get('epoch')})")
        if evaluate and model.collab is not None and not has_collab(cfg.model.ckpt):
            raise ConfigError(f"model.ckpt = {cfg.model.ckpt!r} has no trained slot weights (collab_tokens.safetensors): "
                              "evaluate the checkpoint of the CoLLM / prompt-tuning stage, not of stage 1")
    history_len = model.collab.history_len if model.collab is not None else 0
    names = list(cfg.run.test_splits) if evaluate else list(cfg.run.train_splits) + list(cfg.run.valid_splits) + list(cfg.run.test_splits)
    splits = task.token_splits(model.tokenizer, prompt, names, codes, history_len)
    run_dir = RunDir(cfg, dist.is_main(), resume_step)  # only once every input has been checked
    dist.barrier()
    example = splits[names[0]]
    print(f"run directory: {run_dir.path}; mode {mode}; backbone {cfg.model.llama_model}; device {device}"
          + (f"; slots filled by {cfg.model.rec_model}" if mode == "slots" else ""))
    print(precision.describe())
    print(f"example prompt ({example.lengths[0]} tokens): {decode(model.tokenizer, example.input_ids[0])}")
    runner = registry.get("runner", cfg.run.runner)(cfg, model, splits, run_dir, device, meta, precision)
    results = {}
    trains = any(p.requires_grad for p in model.parameters())
    if not evaluate and trains:
        results["train"] = runner.train()
        results.update(runner.test(cfg.run.test_splits))
    else:
        results.update(runner.test(cfg.run.test_splits, reload_best=False))
    results["precision"] = {"dtype": precision.name, "why": precision.reason, **runner.compiled_info}
    results["warm_cold_rules"] = task.warm_cold_rules()  # which rows test_warm / test_cold hold
    if {"test_warm", "test_cold"} & set(cfg.run.test_splits):
        print(f"test_warm / test_cold rules: {results['warm_cold_rules']}")
    run_dir.write_json("metrics.json", results)
    print(json.dumps({s: {k: round(v, 4) for k, v in m.items() if k in ("auc", "uauc")}
                      for s, m in results.items() if s in cfg.run.test_splits}))
    run_dir.close()
    return results


def script_main(stage, description):
    """Entry used by the top-level scripts; keeps them a few lines long."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(stage, description)
