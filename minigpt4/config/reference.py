"""Every config key, generated from the schema's dataclasses: the scripts' `--help-config` (a terminal view: key,
default, the meaning's first sentence; `--help-config KEY` shows one key in full) and docs/CONFIG.md
(`python eval.py --help-config-md > docs/CONFIG.md`)."""

import shutil

from minigpt4.config.load import ALIASES, INCLUDE_KEY, _distance
from minigpt4.config.schema import DatasetConfig, ModelConfig, RunConfig, default, is_section, keys, kind


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


def _first_sentence(text):
    end = text.find(". ")
    return text if end == -1 else text[:end + 1]


def reference_text(key=None, width=None):
    """--help-config: one line per key (key, default, first sentence, cut to the terminal), or one key in full."""
    entries = list(_entries())
    if key:
        key = ALIASES.get(key, key)  # run.lr -> run.init_lr
        hits = [e for e in entries if e[0] == key or e[0].endswith("." + key)]
        if not hits:
            near = min(entries, key=lambda e: min(_distance(key, e[0]), _distance(key, e[0].rsplit(".", 1)[1])))[0]
            return f"no config key {key!r} (did you mean {near!r}?); --help-config lists them all\n"
        return "".join(f"{k}\n  default: {d!r}\n  {doc}\n" for k, d, doc in hits)
    width = width or shutil.get_terminal_size((120, 24)).columns
    name_w = max(len(k) for k, _, _ in entries)
    lines = []
    for k, d, doc in entries:
        line = f"{k:<{name_w}}  {d!r:<12}  {_first_sentence(doc)}"
        lines.append(line if len(line) <= width else line[:width - 1] + "…")
    lines.append("--help-config KEY: one key in full (e.g. run.init_lr); all in full: docs/CONFIG.md"[:width])
    return "\n".join(lines) + "\n"


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
             "| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{k}` | `{d!r}` | {doc} |" for k, d, doc in _entries()]
    return "\n".join(lines) + "\n"

