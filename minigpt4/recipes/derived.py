"""What a run derives from its config and its data, resolved once and passed explicitly: `Derived`.

The config (`load_config` + `--options`) is read-only for the whole run. The values the upstream wrote into it
while running (user/item counts, the evaluate flag, a timestamp job id, the adapter shape of the checkpoint
being evaluated) are fields of a frozen `Derived` instead, built by `derive_collab` / `derive_llm`, which also
check every input path before anything heavy is loaded. The run directory's `config.yaml` is
`saved_config(cfg, derived)`: a merged copy that carries those values, so it loads and reproduces the run.
"""

import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from minigpt4 import registry
from minigpt4.config import ConfigError, accumulation_steps, encoder_file, is_set, prompt_file, run_mode
from minigpt4.encoders.factory import encoder_class, load_pretrained_encoder
from minigpt4.llm.collab_tokens import PROMPT_TABLES, is_slot_model
from minigpt4.llm.location import check_backbone
from minigpt4.prompting import model_prompt, uses_ids
from minigpt4.text_codes import CodeTable
from minigpt4.train import distributed as dist
from minigpt4.train import resume
from minigpt4.train.checkpoint import adapter_lora_config, find_checkpoint
from minigpt4.train.run_dir import free_path


@dataclass(frozen=True)
class Derived:
    user_num: int  # max uid + 1 over train / valid / test, ids in histories included (upstream rule)
    item_num: int  # max iid + 1, likewise
    job_id: str  # run.job_id, or the start time (YYYYmmddHHMMSS) when it is empty
    run_path: Path  # the run directory: {run.output_dir}/{job_id}, or the run being resumed
    evaluate: bool = False  # eval.py or run.evaluate: score model.ckpt on run.test_splits, train nothing
    resume_step: int = None  # the step a resumed run continues from (run.resume_ckpt_path); None: a new run
    mode: str = None  # LLM stages: text (titles only), slots (CoLLM vectors) or codes (BinLLM code strings)
    prompt: str = None  # the prompt template read from model.prompt_path
    codes: CodeTable = None  # BinLLM: the user/item codes of the pretrained binary encoder (codes.bits_per_code)
    lora: DictConfig = None  # the LoRA the model gets: model.lora_config, or for eval the checkpoint's shape
    accum: int = None  # micro-batches per optimizer step (run.global_batch_size / run.accum_grad_iters)

    @property
    def counts(self):
        return self.user_num, self.item_num


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(cfg, local_rank):
    asked = cfg.run.device
    if asked == "auto" or asked.startswith("cuda"):
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            # fp32 products in TF32 unless strict fp32 is asked for (bf16 runs are unaffected)
            torch.set_float32_matmul_precision("high" if cfg.run.tf32 else "highest")
            return torch.device("cuda", local_rank)
        if asked != "auto":
            print("warning: run.device is cuda but no GPU is visible; running on the CPU")
    return torch.device("cpu")


def _new_run(cfg):
    """(job_id, run directory) of a new run; an error if that directory exists (checked before heavy work)."""
    job_id = cfg.run.job_id or time.strftime("%Y%m%d%H%M%S")
    return job_id, free_path(Path(cfg.run.output_dir) / job_id)


def derive_collab(cfg, task, resume_step=None):
    """Stage 0 and CTRL's alignment: the id counts, then the encoder name and the run directory checked.
    resume_step: the run continues `run.resume_ckpt_path` (its directory) from that step instead."""
    user_num, item_num = task.id_counts()
    encoder_class(cfg.model)  # an unknown rec_model fails before the run directory exists
    if resume_step is not None:
        return Derived(user_num, item_num, cfg.run.job_id, Path(cfg.run.resume_ckpt_path), resume_step=resume_step)
    job_id, path = _new_run(cfg)
    return Derived(user_num, item_num, job_id, path)


def derive_llm(cfg, stage, task, new_run=True):
    """Everything an LLM stage derives, every input it needs checked, in this order: data, run directory,
    prompt / backbone / mode, encoder codes, checkpoint. new_run=False: no run directory (Recommender.from_run
    scores with a finished run's model); `run_path` is then None."""
    evaluate = not stage.trains  # eval.py, or an LLM stage under run.evaluate (Stage.under)
    user_num, item_num = task.id_counts()
    job_id, resume_step = cfg.run.job_id, None
    if not new_run:
        path = None
    elif cfg.run.resume_ckpt_path and not evaluate:  # continue that run, in its directory
        point = resume.find(cfg.run.resume_ckpt_path) if dist.is_main() else None
        step = resume.read_progress(point).step if point else None
        resume_step = dist.broadcast_object(step)
        path = Path(cfg.run.resume_ckpt_path)
    else:
        job_id, path = _new_run(cfg)
    prompt, mode = check_llm_inputs(cfg, evaluate)
    codes = code_table(cfg, mode, (user_num, item_num))
    lora = cfg.model.lora_config
    if evaluate and cfg.model.ckpt:
        # Evaluation takes the adapter's shape from the checkpoint, so eval configs need not repeat it.
        lora = OmegaConf.merge(lora, adapter_lora_config(find_checkpoint(cfg.model.ckpt)))
    accum = None if evaluate else accumulation_steps(cfg.run, dist.world_size())
    return Derived(user_num, item_num, job_id, path, evaluate, resume_step, mode, prompt, codes, lora, accum)


def check_llm_inputs(cfg, evaluate):
    """(prompt, mode): fail before any heavy work when a file the LLM stage needs is missing or the prompt does not
    fit run.mode. The mode: `codes` for run.mode v3; `slots` when a v2 prompt has <UserID>/<TargetItemID>, else
    `text`. The paths are checked by the same functions as minigpt4/preflight.py's (a recipe may be run without
    the cli: Recommender.from_run); what needs torch or the encoders' names is checked here only."""
    m = cfg.model
    check_backbone(m.llama_model)
    prompt = model_prompt(m, prompt_file(m))
    mode = run_mode(cfg)
    if mode == "codes":
        if not uses_ids(prompt):
            raise ConfigError(f"run.mode={cfg.run.mode} writes codes into <UserID>/<TargetItemID>, but "
                              f"model.prompt_path = {m.prompt_path} has neither; use prompts/collm_movie.txt")
        if m.rec_model != "hash":
            raise ConfigError(f"run.mode={cfg.run.mode} (BinLLM codes) needs model.rec_model: hash, "
                              f"got {m.rec_model!r}")
        if not is_set(m.rec_config.pretrained_path):
            raise ConfigError("BinLLM codes need a binary encoder: run `python pretrain_collab.py --cfg-path "
                              "train_configs/<dataset>_binmf.yaml` and set model.rec_config.pretrained_path to "
                              "the rec_model.pth it writes")
        encoder_file(m)
    elif uses_ids(prompt):
        mode = "slots"
        if not is_slot_model(m.rec_model):
            raise ConfigError(f"model.prompt_path = {m.prompt_path} has <UserID>/<TargetItemID> slots and run.mode="
                              f"{cfg.run.mode} fills them with vectors (CoLLM), but model.rec_model = "
                              f"{m.rec_model!r} gives none: use run.mode v3 for BinLLM codes (rec_model hash), or "
                              f"a slot model: {', '.join(n for n in registry.names('rec_model') if n != 'hash')}, "
                              f"{', '.join(PROMPT_TABLES)}")
        if m.rec_model not in PROMPT_TABLES and is_set(m.rec_config.pretrained_path):
            encoder_file(m)
    if m.ckpt:
        find_checkpoint(m.ckpt)
    elif evaluate:
        print("warning: model.ckpt is empty: evaluating the backbone without any trained adapter")
    return prompt, mode


def code_table(cfg, mode, counts):
    """BinLLM codes from the pretrained binary encoder, computed once in fp32; None outside the codes mode."""
    if mode != "codes":
        return None
    encoder = load_pretrained_encoder(cfg.model, counts)
    # every rank loads and checks the encoder (same errors everywhere); rank 0's bits are used by all
    user_bits, item_bits = dist.broadcast_object(encoder.code_bits())
    return CodeTable(user_bits, item_bits, mode=cfg.model.rec_config.code_mode)


def saved_config(cfg, d):
    """The config a run directory keeps: `cfg` with the derived values merged in (a copy: `cfg` is read-only).
    Loaded again (`--cfg-path <run dir>/config.yaml`) it reproduces the run, or resumes it."""
    counts = {"user_num": d.user_num, "item_num": d.item_num}
    model = {**counts, "rec_config": counts}
    if d.lora is not None:
        model["lora_config"] = d.lora
    run = {"job_id": d.job_id, **({"evaluate": True} if d.evaluate else {})}
    return OmegaConf.merge(cfg, {"model": model, "run": run})
