"""The stages of the framework, in one table: what each one runs and what it needs.

A stage is what one top-level script runs. Its entry here names the recipe that runs it (`recipe`, a module with
`main(cfg, stage)`, imported only to run the stage: recipes import torch) and declares the rest, which the other
layers read instead of spelling stage names: the scripts (`cli`), the split files it reads and the checks run
before torch loads (`minigpt4/preflight.py`), the groups of config keys it reads (`--help-config`,
docs/CONFIG.md; groups in `minigpt4/config/reference.py`), the section of `minigpt4/protocols/paper.yaml` its
steps take (`minigpt4/protocol.py`), and how the experiment layer treats its steps (`llm`, `trains`, `resumes`;
budgets.yaml has one list of overrides per stage name).

Adding a stage: a recipe module, an entry here, its configs and tests (docs/ARCHITECTURE.md, "Adding a stage").
This module imports nothing of the package, so the config layer can read it.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    recipe: str  # module whose `main(cfg, stage)` runs the stage
    scripts: tuple  # the top-level scripts that run it (`script_main(name, ...)`)
    label: str  # its name in the "read by" column of the config reference (docs/CONFIG.md)
    title: str  # its name in prose: "every stage-0 step"
    llm: bool  # builds an LLM recommender: prompts, a backbone; its steps are the report's LLM rows
    trains: bool  # False: scores a checkpoint and trains nothing
    resumes: bool  # an interrupted run continues from its resume point (run.resume_ckpt_path)
    splits: tuple  # the split files it reads: split names, or `run.` keys that list them
    checks: tuple  # what `preflight` checks before torch loads, in order (minigpt4/preflight.py CHECKS)
    key_groups: tuple  # the groups of config keys it reads besides the ungrouped ones (config/reference.py)
    protocol: str  # the section of protocols/paper.yaml its steps take under the paper budget
    protocol_keys: tuple = None  # only these keys of that section; None: all of them
    evaluate_as: str = None  # the stage it becomes under `run.evaluate: True` (scores model.ckpt instead)

    def split_names(self, run):
        """The splits a run of this stage reads, its `run.` keys expanded."""
        out = []
        for s in self.splits:
            out += list(run[s.removeprefix("run.")]) if s.startswith("run.") else [s]
        return out

    def under(self, run):
        """The stage a run of this one really is: the `evaluate_as` stage when run.evaluate is set."""
        return STAGES[self.evaluate_as] if self.evaluate_as and run.evaluate else self


_LLM_CHECKS = ("names", "dataset", "run_dir", "prompt", "encoder", "checkpoint")
STAGES = {s.name: s for s in (
    Stage("collab", recipe="minigpt4.recipes.pretrain_encoder", scripts=("pretrain_collab.py",), label="0",
          title="stage-0", llm=False, trains=True, resumes=False,
          splits=("train", "valid_full", "test", "test_warm", "test_cold"),
          checks=("names", "dataset", "run_dir", "start"), key_groups=("training",), protocol="collab"),
    # CTRL's first stage: DIN aligned with the backbone's view of the train rows as text; its second stage is a
    # `collab` run that starts from the aligned weights (model.rec_config.pretrained_path)
    Stage("ctrl_align", recipe="minigpt4.recipes.align_ctrl", scripts=("align_ctrl.py",), label="CTRL",
          title="CTRL alignment", llm=False, trains=True, resumes=True, splits=("train",),
          checks=("names", "dataset", "run_dir", "aligned_model", "prompt", "backbone"),
          key_groups=("training", "ctrl"), protocol="ctrl"),
    Stage("llm", recipe="minigpt4.recipes.finetune_llm", scripts=("train_binllm.py", "train_collm_mf_din.py"),
          label="LLM", title="LLM", llm=True, trains=True, resumes=True,
          splits=("run.train_splits", "run.valid_splits", "run.test_splits"), checks=_LLM_CHECKS,
          key_groups=("training", "llm_model", "llm_scoring", "llm_training"), protocol="llm", evaluate_as="eval"),
    # scores model.ckpt (or the bare backbone: the zero-shot row) with the trained rows' score (model.score_type)
    Stage("eval", recipe="minigpt4.recipes.finetune_llm", scripts=("eval.py",), label="eval", title="eval",
          llm=True, trains=False, resumes=False, splits=("run.test_splits",), checks=_LLM_CHECKS,
          key_groups=("llm_model", "llm_scoring"), protocol="llm", protocol_keys=("model.score_type",)),
    # a finished run of any method (run.rank_run) ranks each drawn test positive among sampled negatives
    Stage("ranking", recipe="minigpt4.recipes.rank", scripts=("rank.py",), label="rank", title="ranking",
          llm=False, trains=False, resumes=False, splits=("train", "valid_full", "test"),
          checks=("names", "dataset", "run_dir", "ranked_run"), key_groups=("rank",), protocol="ranking"),
)}
NAMES = tuple(STAGES)
SCORING = STAGES["eval"]  # the stage that scores a checkpoint and trains nothing: Recommender.from_run builds as it


def get(name):
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; stages are {', '.join(NAMES)} (minigpt4/stages.py)") from None
