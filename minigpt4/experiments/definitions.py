"""The experiment definitions, read once from the YAML files next to this module.

`steps.yaml` (datasets, steps and their wiring, and the steps ranked after them), `budgets.yaml` (the overrides
of each budget, the cpu speeds of the time estimate), `paper_results.yaml` (the published numbers,
docs/PAPER_RESULTS.md) and `tables.yaml` (the report's tables). They are data so that adding a step, a budget or
a table row needs no code; this module checks their shape and names the file and key of anything malformed.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

from minigpt4 import stages

HERE = Path(__file__).resolve().parent
BUDGET_KINDS = (*stages.NAMES, "full_test", "sub_test")  # a budget's overrides per stage, then per test size
PAPER_SOURCES = ("tables", "warm_cold", "compression")


class ReproduceError(Exception):
    """A problem with the reproduction's inputs or one of its steps; the message says what to fix."""


@dataclass(frozen=True)
class StepDef:
    stage: str            # the cli stage that runs it, a name in minigpt4/stages.py
    method: str           # the shipped config it runs: train_configs/<prefix>_<method>.yaml
    options: tuple = ()   # the step's own overrides of that config (a code length)
    encoder: str = None   # the stage-0 step whose encoder it reads, when not the one of its rec_model
    ranks: str = None     # a ranking step's: the step whose finished run it ranks (run.rank_run)


@dataclass(frozen=True)
class Table:
    title: str
    note: str
    rows: tuple           # (label, step or None, split, paper key or None, paper source)


def _read(name):
    path = HERE / name
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ReproduceError(f"{path}: cannot be read as YAML ({err}); restore it from git") from None
    if not isinstance(data, dict):
        raise ReproduceError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return path, data


def _need(path, mapping, key, kind, where=""):
    """mapping[key], checked to be of `kind`, or an error naming the file and key."""
    at = f"{where}.{key}" if where else key
    if not isinstance(mapping, dict) or key not in mapping:
        raise ReproduceError(f"{path}: key {at!r} is missing")
    value = mapping[key]
    if not isinstance(value, kind):
        raise ReproduceError(f"{path}: {at} must be a {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _pair(path, where, value):
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
        raise ReproduceError(f"{path}: {where} must be [AUC, UAUC], got {value!r}")
    return float(value[0]), float(value[1])


def _load_steps():
    path, raw = _read("steps.yaml")
    datasets = _need(path, raw, "datasets", dict)
    for name, ds in datasets.items():
        for key, kind in (("prefix", str), ("key", str), ("data", str), ("test_rows", int), ("train_rows", int)):
            _need(path, ds, key, kind, f"datasets.{name}")
        if not isinstance(_need(path, ds, "paper", object, f"datasets.{name}"), (str, type(None))):
            raise ReproduceError(f"{path}: datasets.{name}.paper must be a column of paper_results.yaml or null (no "
                                 f"published numbers), got {ds['paper']!r}")
    steps = {}
    for name, s in _need(path, raw, "steps", dict).items():
        stage = _need(path, s, "stage", str, f"steps.{name}")
        if stage not in stages.STAGES:
            raise ReproduceError(f"{path}: steps.{name}.stage is {stage!r}; stages are {', '.join(stages.NAMES)}")
        unknown = set(s) - {"stage", "method", "options", "encoder"}
        if unknown:
            raise ReproduceError(f"{path}: steps.{name}: unknown key(s) {sorted(unknown)}; keys are stage, method, "
                                 "options, encoder")
        steps[name] = StepDef(stage, _need(path, s, "method", str, f"steps.{name}"), tuple(s.get("options") or ()),
                              s.get("encoder"))
    encoders = _need(path, raw, "encoder_steps", dict)
    for name, s in steps.items():
        for dep in [s.encoder] if s.encoder else []:
            if dep not in steps:
                raise ReproduceError(f"{path}: steps.{name}.encoder {dep!r} is not a step")
    for rec_model, dep in encoders.items():
        if dep not in steps:
            raise ReproduceError(f"{path}: encoder_steps.{rec_model} {dep!r} is not a step")
    stage1 = _need(path, raw, "stage1_step", str)
    full = set(_need(path, raw, "full_test_steps", list))
    for dep in [stage1, *sorted(full)]:
        if dep not in steps:
            raise ReproduceError(f"{path}: {dep!r} (stage1_step / full_test_steps) is not a step")
    splits = _need(path, raw, "llm_test_splits", str)
    return datasets, steps, encoders, stage1, full, splits, _ranking(path, raw, steps)


def _ranking(path, raw, steps):
    """{`rank_<step>`: StepDef} of steps.yaml's ranking_steps, in their order: each runs `ranking_step`'s stage and
    method on the finished run of the step it ranks."""
    template = _need(path, raw, "ranking_step", dict)
    stage = _need(path, template, "stage", str, "ranking_step")
    method = _need(path, template, "method", str, "ranking_step")
    if stage not in stages.STAGES:
        raise ReproduceError(f"{path}: ranking_step.stage is {stage!r}; stages are {', '.join(stages.NAMES)}")
    out = {}
    for name in _need(path, raw, "ranking_steps", list):
        if name not in steps:
            raise ReproduceError(f"{path}: ranking_steps: {name!r} is not a step (steps are {', '.join(steps)})")
        if f"rank_{name}" in out or f"rank_{name}" in steps:
            raise ReproduceError(f"{path}: ranking_steps: rank_{name} is already a step (listed twice?)")
        out[f"rank_{name}"] = StepDef(stage, method, ranks=name)
    return out


def _load_budgets(datasets):
    path, raw = _read("budgets.yaml")
    budgets = _need(path, raw, "budgets", dict)
    for name, budget in budgets.items():
        for kind in BUDGET_KINDS:
            _need(path, budget, kind, list, f"budgets.{name}")
        unknown = set(budget) - set(BUDGET_KINDS) - {"datasets"}
        if unknown:
            raise ReproduceError(f"{path}: budgets.{name}: unknown key(s) {sorted(unknown)}; keys are "
                                 f"{', '.join(BUDGET_KINDS)} and datasets")
        # per-dataset additions, appended after the budget's own overrides of the same kind
        for dataset, extra in (budget.get("datasets") or {}).items():
            if dataset not in datasets:
                raise ReproduceError(f"{path}: budgets.{name}.datasets.{dataset}: not a dataset of steps.yaml "
                                     f"({', '.join(datasets)})")
            if not isinstance(extra, dict) or set(extra) - set(BUDGET_KINDS):
                raise ReproduceError(f"{path}: budgets.{name}.datasets.{dataset} must map some of "
                                     f"{', '.join(BUDGET_KINDS)} to lists, got {extra!r}")
            for kind, value in extra.items():
                _need(path, extra, kind, list, f"budgets.{name}.datasets.{dataset}")
    speed = _need(path, raw, "cpu_speed", dict)
    for key in ("score_rows_per_s", "train_s_per_row", "default_encoder_min", "rank_speedup"):
        _need(path, speed, key, (int, float), "cpu_speed")
    _need(path, speed, "encoder_min", dict, "cpu_speed")
    return budgets, speed


def _load_paper(datasets):
    path, raw = _read("paper_results.yaml")
    out = {}
    for source in PAPER_SOURCES:
        section = _need(path, raw, source, dict)
        out[source] = {column: {key: _pair(path, f"{source}.{column}.{key}", v) for key, v in values.items()}
                       for column, values in section.items()}
        missing = {ds["paper"] for ds in datasets.values() if ds["paper"] is not None} - set(out[source])
        if missing:
            raise ReproduceError(f"{path}: {source} has no column(s) {sorted(missing)} (steps.yaml datasets.*.paper)")
    return out


def _load_tables(steps, paper):
    path, raw = _read("tables.yaml")
    tables = {}
    for name, t in _need(path, raw, "tables", dict).items():
        rows = []
        for i, row in enumerate(_need(path, t, "rows", list, f"tables.{name}")):
            where = f"tables.{name}.rows[{i}]"
            if not (isinstance(row, list) and len(row) == 5):
                raise ReproduceError(f"{path}: {where} must be [label, step, split, paper key, source], got {row!r}")
            label, step, split, key, source = row
            if step is not None and step not in steps:
                raise ReproduceError(f"{path}: {where}: step {step!r} is not in steps.yaml")
            if source not in PAPER_SOURCES:
                raise ReproduceError(f"{path}: {where}: source {source!r}; sources are {', '.join(PAPER_SOURCES)}")
            if key is not None and not any(key in column for column in paper[source].values()):
                raise ReproduceError(f"{path}: {where}: paper_results.yaml {source} has no key {key!r}")
            rows.append((str(label), step, split, key, source))
        tables[name] = Table(_need(path, t, "title", str, f"tables.{name}"), t.get("note") or "", tuple(rows))
    comparisons = []
    for i, pair in enumerate(_need(path, raw, "comparisons", list)):
        if not (isinstance(pair, list) and len(pair) == 2 and all(s in steps for s in pair) and pair[0] != pair[1]):
            raise ReproduceError(f"{path}: comparisons[{i}] must be [step, other step] of steps.yaml, got {pair!r}")
        comparisons.append(tuple(pair))
    return tables, tuple(comparisons)


DATASETS, STEPS, ENCODER_STEP, STAGE1_STEP, FULL_TEST_STEPS, LLM_TEST_SPLITS, RANKING_STEPS = _load_steps()
# RANKING_STEPS: {`rank_<step>`: StepDef} run after every step of STEPS (whose rows report.md shows); ranking.md
# shows theirs
ALL_STEPS = {**STEPS, **RANKING_STEPS}
BUDGETS, CPU_SPEED = _load_budgets(DATASETS)
_PAPER_ALL = _load_paper(DATASETS)
PAPER = _PAPER_ALL["tables"]  # {paper column: {key: (AUC, UAUC)}}: BinLLM Tables 2-3
PAPER_WARM_COLD = _PAPER_ALL["warm_cold"]
PAPER_COMPRESSION = _PAPER_ALL["compression"]
TABLES, COMPARISONS = _load_tables(STEPS, _PAPER_ALL)  # COMPARISONS: ((step a, step b), ...)

# The name a step has in the first table that lists it.
STEP_LABEL = {}
for _table in TABLES.values():
    for _label, _step, *_ in _table.rows:
        STEP_LABEL.setdefault(_step, _label)


def has_paper(dataset):
    """Whether the paper published numbers for the dataset (steps.yaml datasets.*.paper is not null)."""
    return DATASETS[dataset]["paper"] is not None


def paper_value(dataset, source, key):
    """(AUC, UAUC) the paper gives for a report row, or None (no published number, or none for the dataset)."""
    if key is None or not has_paper(dataset):
        return None
    return _PAPER_ALL[source][DATASETS[dataset]["paper"]].get(key)


# Another seed of a step (reproduce.py --seed N): the run `runs/<step>.seed<N>/` beside the step's own. Only the
# LLM steps that train get one; the encoders and the zero-shot steps they read stay the step's own.
def takes_seed(step):
    spec = STEPS.get(step)
    return spec is not None and stages.get(spec.stage).llm and stages.get(spec.stage).trains


def seeded(step, seed):
    return f"{step}.seed{seed}"


def split_seed(name):
    """(step, seed) of a run name: ("binllm", 43) for "binllm.seed43", (name, None) for a step's own run or a
    name that is not a seed of a step."""
    step, mark, seed = name.rpartition(".seed")
    if mark and seed.isdigit() and step in ALL_STEPS:
        return step, int(seed)
    return name, None


def label(name):
    """A run's name in a report: the step's label, with its seed when it is another seed's run."""
    step, seed = split_seed(name)
    text = STEP_LABEL.get(step, step)
    return f"{text} (seed {seed})" if seed is not None else text
