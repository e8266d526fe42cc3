"""Checkpoints hold only what was trained: a peft adapter directory (adapter_config.json +
adapter_model.safetensors, loadable with `peft.PeftModel.from_pretrained(base, dir)`), `collab_tokens.safetensors`
when the model fills CoLLM slots (the mapping MLP or prompt table, and the encoder only when it was trained:
a frozen encoder is read from `rec_config.pretrained_path`), and `recommender.json` (what it was trained for).
Loading refuses a checkpoint made for another backbone, score type, LoRA layout, code mode or length, or slot
encoder, naming the config key to set; a key an older checkpoint does not record is not checked.

An upstream `checkpoint_best.pth` (a file, not a directory) is converted once into such a directory beside it,
`<file>.converted/` (minigpt4/train/upstream_checkpoint.py maps its keys; `convert_checkpoint.py` does it
explicitly), and is then loaded and checked like any other.
"""

import json
import shutil
import tempfile
from pathlib import Path

from minigpt4.config import ConfigError, resolve_path

META = "recommender.json"
ADAPTER = "adapter_model.safetensors"
COLLAB = "collab_tokens.safetensors"


def save_checkpoint(recommender, path, meta, state=None):
    """Write the adapter to a temporary directory, then swap it in, so a crash never leaves half a checkpoint.

    state: the trained tensors by parameter name (`sharding.trained_state`), needed when the model is sharded;
    default: read from the model."""
    if state is None:
        from minigpt4.train.sharding import trained_state

        state = trained_state(recommender)
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        if hasattr(recommender.llm, "peft_config"):
            adapter = {k.removeprefix("llm."): v for k, v in state.items() if k.startswith("llm.")}
            recommender.llm.save_pretrained(str(tmp), state_dict=adapter)
        if recommender.collab is not None:
            collab = {k.removeprefix("collab."): v.contiguous() for k, v in state.items() if k.startswith("collab.")}
            from safetensors.torch import save_file  # here, not at the top: find_checkpoint runs before torch loads

            save_file(collab, str(tmp / COLLAB))
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by a crash between the two renames below
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def find_checkpoint(value, where="model.ckpt", writer=None):
    """Accepts a checkpoint directory, a run directory that holds `checkpoint_best/`, or an upstream
    `checkpoint_best.pth` (converted once, see `converted_upstream`). `writer`: the command that writes it, named
    when it is missing (default: ML-1M's stage 1, as an example)."""
    p = resolve_path(value)
    if p.is_file():
        return converted_upstream(p, where)
    if (p / "checkpoint_best" / META).is_file() or (p / ".checkpoint_best.old" / META).is_file():
        p = p / "checkpoint_best"
    old = p.with_name(f".{p.name}.old")
    if not p.exists() and (old / META).is_file():  # killed between the two renames of save_checkpoint
        print(f"warning: {p} is missing; using the previous checkpoint {old}")
        p = old
    if not p.exists():
        # the usual case: the stage that writes it has not run yet (stage 2 starts from stage 1's adapter)
        writer = writer or "python train_collm_mf_din.py --cfg-path train_configs/ml1m_tallrec.yaml"
        raise ConfigError(f"{where} = {value!r}: no such checkpoint. It is written by an earlier run: run that stage "
                          f"first (BinLLM and CoLLM start from stage 1, e.g. `{writer}`; the config's header names "
                          f"what it needs), or point {where} at an existing <run dir>/checkpoint_best")
    if not (p / META).is_file() or not ((p / ADAPTER).is_file() or (p / COLLAB).is_file()):
        raise ConfigError(f"{where} = {value!r}: not a checkpoint directory (expected {META} and {ADAPTER} or "
                          f"{COLLAB}, as written by train_collm_mf_din.py / train_binllm.py into "
                          "<run dir>/checkpoint_best)")
    return p


def converted_upstream(file, where="model.ckpt", out=None):
    """The checkpoint directory converted from the upstream file `file`: `out`, default `<file>.converted/`,
    written once and reused while the file's size and modification time are those it was converted from."""
    file = Path(file).resolve()
    if not file.is_file():
        raise ConfigError(f"{where} = {str(file)!r}: no such file")
    out = Path(out) if out else file.with_name(file.name + ".converted")
    if _converted_from(out, file):
        return out
    from minigpt4.train.upstream_checkpoint import mapped, read

    found = mapped(file, read(file, where))
    if not found.adapter and not found.collab:
        raise ConfigError(f"{where} = {str(file)!r} holds no trained tensors (no LoRA, no llama_proj, no trained "
                          "rec_encoder)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except OSError as err:
        raise ConfigError(f"{where} = {str(file)!r}: cannot write its converted checkpoint {out} ({err.strerror}); "
                          f"convert it where you can write: `python convert_checkpoint.py {file} --out DIR`, then set "
                          f"{where}=DIR") from None
    try:
        from safetensors.torch import save_file

        if found.adapter:
            from peft import LoraConfig

            lora = found.lora
            LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                       target_modules=lora["target_modules"], bias="none", task_type="CAUSAL_LM",
                       base_model_name_or_path=found.meta["llama_model"]).save_pretrained(str(tmp))
            save_file({k: v.contiguous() for k, v in found.adapter.items()}, str(tmp / ADAPTER))
        if found.collab:
            save_file({k: v.contiguous() for k, v in found.collab.items()}, str(tmp / COLLAB))
        (tmp / META).write_text(json.dumps(found.meta, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)  # converted from an older version of the file
        try:
            tmp.rename(out)
        except OSError:  # another process converted it at the same time
            if not _converted_from(out, file):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"converted the upstream checkpoint {file} into {out} ({len(found.adapter)} LoRA tensors, "
          f"{len(found.collab)} slot tensors; {found.skipped} frozen weights and buffers left out)")
    return out


def _converted_from(out, file):
    try:
        up = read_meta(out).get("upstream") or {}
    except (OSError, ValueError):
        return False
    stat = file.stat()
    return (up.get("file"), up.get("size"), up.get("mtime_ns")) == (str(file), stat.st_size, stat.st_mtime_ns)


def adapter_lora_config(path):
    """The LoRA settings a checkpoint was trained with, as `model.lora_config` keys (use_lora False: none)."""
    if not (Path(path) / "adapter_config.json").is_file():
        return {"use_lora": False}
    cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    targets = cfg["target_modules"]
    return {"use_lora": True, "r": cfg["r"], "alpha": cfg["lora_alpha"], "dropout": cfg["lora_dropout"],
            "target_modules": sorted(targets) if isinstance(targets, (list, set)) else [targets],
            "layers_to_transform": list(cfg.get("layers_to_transform") or [])}


def read_meta(path):
    return json.loads((Path(path) / META).read_text(encoding="utf-8"))


def has_collab(value):
    return (find_checkpoint(value) / COLLAB).is_file()


# meta key -> the config key that sets it, named in a refusal
CONFIG_KEYS = {"score_type": "model.score_type", "code_mode": "model.rec_config.code_mode",
               "code_bits": "model.rec_config.embedding_size",  # the binary encoder's width = bits per code
               "rec_model": "model.rec_model", "proj_token_num": "model.proj_token_num",
               "slot_layout": "model.slot_layout", "llama_model": "model.llama_model", "add_bos": "model.add_bos"}
LORA_KEYS = ("r", "alpha", "target_modules", "layers_to_transform")
_UNRECORDED = object()


def _layout(r, alpha, targets, layers, n_layers):
    """Like-with-like form of a LoRA layout: sorted target names, absolute layer indices, [] = every layer."""
    targets = sorted(targets) if isinstance(targets, (list, set, tuple)) else [targets]
    layers = sorted({int(i) % n_layers for i in (layers or [])})  # config counts negative indices from the top
    return {"r": int(r), "alpha": int(alpha), "target_modules": targets,
            "layers_to_transform": [] if layers == list(range(n_layers)) else layers}


def lora_layout(recommender):
    """The model's LoRA layout as a checkpoint records it (meta key `lora`); None without LoRA."""
    if not hasattr(recommender.llm, "peft_config"):
        return None
    c = recommender.llm.peft_config["default"]
    return _layout(c.r, c.lora_alpha, c.target_modules, c.layers_to_transform,
                   recommender.causal_lm.config.num_hidden_layers)


def _checkpoint_lora(path, meta, n_layers):
    """The checkpoint's layout: from its adapter_config.json (older checkpoints hold it too), else meta `lora`."""
    if (path / "adapter_config.json").is_file():
        c = adapter_lora_config(path)
        return _layout(c["r"], c["alpha"], c["target_modules"], c["layers_to_transform"], n_layers)
    return meta.get("lora", _UNRECORDED)


def _refusal(value, key, trained, run):
    if key == "backbone":  # the architecture signature, not a path: say which key chooses it
        return (f"model.ckpt = {value!r} was trained on a backbone of architecture {trained!r} but this run's "
                f"model.llama_model has architecture {run!r}; set model.llama_model to the checkpoint's backbone or "
                f"use a checkpoint trained on {run!r}")
    name = CONFIG_KEYS.get(key, key)
    return (f"model.ckpt = {value!r} was trained with {name}={trained!r} but this run has {name}={run!r}; "
            f"set {name}={trained} or use a checkpoint trained with {run}")


def _check_lora(recommender, value, path, meta):
    trained = _checkpoint_lora(path, meta, recommender.causal_lm.config.num_hidden_layers)
    run = lora_layout(recommender)
    if trained is _UNRECORDED or trained == run:
        return
    if trained is None or run is None:
        t, r = trained is not None, run is not None
        raise ConfigError(f"model.ckpt = {value!r} was trained with model.lora_config.use_lora={t} but this run has "
                          f"model.lora_config.use_lora={r}; set model.lora_config.use_lora={t}"
                          + (f" with {_keys(trained, LORA_KEYS)}" if t else "")
                          + f" or use a checkpoint trained with use_lora={r}")
    keys = [k for k in LORA_KEYS if trained[k] != run[k]]
    note = (" (absolute layer indices, [] = every layer)" if "layers_to_transform" in keys else "")
    raise ConfigError(f"model.ckpt = {value!r} was trained with {_keys(trained, keys)} but this run has "
                      f"{_keys(run, keys)}{note}; set {_keys(trained, keys)} or use a checkpoint trained with "
                      f"{_keys(run, keys)}")


def _keys(layout, keys):
    return ", ".join(f"model.lora_config.{k}={layout[k]}" for k in keys)


def load_checkpoint(recommender, value, expect, before=None):
    """Load adapter weights (and slot-filling weights, when saved) into `recommender`. `expect` maps meta keys
    to the values this run needs; a key the checkpoint records with another value is refused, as is another
    LoRA layout than the model's. `before`: the value a key had for checkpoints written before it was recorded
    (what that code always did); other keys an old checkpoint lacks are not checked. Nothing is loaded before
    every check has passed."""
    path = find_checkpoint(value)
    meta = read_meta(path)
    for key, want in expect.items():
        trained = meta.get(key, (before or {}).get(key, want))
        if trained != want:
            raise ConfigError(_refusal(value, key, trained, want))
    _check_lora(recommender, value, path, meta)
    if (path / COLLAB).is_file():
        _load_collab(recommender, value, path / COLLAB)
    if (path / ADAPTER).is_file():
        _load_adapter(recommender, value, path / ADAPTER)
    return meta


def run_meta(model_cfg, recommender, mode, codes=None):
    """What this run's checkpoints record (`recommender.json`); `load_start` checks a loaded one against it."""
    m = model_cfg
    meta = {"llama_model": m.llama_model, "backbone": recommender.backbone_signature(), "mode": mode,
            "score_type": m.score_type, "prompt_path": m.prompt_path, "lora": lora_layout(recommender),
            "add_bos": m.add_bos}
    if codes is not None:
        meta.update(code_mode=m.rec_config.code_mode, code_bits=codes.bits_per_code)
    if recommender.collab is not None:
        meta.update(rec_model=m.rec_model, proj_token_num=m.proj_token_num, slot_layout=m.slot_layout)
    return meta


def load_start(recommender, model_cfg, meta, evaluate=False):
    """Load `model.ckpt`, the checkpoint a stage starts from (or eval.py scores), refusing one trained for
    another run. backbone: the architecture, wherever its files lie. mode and prompt_path differ legitimately
    between stage 1 (text) and stage 2 (codes or slots); the score type may not. The LoRA layout is compared with
    the model's by load_checkpoint."""
    value = model_cfg.ckpt
    expect = {k: meta[k] for k in ("backbone", "score_type", "add_bos")}
    if "code_bits" in meta:  # checked only against a checkpoint that had codes (stage 1 has none)
        expect.update(code_mode=meta["code_mode"], code_bits=meta["code_bits"])
    if recommender.collab is not None and has_collab(value):
        expect.update({k: meta[k] for k in ("rec_model", "proj_token_num")})
        if model_cfg.proj_token_num > 1:  # with one position per slot both layouts are the same prompt
            expect.update(slot_layout=meta["slot_layout"])
    trained = read_meta(find_checkpoint(value))
    if "upstream" in trained:
        from minigpt4.train.upstream_checkpoint import check_prompt

        check_prompt(value, trained, meta, evaluate)
    # checkpoints older than these keys: every prompt began with BOS, and k > 1 slots were contiguous
    loaded = load_checkpoint(recommender, value, expect, before={"add_bos": True, "slot_layout": "contiguous"})
    print(f"loaded {value} (trained as {loaded.get('mode')}, epoch {loaded.get('epoch')})")
    if evaluate and recommender.collab is not None and not has_collab(value):
        raise ConfigError(f"model.ckpt = {value!r} has no trained slot weights (collab_tokens.safetensors): "
                          "evaluate the checkpoint of the CoLLM / prompt-tuning stage, not of stage 1")
    return loaded


def _load_collab(recommender, value, file):
    if recommender.collab is None:
        raise ConfigError(f"model.ckpt = {value!r} holds CoLLM slot weights ({COLLAB}) but this run's prompt has no "
                          "<UserID>/<TargetItemID> slots; use the prompt and run.mode the checkpoint was trained with")
    from safetensors.torch import load_file

    try:
        result = recommender.collab.load_state_dict(load_file(str(file)), strict=False)
    except RuntimeError as err:
        raise ConfigError(f"model.ckpt = {value!r}: its {COLLAB} does not fit model.rec_model / rec_config / "
                          f"proj_token_num / proj_mid_times of this run: {str(err).splitlines()[0]}") from None
    # a frozen encoder is not saved (its weights come from rec_config.pretrained_path); anything else must be there
    missing = [k for k in result.missing_keys if not (k.startswith("encoder.") and recommender.collab.encoder_frozen)]
    if missing or result.unexpected_keys:
        raise ConfigError(f"model.ckpt = {value!r}: its {COLLAB} does not match this run's slot module: missing "
                          f"{missing[:3]}, unexpected {list(result.unexpected_keys)[:3]}; check model.rec_model, "
                          "model.freeze_rec and the rec_config sizes against the checkpoint's run")


def _load_adapter(recommender, value, file):
    if not hasattr(recommender.llm, "peft_config"):
        raise ConfigError("model.ckpt holds a LoRA adapter but model.lora_config.use_lora is False")
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(file))
    try:
        result = set_peft_model_state_dict(recommender.llm, state)
    except RuntimeError as err:  # tensor shapes differ: another rank or another backbone
        raise ConfigError(f"model.ckpt = {value!r} does not fit this model: {str(err).splitlines()[0]}; check "
                          "model.lora_config and model.llama_model against the checkpoint's "
                          "adapter_config.json") from None
    expected = {k for k, _ in recommender.llm.named_parameters() if "lora_" in k}
    missing = sorted(k for k in result.missing_keys if "lora_" in k)
    if missing or result.unexpected_keys:
        raise ConfigError(f"model.ckpt = {value!r} does not match this model's adapters: missing {missing[:3]}, "
                          f"unexpected {list(result.unexpected_keys)[:3]} ({len(expected)} adapter tensors "
                          "expected); check model.lora_config (r, target_modules) and model.llama_model")
