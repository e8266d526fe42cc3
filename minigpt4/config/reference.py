"""Every config key, generated from the schema's dataclasses: the scripts' `--help-config` (a terminal view: key,
default, the meaning's first sentence; `--help-config KEY` shows one key in full) and docs/CONFIG.md
(`python eval.py --help-config-md > docs/CONFIG.md`)."""

import shutil

from minigpt4.config.load import ALIASES, INCLUDE_KEY, _distance
from minigpt4.config.schema import DatasetConfig, ModelConfig, RunConfig, default, is_section, keys, kind
from minigpt4.stages import NAMES, STAGES

# Groups of keys read by some stages only; each stage names the groups it reads (minigpt4/stages.py). A key in no
# group is read by every stage. "upstream_unused": upstream keys accepted so that upstream YAMLs load, read by none.
_LLM_MODEL = ["arch", "llama_model", "prompt_path", "prompt_template", "max_txt_len", "proj_token_num",
              "proj_mid_times", "freeze_rec", "freeze_proj", "freeze_lora", "user_num", "item_num", "ans_type",
              "score_type", "slot_layout", "slot_init", "add_bos", "ckpt", "low_resource", "load_in_8bit",
              "load_in_4bit", "lora_config"]
_LLM_TRAINING = ["runner", "lr_sched", "min_lr", "warmup_lr", "warmup_steps", "beta2", "iters_per_epoch",
                 "accum_grad_iters", "length_buckets", "global_batch_size", "resume_ckpt_path", "save_every_steps",
                 "evaluate", "train_splits", "valid_splits", "max_train_rows", "log_freq", "fsdp",
                 "grad_checkpointing"]
KEY_GROUPS = {
    "llm_model": [f"model.{k}" for k in _LLM_MODEL],
    "llm_scoring": [f"run.{k}" for k in ("mode", "batch_size_eval", "dtype", "amp", "compile", "tf32", "test_splits",
                                         "max_eval_rows", "max_eval_rows_per_user")],
    "llm_training": [f"run.{k}" for k in _LLM_TRAINING],
    "training": [f"run.{k}" for k in ("init_lr", "weight_decay", "max_epoch", "batch_size_train", "patience")],
    # CTRL's alignment: its heads, and the backbone and prompt that write its text view
    "ctrl": ["model.ctrl", "model.llama_model", "model.prompt_path", "model.prompt_template", "run.batch_size_eval",
             "run.dtype", "run.amp", "run.max_train_rows", "run.resume_ckpt_path"],
    # rank.py: the candidates, and the scoring keys of an LLM run it ranks
    "rank": [f"run.{k}" for k in ("rank_run", "rank_users", "rank_positives", "rank_negatives", "rank_seed",
                                  "rank_candidates", "batch_size_eval", "dtype")],
    "upstream_unused": ["model.model_type", "model.end_sym", "model.proj_drop", "model.rec_config.use_hash",
                        "model.rec_config.A_n_fold", "model.rec_config.A_split", "model.rec_config.pretrain",
                        "model.rec_config.l2_emb", "datasets.<name>.data_type", "run.num_workers", "run.world_size",
                        "run.dist_url", "run.distributed", "run.use_dist_eval_sampler"],
}
# key (or the section under it) -> the stages that read it, in the stage table's order (a key of several groups: the
# stages of any of them)
READ_BY = {key: tuple(n for n, s in STAGES.items()
                      if any(key in members for g, members in KEY_GROUPS.items() if g in s.key_groups))
           for members in KEY_GROUPS.values() for key in members}


def script_names(stage):
    """`train_binllm.py / train_collm_mf_din.py`: the scripts that run a stage."""
    return " / ".join(STAGES[stage].scripts)


def read_by(key):
    """The stages that read a dotted key: its own entry in READ_BY, else its section's, else all."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = READ_BY.get(".".join(parts[:n]))
        if found is not None:
            return found
    return NAMES


def _entries(section=None, prefix=None):
    """(dotted key, default, meaning with its choices) of every leaf key, in schema order."""
    if section is None:
        for section, prefix in ((ModelConfig, "model."), (DatasetConfig, "datasets.<name>."), (RunConfig, "run.")):
            yield from _entries(section, prefix)
        return
    for name, f in keys(section).items():
        if is_section(f):
            yield from _entries(kind(f.type)[0], f"{prefix}{name}.")
        else:
            choices = f.metadata["choices"]
            choices = f" One of: {', '.join(map(str, choices))}." if choices else ""
            yield f"{prefix}{name}", default(f), f"{f.metadata['doc']}{choices}"


def defaults():
    """{dotted key: schema default} of every model. and run. key."""
    return {key: value for key, value, _ in _entries() if not key.startswith("datasets.")}


def _first_sentence(text):
    end = text.find(". ")
    return text if end == -1 else text[:end + 1]


def reference_text(key=None, width=None, stage=None):
    """--help-config: one line per key (key, default, first sentence, cut to the terminal), or one key in full.
    `stage` (collab, llm, eval): only the keys that stage's script reads."""
    entries = list(_entries())
    if key:
        key = ALIASES.get(key, key)  # run.lr -> run.init_lr
        hits = [e for e in entries if e[0] == key or e[0].endswith("." + key)]
        if not hits:
            near = min(entries, key=lambda e: min(_distance(key, e[0]), _distance(key, e[0].rsplit(".", 1)[1])))[0]
            return f"no config key {key!r} (did you mean {near!r}?); --help-config lists them all\n"
        return "".join(f"{k}\n  default: {d!r}\n  read by: {_readers(k)}\n  {doc}\n" for k, d, doc in hits)
    width = width or shutil.get_terminal_size((120, 24)).columns
    shown = [e for e in entries if stage is None or stage in read_by(e[0])]
    name_w = max(len(k) for k, _, _ in shown)
    lines = [f"config keys {script_names(stage)} reads:" if stage else "config keys:"]
    for k, d, doc in shown:
        line = f"{k:<{name_w}}  {d!r:<12}  {_first_sentence(doc)}"
        lines.append(line if len(line) <= width else line[:width - 1] + "…")
    rest = f" ({len(entries) - len(shown)} not read here)" if stage else ""
    lines.append(f"--help-config KEY: one key in full (e.g. run.init_lr); all {len(entries)} keys: docs/CONFIG.md"
                 f"{rest}"[:width])
    return "\n".join(lines) + "\n"


def _readers(key):
    stages = read_by(key)
    return ", ".join(script_names(s) for s in stages) if stages else "no script (an upstream key, accepted and unused)"


def reference_markdown():
    lines = ["# Configuration reference", "",
             "Generated from the dataclasses of `minigpt4/config/schema.py` (`python eval.py --help-config-md >",
             "docs/CONFIG.md`; `--help-config` shows the same keys in a terminal). Every YAML file has three",
             "sections: `model`, `datasets` (exactly one entry, named by a",
             "registered dataset builder: `movie_ood`, `amazon_ood`, `movie_ood_sasrec`, `amazon_ood_sasrec`,",
             "`synthetic`) and `run`. Unknown keys are errors. Any key can be overridden on the command line:",
             "`--options run.init_lr=1e-3 model.ckpt=...`. A file may start with",
             f"`{INCLUDE_KEY}: [base/llm.yaml, datasets/ml1m.yaml]`: those files (relative to it, themselves possibly",
             "layered) are merged first, in order, then the file's own keys (docs/RECIPES.md).", "",
             "Read by: the stages whose scripts read the key ("
             + ", ".join(f"{st.label} = " + " / ".join(f"`{x}`" for x in st.scripts) for st in STAGES.values())
             + "); `-`: an upstream key that is accepted and read by none.", "",
             "| key | default | read by | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | `{d!r}` | {', '.join(STAGES[s].label for s in read_by(k)) or '-'} | {doc} |"
              for k, d, doc in _entries()]
    return "\n".join(lines) + "\n"

