"""docs/CONFIG.md and `--help-config`: a table of every key, generated from the schema's dataclasses."""

from minigpt4.config.load import INCLUDE_KEY
from minigpt4.config.schema import DatasetConfig, ModelConfig, RunConfig, default, is_section, keys, kind


def _rows(section, prefix):
    for name, f in keys(section).items():
        if is_section(f):
            yield from _rows(kind(f.type)[0], f"{prefix}{name}.")
        else:
            choices = f.metadata["choices"]
            choices = f" One of: {', '.join(map(str, choices))}." if choices else ""
            yield f"| `{prefix}{name}` | `{default(f)!r}` | {f.metadata['doc']}{choices} |"


def reference_markdown():
    lines = ["# Configuration reference", "",
             "Generated from the dataclasses of `minigpt4/config/schema.py` (`python eval.py --help-config >",
             "docs/CONFIG.md`). Every YAML file has three sections: `model`, `datasets` (exactly one entry, named by a",
             "registered dataset builder: `movie_ood`, `amazon_ood`, `movie_ood_sasrec`, `amazon_ood_sasrec`,",
             "`synthetic`) and `run`. Unknown keys are errors. Any key can be overridden on the command line:",
             "`--options run.init_lr=1e-3 model.ckpt=...`. A file may start with",
             f"`{INCLUDE_KEY}: [base/llm.yaml, datasets/ml1m.yaml]`: those files (relative to it, themselves possibly",
             "layered) are merged first, in order, then the file's own keys (docs/RECIPES.md).", "",
             "| key | default | meaning |", "|---|---|---|"]
    lines += _rows(ModelConfig, "model.")
    lines += _rows(DatasetConfig, "datasets.<name>.")
    lines += _rows(RunConfig, "run.")
    return "\n".join(lines) + "\n"
