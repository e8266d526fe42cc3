"""Upstream (CoLLM / BinLLM) `checkpoint_best.pth` files, mapped to this framework's checkpoint contents.

Upstream's runner saves `torch.save({"model": state, "optimizer", "config": cfg.to_dict(), "scaler", "epoch"})`,
where `state` is the model's state dict less the parameters that did not require grad, so every buffer stays
(spec §4.6, CoLLM's `runner_base.py` `_save_checkpoint`):
- LoRA: BinLLM's `llama_model.base_model.model.<module>.lora_{A,B}.default.weight`; CoLLM's
  `llama_model.<module>...`, and the whole LLM again under the alias `llama_model_lora.base_model.model.*` (its
  frozen weights are skipped here; its LoRA tensors are the same ones);
- CoLLM's mapping MLP `llama_proj.{0,2}.*` (here `proj.{0,2}.*`), or the soft-prompt / PersonPrompt one-hot
  Linear `llama_proj.weight` [H * k, rows] (here the table, its transpose);
- `rec_encoder.*` when the encoder was trained (`freeze_rec: False`). A frozen encoder's buffers are saved too, but
  upstream reloads a frozen encoder from `rec_config.pretrained_path` after loading, as this framework does.

Upstream always scored the Yes logit (`ans_type: v2`) after a BOS token. The optimizer and scaler states are not
read: a run that continues from such a file starts a new optimizer, as it does from a stage-1 adapter.
"""

import pickle
import re
from dataclasses import dataclass
from pathlib import Path

from minigpt4.config import ConfigError, resolve_path
from minigpt4.prompting import load_prompt

_LORA = re.compile(r"^(?:llama_model_lora\.base_model\.model\.|llama_model\.base_model\.model\.|llama_model\.)"
                   r"(?P<module>.+)\.lora_(?P<ab>[AB])\.default\.weight$")
_LAYER = re.compile(r"\.layers\.(\d+)\.")
# upstream prompt files that neither repository ships, and the file here with their intended wording
# (docs/DIFFERENCES.md): CoLLM's slot prompt, or TALLRec's text prompt where the stage has no slots
PROMPT_STAND_INS = {
    "rec_alignment.txt": {"slots": "collm_movie.txt", "text": "tallrec_movie.txt"},
    "rec_alignment_ml_dcn.txt": {"slots": "collm_movie.txt"},
    "rec_alignment_amazon.txt": {"slots": "collm_amazon.txt", "text": "tallrec_amazon.txt"},
    "rec_alignment_amazon_dcn.txt": {"slots": "collm_amazon.txt"},
    "softprompt.txt": {"slots": "softprompt_movie.txt"},
}
TABLES = ("soft_prompt", "personlized_prompt", "personalized_prompt")


@dataclass
class Mapped:
    """What an upstream file holds, under this framework's names."""

    adapter: dict  # peft's saved names (`base_model.model.<module>.lora_A.weight`) -> tensor
    lora: dict  # r, alpha, dropout, target_modules of the upstream config; None without LoRA tensors
    collab: dict  # CollabTokens' state dict names -> tensor
    meta: dict  # recommender.json
    skipped: int  # frozen backbone weights and buffers left out


def read(path, where="model.ckpt"):
    """The saved dict, loaded with `weights_only=True` (tensors and plain containers only: nothing in the file can
    run code) and memory-mapped, so a CoLLM file's frozen 7B copy is never read into memory."""
    import torch

    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # torch's pre-1.6 file format
    except pickle.UnpicklingError as err:
        raise ConfigError(
            f"{where} = {str(path)!r}: refused. It holds pickled Python objects besides tensors and plain containers "
            f"({str(err).strip().splitlines()[0][:200]}), and unpickling them could run code; only checkpoints "
            "of upstream's runner (state dict, optimizer, config, scaler, epoch) are read") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ConfigError(f"{where} = {str(path)!r} is not a torch checkpoint file ({str(err).splitlines()[0]}); "
                          "give upstream's checkpoint_best.pth or a checkpoint directory") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise ConfigError(f"{where} = {str(path)!r}: not an upstream checkpoint (expected a dict with 'model', the "
                          f"state dict, and 'config'; got {sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt)})")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt["config"].get("model"), dict):
        raise ConfigError(f"{where} = {str(path)!r} carries no upstream config (its 'config' with a 'model' "
                          "section), which says how it was trained; it cannot be checked against this run")
    return ckpt


def _lora_settings(path, lora_keys, lora_cfg):
    """r, alpha, dropout and targets from the upstream config, cross-checked with the tensors themselves."""
    modules = {m.rsplit(".", 1)[-1] for m, _ in lora_keys}
    ranks = {t.shape[0] for (m, ab), t in lora_keys.items() if ab == "A"}
    r, targets = lora_cfg.get("r"), lora_cfg.get("target_modules")
    if r is None or targets is None:
        raise ConfigError(f"model.ckpt = {str(path)!r}: its config's model.lora_config lacks r or target_modules; "
                          "it cannot be checked against this run")
    targets = sorted([targets] if isinstance(targets, str) else targets)
    if ranks != {int(r)} or modules != set(targets):
        raise ConfigError(f"model.ckpt = {str(path)!r} is inconsistent: its config says model.lora_config.r={r}, "
                          f"target_modules={targets}, but its LoRA tensors have rank {sorted(ranks)} on "
                          f"{sorted(modules)}")
    return {"r": int(r), "alpha": int(lora_cfg.get("alpha", 16)), "dropout": float(lora_cfg.get("dropout", 0.05)),
            "target_modules": targets}


def mapped(path, ckpt):
    """Sort the upstream state dict into adapter, slot and skipped tensors; refuse keys of no known kind."""
    model_cfg, run_cfg = ckpt["config"]["model"], ckpt["config"].get("run") or {}
    lora_keys, collab, unknown, skipped = {}, {}, [], 0
    rec_model = model_cfg.get("rec_model", "MF")
    encoder_trained = not model_cfg.get("freeze_rec", True)
    for key, tensor in ckpt["model"].items():
        hit = _LORA.match(key)
        if hit:
            seen = lora_keys.setdefault((hit["module"], hit["ab"]), tensor)
            if seen is not tensor and not _same(seen, tensor):  # CoLLM's alias holds the same tensors
                raise ConfigError(f"model.ckpt = {str(path)!r}: two different tensors for the LoRA weight {key}")
        elif key.startswith(("llama_model.", "llama_model_lora.")):
            skipped += 1  # the frozen backbone (CoLLM's alias) and its buffers (rotary inv_freq)
        elif key.startswith("llama_proj."):
            name = key.removeprefix("llama_proj.")
            if name == "weight" and rec_model in TABLES:
                collab["table.weight"] = tensor.T.contiguous()  # one-hot Linear [H * k, rows] -> table [rows, H * k]
            elif re.fullmatch(r"[02]\.(weight|bias)", name):
                collab[f"proj.{name}"] = tensor
            else:
                unknown.append(key)
        elif key.startswith("rec_encoder."):
            if encoder_trained:
                collab["encoder." + key.removeprefix("rec_encoder.")] = tensor
            else:
                skipped += 1  # reloaded from rec_config.pretrained_path, upstream and here
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"model.ckpt = {str(path)!r} holds {len(unknown)} tensors of no known upstream module: "
                          f"{unknown[:5]}; known: llama_model.* (LoRA), llama_model_lora.*, llama_proj.*, "
                          "rec_encoder.*")
    lora_cfg = model_cfg.get("lora_config") or {}
    if lora_cfg.get("use_lora", False) and not lora_keys and not model_cfg.get("freeze_lora", False):
        raise ConfigError(f"model.ckpt = {str(path)!r} holds no LoRA tensors although its config trained LoRA "
                          "(model.lora_config.use_lora: True, freeze_lora: False)")
    lora = _lora_settings(path, lora_keys, lora_cfg) if lora_keys else None
    adapter = {f"base_model.model.{module}.lora_{ab}.weight": t for (module, ab), t in lora_keys.items()}
    if run_cfg.get("mode") == "v3":
        mode = "codes"
    else:
        mode = "slots" if collab else "text"
    return Mapped(adapter, lora, collab, _meta(path, ckpt, mode, lora, collab), skipped)


def _same(a, b):
    return a.shape == b.shape and bool((a == b).all())


def _meta(path, ckpt, mode, lora, collab):
    m, run = ckpt["config"]["model"], ckpt["config"].get("run") or {}
    stat = Path(path).stat()
    meta = {"llama_model": m.get("llama_model"), "mode": mode, "score_type": "yes", "add_bos": True,
            "prompt_path": m.get("prompt_path"), "epoch": ckpt.get("epoch"),
            "lora": None if lora is None else {"r": lora["r"], "alpha": lora["alpha"],
                                               "target_modules": lora["target_modules"], "layers_to_transform": []},
            "upstream": {"file": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                         "run_mode": run.get("mode"), "prompt_path": m.get("prompt_path"),
                         "llama_model": m.get("llama_model")}}
    rc = m.get("rec_config") or {}
    if mode == "codes":
        meta["code_bits"] = int(rc.get("embedding_size", 32))
        if "code_mode" in rc:
            meta["code_mode"] = rc["code_mode"]
    if collab:
        meta.update(rec_model=m.get("rec_model", "MF"), proj_token_num=int(m.get("proj_token_num", 1)),
                    slot_layout="upstream")
    return meta


def stand_in(prompt_path, mode):
    """The prompts/ file with the wording an upstream prompt path names (None: unknown here)."""
    name = Path(str(prompt_path or "")).name
    local = PROMPT_STAND_INS.get(name, {}).get(mode) or name
    path = resolve_path(f"prompts/{local}")
    return path if name and path.is_file() else None


def check_prompt(value, trained, run, evaluate):
    """An upstream checkpoint scores (or continues) only with the prompt wording it was trained on. A run in
    another mode may start from it (stage 1's text adapter for BinLLM's codes) but not evaluate it."""
    up = trained["upstream"]
    if trained["mode"] != run["mode"]:
        if evaluate:
            raise ConfigError(f"model.ckpt = {value!r} was trained upstream with run.mode={up['run_mode']} and "
                              f"model.prompt_path={up['prompt_path']} ({trained['mode']} prompts), but this run "
                              f"scores {run['mode']} prompts; use the config of the stage that wrote it")
        return
    want = stand_in(up["prompt_path"], trained["mode"])
    if want is None:
        print(f"warning: model.ckpt = {value!r} was trained on the upstream prompt {up['prompt_path']}, which is not "
              f"in prompts/; the wording of model.prompt_path = {run['prompt_path']} is not checked against it")
        return
    if load_prompt(want) != load_prompt(resolve_path(run["prompt_path"])):
        raise ConfigError(f"model.ckpt = {value!r} was trained upstream with model.prompt_path={up['prompt_path']} "
                          f"(its wording: prompts/{want.name}) but this run has model.prompt_path="
                          f"{run['prompt_path']}; set model.prompt_path=prompts/{want.name}")
