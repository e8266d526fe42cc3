"""Reproduce the paper's tables from one command: plan every run, run what is missing, write the report.

`python reproduce.py --dataset ml-1m --budget cpu` runs every method of BinLLM's Tables 2 and 3, the warm/cold
and compression figures and a code-length ablation from the shipped configs (`train_configs/<prefix>_<method>.yaml`),
overriding only what the budget and the wiring between runs need. Runs go to `<out>/<dataset>/<budget>/runs/<step>`;
a step whose `metrics.json` exists is reused, so an interrupted reproduction continues with the same command.
The report (`report.md`, `results.csv`, `environment.json`, PNG figures) is written next to `runs/`.
"""

import argparse
import csv
import io
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from minigpt4 import cli, protocol
from minigpt4.config import EMBEDDED_LLM, backbone_profile, load_config
from minigpt4.train.run_dir import atomic_text, atomic_write, environment

ROOT = Path(__file__).resolve().parents[1]


class ReproduceError(Exception):
    """A problem with the reproduction's inputs or one of its steps; the message says what to fix."""


# Where each dataset's configs and processed data live, and its column name in the paper's tables.
DATASETS = {
    "ml-1m": {"prefix": "ml1m", "key": "movie_ood", "data": "data/ml-1m", "paper": "ML-1M", "test_rows": 7331},
    "amazon-book": {"prefix": "amazon", "key": "amazon_ood", "data": "data/amazon_book", "paper": "Book",
                    "test_rows": 25747},
}

# The steps in the order they run. Stage 0 first (everything else reads its encoders), then stage 1, then the
# headline rows (BinLLM, CoLLM-MF) so a reproduction stopped early already fills the main comparison, then the
# other rows of the paper's Tables 2-3, then the rows beyond them.
# step -> (cli stage, method whose shipped config it runs, extra overrides of that config)
STEPS = {
    "binmf": ("collab", "binmf", []),
    "mf": ("collab", "mf", []),
    "lightgcn": ("collab", "lightgcn", []),
    "sasrec": ("collab", "sasrec", []),
    "din": ("collab", "din", []),
    "tallrec": ("llm", "tallrec", []),
    "binllm": ("llm", "binllm", []),
    "collm_mf": ("llm", "collm_mf", []),
    "icl": ("eval", "icl", []),
    "binllm_io": ("llm", "binllm_io", []),
    "binllm_it": ("llm", "binllm_it", []),
    "collm_din": ("llm", "collm_din", []),
    "softprompt": ("llm", "softprompt", []),
    "personprompt": ("llm", "personprompt", []),
    # Beyond Tables 2-3: the compression ablation (Figure 3); BinMF with 16 / 64 bits for the code-length table
    # (a minute each, so early); CoLLM on encoders the paper did not pair it with; last BinLLM reading the 16 / 64
    # bit codes (32 bits is the `binllm` step), the longest LLM steps.
    "binllm_ipv4": ("llm", "binllm_ipv4", []),
    "binmf16": ("collab", "binmf", ["model.rec_config.embedding_size=16"]),
    "binmf64": ("collab", "binmf", ["model.rec_config.embedding_size=64"]),
    "collm_lightgcn": ("llm", "collm_lightgcn", []),
    "collm_sasrec": ("llm", "collm_sasrec", []),
    "binllm16": ("llm", "binllm", ["model.rec_config.embedding_size=16"]),
    "binllm64": ("llm", "binllm", ["model.rec_config.embedding_size=64"]),
}

# The stage-0 step that trains each `model.rec_model`; a step using another code length reads its own encoder.
ENCODER_STEP = {"hash": "binmf", "MF": "mf", "lightgcn": "lightgcn", "sasrec": "sasrec", "DIN": "din"}
STAGE1_STEP = "tallrec"

# Rows a budget scores on the whole test split: the paper's headline comparison (BinMF, TALLRec, CoLLM-MF,
# BinLLM). Stage-0 encoders are always scored in full (seconds). Every other LLM row is scored as the budget's
# `sub_test` says: the smoke budget subsamples; cpu and full score the whole split too.
FULL_TEST_STEPS = {"binmf", "tallrec", "collm_mf", "binllm"}

LLM_TEST_SPLITS = "run.test_splits=[test,test_warm,test_cold]"

# Budgets: overrides on top of the shipped configs, per kind of step. Plain lists of key=value, as on the command
# line, so a row of the report can be re-run by hand with the same options.
BUDGETS = {
    # Minutes, for tests and for checking the wiring: 2 encoder epochs; 2 LLM steps of 4 rows drawn from a fixed
    # 200-row train sample; 40 scored rows per split; no validation (nothing to select from 2 steps); LoRA in
    # every layer because test backbones have fewer layers than the configs' top-8 window.
    "smoke": {
        "collab": ["run.max_epoch=2", "run.device=cpu"],
        "llm": ["run.max_epoch=1", "run.iters_per_epoch=2", "run.batch_size_train=4", "run.warmup_steps=1",
                "run.max_train_rows=200", "run.valid_splits=[]", "model.lora_config.layers_to_transform=[]",
                "run.device=cpu"],
        "eval": ["run.device=cpu"],
        "full_test": ["run.max_eval_rows=40"],
        "sub_test": ["run.max_eval_rows=40"],
    },
    # About 13 h on 2 AVX2 CPU cores in fp32 with SmolLM2-135M by the printed estimate (measured fp32 speeds,
    # CPU_SPEED; a CPU with AMX computes in bf16 under run.dtype: auto and should take less); it resumes where it
    # stopped, so it can run over several sittings.
    # Encoders: the shipped stage-0 recipes on all data (early stopping on the full valid split).
    # LLM rows: the shipped recipes' step counts and learning rates, with LoRA in every layer (in the top 8 layers
    # only, BinLLM's training loss stayed at 0.70 for 175 steps on CPU; with every layer it learned in the first
    # epoch on a GPU, results/ml-1m/full). Training batches of 8 are drawn from all train rows in the order fixed
    # by run.seed (TrainBatches), so a method sees steps x 8 rows: 800 (TALLRec), 3,360 (BinLLM and its
    # ablations IO, IT, dot-decimal, 16/64 bits), 960 (the other rows);
    # a whole-user subsample would show the code-reading rows only ~40 users. No validation (scoring 500 valid
    # rows costs ~4 min per epoch): the last epoch's adapter is kept. Scoring: every row on the full test split,
    # warm and cold reusing those scores. (A 1,000-row sample of whole users held 22 users, and redrawing it moved
    # AUC by +-0.03 and UAUC by +-0.05, one sd: too noisy to compare a row with the paper.) A resume point every
    # 50 steps bounds what an interruption loses to a few minutes of training.
    "cpu": {
        "collab": ["run.device=cpu"],
        "llm": ["run.max_train_rows=0", "model.lora_config.layers_to_transform=[]", "run.valid_splits=[]",
                "run.device=cpu", "run.save_every_steps=50"],
        "eval": ["run.device=cpu"],
        "full_test": ["run.max_eval_rows=0"],
        "sub_test": ["run.max_eval_rows=0"],
    },
    # The shipped recipes at full data, for a GPU: all train rows, LoRA in every layer, model selection on
    # valid_small after every epoch, every split scored in full. Not the paper's protocol: it keeps the configs'
    # Yes-minus-No score, learning rates and short schedules (100-420 steps, patience 2-3), tuned for SmolLM2.
    "full": {
        "collab": [],
        "llm": ["run.max_train_rows=0", "run.valid_splits=[valid]", "model.lora_config.layers_to_transform=[]"],
        "eval": [],
        "full_test": ["run.max_eval_rows=0"],
        "sub_test": ["run.max_eval_rows=0"],
    },
    # The paper's protocol, key by key (minigpt4/protocols/paper.yaml, docs/PAPER_PROTOCOL.md): the raw Yes logit,
    # upstream learning rates, schedules (up to 200-1000 epochs of 50-100 steps), global batches of upstream's 2-GPU
    # runs, LoRA in every layer, model selection on valid_small after every epoch with patience 20. Each step's
    # settings are added per method by plan(); a 7B backbone on GPUs (--llama).
    "paper": {
        "collab": [], "llm": [], "eval": [],
        "full_test": ["run.max_eval_rows=0"],
        "sub_test": ["run.max_eval_rows=0"],
    },
}

# Speeds for the printed estimate of the cpu budget (2 cores, SmolLM2-135M, fp32), measured in this budget's runs
# on ML-1M: scoring 4.6 prompts/s for titles only, about 3 with codes; training with LoRA in every layer 2 rows/s
# for titles only, about 1.2 with codes; stage-0 minutes of each encoder on all of ML-1M (BinMF 0.4, MF 2.5,
# LightGCN 0.7, SASRec 1.5, DIN 1.2), rounded up.
CPU_SPEED = {"score_rows_per_s": 3.5, "train_s_per_row": 0.65,
             "encoder_min": {"hash": 1, "MF": 3, "lightgcn": 1, "sasrec": 2, "DIN": 2}}

# Published numbers (docs PAPER_RESULTS.md): BinLLM ACL 2024 Table 2 / Table 3, test (AUC, UAUC).
PAPER = {
    "ML-1M": {
        "mf": (0.6482, 0.6361), "lightgcn": (0.5959, 0.6499), "sasrec": (0.7078, 0.6884), "din": (0.7166, 0.6459),
        "ctrl": (0.7159, 0.6492), "icl": (0.5320, 0.5268), "softprompt": (0.7071, 0.6739),
        "tallrec": (0.7097, 0.6818), "personprompt": (0.7214, 0.6563), "collm_mf": (0.7295, 0.6875),
        "collm_din": (0.7243, 0.6897), "binllm": (0.7425, 0.6956), "binmf": (0.7189, 0.6654),
        "binllm_io": (0.7307, 0.6797), "binllm_it": (0.7286, 0.6842),
    },
    "Book": {
        "mf": (0.7134, 0.5565), "lightgcn": (0.7103, 0.5639), "sasrec": (0.6887, 0.5714), "din": (0.8163, 0.6145),
        "ctrl": (0.8202, 0.5996), "icl": (0.4820, 0.4856), "softprompt": (0.7224, 0.5881),
        "tallrec": (0.7375, 0.5983), "personprompt": (0.7273, 0.5956), "collm_mf": (0.8109, 0.6225),
        "collm_din": (0.8245, 0.6474), "binllm": (0.8264, 0.6319), "binmf": (0.8087, 0.5895),
        "binllm_io": (0.8173, 0.5919), "binllm_it": (0.8246, 0.6165),
    },
}
# Figure 2 (warm / cold) and Figure 3 (compression) give no numbers: values read off the bars (about ±0.005).
PAPER_WARM_COLD = {
    "ML-1M": {("mf", "warm"): (0.727, 0.662), ("tallrec", "warm"): (0.724, 0.699),
              ("collm_mf", "warm"): (0.754, 0.704), ("binllm", "warm"): (0.764, 0.712),
              ("mf", "cold"): (0.553, 0.559), ("tallrec", "cold"): (0.686, 0.600),
              ("collm_mf", "cold"): (0.694, 0.583), ("binllm", "cold"): (0.710, 0.643)},
    "Book": {("mf", "warm"): (0.783, 0.571), ("tallrec", "warm"): (0.737, 0.580),
             ("collm_mf", "warm"): (0.821, 0.623), ("binllm", "warm"): (0.831, 0.637),
             ("mf", "cold"): (0.530, 0.508), ("tallrec", "cold"): (0.721, 0.640),
             ("collm_mf", "cold"): (0.782, 0.630), ("binllm", "cold"): (0.795, 0.614)},
}
PAPER_COMPRESSION = {
    "ML-1M": {"binllm": (0.742, 0.695), "binllm_ipv4": (0.743, 0.686)},
    "Book": {"binllm": (0.826, 0.632), "binllm_ipv4": (0.825, 0.630)},
}

# The report's tables: (title, note, rows); a row is (label, step or None when not implemented, split, paper key
# or None, paper source). Steps without a paper number (CoLLM-LightGCN / -SASRec, code lengths 16 and 64) show "–".
TABLES = [
    ("Table 2: main comparison (test)", "", [
        ("MF", "mf", "test", "mf", "t"), ("LightGCN", "lightgcn", "test", "lightgcn", "t"),
        ("SASRec", "sasrec", "test", "sasrec", "t"), ("DIN", "din", "test", "din", "t"),
        ("CTRL (DIN)", None, "test", "ctrl", "t"), ("ICL (zero-shot)", "icl", "test", "icl", "t"),
        ("Prompt4NR (soft prompt)", "softprompt", "test", "softprompt", "t"),
        ("TALLRec", "tallrec", "test", "tallrec", "t"), ("PersonPrompt", "personprompt", "test", "personprompt", "t"),
        ("CoLLM-MF", "collm_mf", "test", "collm_mf", "t"),
        ("CoLLM-LightGCN", "collm_lightgcn", "test", None, "t"),
        ("CoLLM-SASRec", "collm_sasrec", "test", None, "t"),
        ("CoLLM-DIN", "collm_din", "test", "collm_din", "t"), ("BinLLM", "binllm", "test", "binllm", "t")]),
    ("Table 3: ablations (test)", "", [
        ("BinMF", "binmf", "test", "binmf", "t"), ("BinLLM-TO (= TALLRec)", "tallrec", "test", "tallrec", "t"),
        ("BinLLM-IO", "binllm_io", "test", "binllm_io", "t"), ("BinLLM-IT", "binllm_it", "test", "binllm_it", "t"),
        ("BinLLM", "binllm", "test", "binllm", "t")]),
    ("Figure 2: warm / cold", "Paper values read off the figure (≈, ±0.005).", [
        (f"{name} {subset}", step, f"test_{subset}", (step, subset), "wc")
        for subset in ("warm", "cold")
        for name, step in (("MF", "mf"), ("TALLRec", "tallrec"), ("CoLLM-MF", "collm_mf"), ("BinLLM", "binllm"))]),
    ("Figure 3: compression, binary vs dot-decimal codes (test)", "Paper values read off the figure (≈, ±0.005).", [
        ("BinLLM binary", "binllm", "test", "binllm", "c"),
        ("BinLLM dot-decimal (IPv4)", "binllm_ipv4", "test", "binllm_ipv4", "c")]),
    ("Code length (test)", "The paper reports 32 bits only (Table 2's BinLLM row and Table 3's BinMF row). The "
     "BinMF rows are the encoders whose codes the BinLLM rows read.", [
        ("BinMF 16 bits", "binmf16", "test", None, "t"), ("BinMF 32 bits", "binmf", "test", "binmf", "t"),
        ("BinMF 64 bits", "binmf64", "test", None, "t"),
        ("BinLLM 16 bits", "binllm16", "test", None, "t"), ("BinLLM 32 bits", "binllm", "test", "binllm", "t"),
        ("BinLLM 64 bits", "binllm64", "test", None, "t")]),
]
# The name a step has in the first table that lists it.
STEP_LABEL = {}
for _title, _note, _rows in TABLES:
    for _label, _step, *_ in _rows:
        STEP_LABEL.setdefault(_step, _label)


@dataclass
class Step:
    name: str
    stage: str            # collab | llm | eval: the cli stage (pretrain_collab.py / train_*.py / eval.py)
    config: str           # the shipped config it runs
    overrides: list       # --options, in order: the config's own changes, wiring, budget
    depends: list = field(default_factory=list)
    full_test: bool = True
    machine_keys: tuple = ()  # keys set by --options: machine settings, ignored when judging a run stale


def _paper(dataset, source, key):
    if key is None:
        return None
    table = {"t": PAPER, "wc": PAPER_WARM_COLD, "c": PAPER_COMPRESSION}[source][DATASETS[dataset]["paper"]]
    return table.get(key)


def budget_folder(budget, llama):
    """`cpu`, or `cpu-gemma3-270m` for another named backbone (one with its own train_configs/backbones/ file), so
    each backbone's runs and report live apart. A directory or file backbone keeps the budget's folder."""
    if llama and llama != EMBEDDED_LLM and backbone_profile(llama).stem == llama:
        return f"{budget}-{llama}"
    return budget


def plan(dataset, budget, out, data=None, llama=None, only=None, options=()):
    """The ordered steps of a reproduction, with every dependency wired to the runs of this reproduction.

    `options` (key=value) go last on every LLM and eval step, after the budget: settings of the machine, such as
    run.batch_size_eval or run.amp, that change speed, not the protocol."""
    if dataset not in DATASETS:
        raise ReproduceError(f"--dataset {dataset!r}: choose one of {sorted(DATASETS)}")
    if budget not in BUDGETS:
        raise ReproduceError(f"--budget {budget!r}: choose one of {sorted(BUDGETS)}")
    ds, b = DATASETS[dataset], BUDGETS[budget]
    runs = Path(out) / dataset / budget_folder(budget, llama) / "runs"
    data = Path(data or ROOT / ds["data"])
    steps = {}
    for name, (stage, method, extra) in STEPS.items():
        config = ROOT / "train_configs" / f"{ds['prefix']}_{method}.yaml"
        if not config.is_file():
            raise ReproduceError(f"step {name}: config {config} is missing (every method needs one per dataset)")
        shipped = OmegaConf.load(config)
        common = [f"datasets.{ds['key']}.path={data}", f"run.output_dir={runs}", f"run.job_id={name}"]
        # the paper budget's settings of this method, then the step's own (a code length) again on top
        upstream = protocol.overrides(dataset, stage, method) + extra if budget == "paper" else []
        depends, wiring = [], []
        if stage != "collab":
            model = OmegaConf.merge(shipped, OmegaConf.from_dotlist(upstream)).get("model", {})
            # Wire the dependencies to this reproduction's runs, never to the configs' default paths.
            if model.get("ckpt"):
                depends.append(STAGE1_STEP)
                wiring.append(f"model.ckpt={runs / STAGE1_STEP / 'checkpoint_best'}")
            if model.get("rec_config", {}).get("pretrained_path"):
                enc = ENCODER_STEP[model.rec_model]
                if name in ("binllm16", "binllm64"):
                    enc = "binmf" + name[len("binllm"):]
                depends.append(enc)
                wiring.append(f"model.rec_config.pretrained_path={runs / enc / 'rec_model.pth'}")
            if llama:
                wiring.append(f"model.llama_model={llama}")
            wiring.append(LLM_TEST_SPLITS)
        full = stage == "collab" or name in FULL_TEST_STEPS
        kind = [] if stage == "collab" else b["full_test" if full else "sub_test"]
        mine = [] if stage == "collab" else list(options)
        steps[name] = Step(name, stage, str(config), extra + common + wiring + b[stage] + upstream + kind + mine,
                           depends, full, tuple(o.split("=", 1)[0] for o in mine))
    if only:
        unknown = [s for s in only if s not in steps]
        if unknown:
            raise ReproduceError(f"--only: unknown step(s) {unknown}; steps are {list(steps)}")
        wanted, todo = set(), list(only)
        while todo:  # a listed step brings the steps it reads
            s = todo.pop()
            if s not in wanted:
                wanted.add(s)
                todo.extend(steps[s].depends)
        steps = {k: v for k, v in steps.items() if k in wanted}
    return list(steps.values()), runs, data


def check_data(dataset, data):
    if not any((data / f"train_ood2.{ext}").is_file() for ext in ("pkl", "parquet")):
        raise ReproduceError(
            f"no processed {dataset} data in {data} (train_ood2.pkl is missing): build it with prepare_data.py "
            f"(README, 'Preparing data') or pass --data DIR pointing at the processed files")


def estimate_minutes(step, dataset):
    """Rough minutes of a step under the cpu budget (see CPU_SPEED)."""
    cfg = OmegaConf.merge(OmegaConf.load(step.config), OmegaConf.from_dotlist(step.overrides))
    if step.stage == "collab":
        return CPU_SPEED["encoder_min"].get(cfg.model.rec_model, 3)
    run = cfg.run
    train = 0 if step.stage == "eval" else run.max_epoch * run.iters_per_epoch * run.batch_size_train
    n_test = DATASETS[dataset]["test_rows"]
    # warm and cold are rows of the scored test rows: each prompt is scored once (the runner's memo)
    scored = min(run.max_eval_rows or n_test, n_test)
    return (train * CPU_SPEED["train_s_per_row"] + scored / CPU_SPEED["score_rows_per_s"]) / 60


def print_plan(steps, dataset, budget, runs, stale=None, llama=None):
    stale = stale or {}
    print(f"reproduction of {dataset}, budget {budget}: {len(steps)} steps under {runs}")
    total, train_rows, score_rows = 0.0, 0, 0
    for i, s in enumerate(steps, 1):
        done = (runs / s.name / "metrics.json").is_file() and s.name not in stale
        est = ""
        if budget == "cpu" and not done:
            m = estimate_minutes(s, dataset)
            total += m
            est = f" ~{m:.0f} min"
        state = "done, reused" if done else "to run again" if s.name in stale else "to run"
        print(f"  {i:2d}. {s.name:15s} {s.stage:6s} {Path(s.config).name:28s} after {','.join(s.depends) or '-':16s}"
              f" [{state}]{est}")
        if budget == "paper" and s.stage != "collab":
            cfg = load_config(s.config, s.overrides)
            sch = protocol.schedule(dataset, s.stage, cfg)
            if s.stage == "llm":
                print(f"      lr {cfg.run.init_lr:g}, up to {sch['epochs']} epochs x {cfg.run.iters_per_epoch} steps of "
                      f"{sch['batch']} rows = {sch['train_rows']:,} rows; {cfg.model.score_type} score; valid_small "
                      f"after every epoch, patience {sch['patience']}; test {protocol.SIZES[dataset]['test']:,} rows")
            if not done:
                train_rows += sch["train_rows"]
                score_rows += sch["score_rows"]
        if s.name in stale:
            print(f"      {stale[s.name]}")
    if budget == "cpu":
        print(f"estimated time of the steps to run: ~{total / 60:.1f} h on 2 CPU cores (rough, see CPU_SPEED)")
    if budget == "paper":
        body, how = protocol.body_parameters(llama)
        hours = protocol.gpu_hours(dataset, train_rows, score_rows, body)
        print(f"upper bound of the LLM steps to run: {train_rows:,} rows trained, {score_rows:,} rows scored "
              f"(every epoch run; early stopping usually ends sooner). Backbone: {how}.")
        print("GPU-hours, projected from the dense bf16 peak at "
              f"{protocol.ASSUMED_MFU['train']:.0%} (training) / {protocol.ASSUMED_MFU['score']:.0%} (scoring) "
              "utilisation, assumed, not measured:")
        print("   " + "; ".join(f"{gpu} ~{h:,.0f} h" for gpu, h in hours.items()))
        print("   the encoders (stage 0) add minutes; docs/PAPER_PROTOCOL.md lists every setting and its source")
    sys.stdout.flush()


def _aside(path, why="incomplete"):
    n = 1
    while path.with_name(f"{path.name}.{why}-{n}").exists():
        n += 1
    target = path.with_name(f"{path.name}.{why}-{n}")
    path.rename(target)
    return target


# Keys in which a run's config.yaml differs from its plan by design: the user / item counts the runner derives
# from the splits, the resume point a resumed run was given, and the precision settings, which belong to the
# machine (bf16 moves scores within rounding; each run's metrics.json records what it computed in).
DERIVED_KEYS = {"model.user_num", "model.item_num", "model.rec_config.user_num", "model.rec_config.item_num",
                "run.resume_ckpt_path", "run.dtype", "run.amp", "run.compile"}


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(step, path):
    """The settings in which the run in `path` differs from what the plan would run now: {key: (then, now)}.

    A shipped config edited after its step ran, or a budget that changed, would otherwise leave a stale row in the
    report. Machine settings given with --options and the keys the runner derives from the data are ignored.
    Empty when the run left no config.yaml to compare with."""
    saved = path / "config.yaml"
    if not saved.is_file():
        return {}
    then = _flat(OmegaConf.to_container(OmegaConf.load(saved)))
    now = _flat(OmegaConf.to_container(load_config(step.config, step.overrides)))
    ignore = DERIVED_KEYS | set(step.machine_keys)
    return {k: (then.get(k), now.get(k)) for k in sorted(set(then) | set(now))
            if k not in ignore and then.get(k) != now.get(k)}


def stale_steps(steps, runs):
    """{step: why} for the runs that exist but must run again: their settings changed (changed_keys), or a step
    they read will run (again), so what they read would change under them."""
    stale, will_run = {}, set()
    for step in steps:
        path = runs / step.name
        changed = changed_keys(step, path) if path.exists() else {}
        reread = [d for d in step.depends if d in will_run]
        if changed:
            shown = "; ".join(f"{k}: {then!r} -> {now!r}" for k, (then, now) in list(changed.items())[:4])
            more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
            stale[step.name] = f"settings changed since it ran: {shown}{more}"
        elif reread and path.exists():
            stale[step.name] = f"it reads {', '.join(reread)}, which run(s) again"
        if step.name in stale or not (path / "metrics.json").is_file():
            will_run.add(step.name)
    return stale


def run_step(step, runs, stale=None):
    """Run one step unless its metrics.json exists; returns 'reused', 'resumed' or 'ran'. `stale`: why an existing
    run must run again (stale_steps); it is moved aside first, kept for inspection."""
    path = runs / step.name
    if stale and path.exists():
        print(f"[{step.name}] {stale}: the old run moved to {_aside(path, 'stale')}")
    if (path / "metrics.json").is_file():
        print(f"[{step.name}] reusing {path}")
        return "reused"
    missing = [d for d in step.depends if not (runs / d / "metrics.json").is_file()]
    if missing:
        raise ReproduceError(f"step {step.name} needs the finished run(s) {missing} under {runs}")
    argv = ["--cfg-path", step.config, "--options", *step.overrides]
    how = "ran"
    if path.exists():
        # No metrics.json: the run was interrupted. An LLM training run that saved a resume point continues from
        # it with its own resolved config; anything else starts again, the old directory kept for inspection.
        if step.stage == "llm" and (path / "resume" / "latest").is_file() and (path / "config.yaml").is_file():
            argv = ["--cfg-path", str(path / "config.yaml"), "--options", f"run.resume_ckpt_path={path}"]
            how = "resumed"
            print(f"[{step.name}] resuming the interrupted run {path}")
        else:
            print(f"[{step.name}] {path} has no metrics.json and no resume point: moved to {_aside(path)}")
    print(f"[{step.name}] {step.stage}: {step.config} --options {' '.join(step.overrides)}")
    sys.stdout.flush()
    try:
        cli.main(step.stage, f"reproduce: {step.name}", argv)
    except SystemExit as err:
        raise ReproduceError(f"step {step.name} ({step.config}) stopped with status {err.code}; its message is "
                             f"above. Fix it and run the same command again: finished steps are reused") from None
    if not (path / "metrics.json").is_file():
        raise ReproduceError(f"step {step.name} finished without writing {path / 'metrics.json'}")
    return how


# ----------------------------------------------------------------------------------------------- the report

def collect(runs, steps, stale=()):
    """{step: metrics dict} of every finished run that is not stale (its numbers no longer describe the plan)."""
    out = {}
    for s in steps:
        f = runs / s / "metrics.json"
        if s in stale:
            continue
        if f.is_file():
            out[s] = json.loads(f.read_text(encoding="utf-8"))
    return out


def _fmt(x, signed=False):
    if x is None:
        return "–"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _diff(a, b):
    return None if a is None or b is None else a - b


def load_test_predictions(runs, metrics):
    """{step: its predictions_test.csv} of every finished LLM row, in STEPS order: read once per report."""
    import pandas as pd

    return {s: pd.read_csv(runs / s / "predictions_test.csv") for s in STEPS
            if s in metrics and STEPS[s][0] != "collab" and (runs / s / "predictions_test.csv").is_file()}


def same_rows(preds, metrics):
    """Every finished LLM row on the test subsample the subsampled rows were scored on: [(step, auc, uauc, rows)].
    `preds`: load_test_predictions().

    The subsampled rows (cpu budget) and the full-test rows score different rows, and the subsample is not a
    miniature of the test split (it holds whole users, so its warm/cold mix differs). Restricting the full-test
    rows' predictions to the subsample's (user, item) pairs puts every LLM row on the same rows. Empty when no
    subsampled row has finished or nothing was subsampled."""
    from minigpt4.metrics import evaluate_scores

    sampled = [s for s in preds if s not in FULL_TEST_STEPS]
    full = [s for s in preds if s in FULL_TEST_STEPS]
    if not sampled or not full:
        return []
    pairs = preds[sampled[0]][["uid", "iid"]]
    if len(pairs) >= metrics[full[0]]["test"]["rows"]:
        return []
    out = []
    for step, frame in preds.items():
        rows = pairs.merge(frame, on=["uid", "iid"], validate="one_to_one")
        m = evaluate_scores(rows["uid"].to_numpy(), rows["label"].to_numpy(), rows["score"].to_numpy())
        out.append((step, m["auc"], m["uauc"], len(rows)))
    return out


def sample_spread(preds, n, draws=50):
    """How much drawing the test subsample alone moves a row: [(step, sd AUC, sd UAUC)] of each full-test LLM row
    over `draws` redraws (seeds 0..draws-1) of an n-row subsample of whole users, the way the runner draws it.
    `preds`: load_test_predictions().

    The subsampled rows' differences from the paper (which scored the whole split) are only meaningful beyond this
    spread; the full-test rows' predictions measure it for free."""
    import numpy as np

    from minigpt4.data.splits import subsample
    from minigpt4.metrics import evaluate_scores

    out = []
    for step, frame in preds.items():
        if step not in FULL_TEST_STEPS or n >= len(frame):
            continue
        values = []
        for seed in range(draws):
            d = subsample(frame, n, seed)
            m = evaluate_scores(d["uid"].to_numpy(), d["label"].to_numpy(), d["score"].to_numpy())
            values.append((m["auc"], m["uauc"]))
        sd = np.nanstd(np.array(values, dtype=float), axis=0)
        out.append((step, float(sd[0]), float(sd[1])))
    return out


def provenance(env):
    """One line on the code a report's runs came from (environment.json's commit and whether the tree was clean)."""
    if not env or not env.get("git_commit"):
        return "Code: unknown (no git commit recorded)."
    if env.get("git_dirty"):
        return (f"**Code: commit `{env['git_commit'][:10]}` plus uncommitted changes** (environment.json: git_dirty "
                "true), so no commit reproduces these runs exactly.")
    return f"Code: commit `{env['git_commit'][:10]}`, clean tree."


def warm_cold_note(metrics, steps):
    """Which rows each step's test_warm / test_cold held (run.warm_rule / run.cold_rule, recorded in metrics.json)."""
    parts = []
    for step in dict.fromkeys(s for s in steps if s in metrics):
        r = metrics[step].get("warm_cold_rules")
        parts.append(f"{step} {r['warm_rule']} / {r['cold_rule']}" if r else f"{step} not recorded (run before "
                     "run.warm_rule existed: the dataset builder's rule / not_cold)")
    return ("Warm / cold rules (run.warm_rule / run.cold_rule): " + "; ".join(parts) + "." if parts
            else "Warm / cold rules: no finished step yet.")


def report_markdown(dataset, budget, metrics, same=(), spread=(), stale=(), llama=None, env=None):
    lines = [f"# Reproduction of BinLLM (ACL 2024) on {dataset}, budget `{budget}`", "",
             f"Backbone of the LLM rows: `{llama or EMBEDDED_LLM}`. {provenance(env)}", "",
             "Ours: `runs/<step>/metrics.json`. Paper: BinLLM Tables 2-3 and Figures 2-3 (docs/PAPER_RESULTS.md). "
             "Difference = ours − paper. `rows` = test rows scored (a subsample when below the split's size). "
             "The budget's overrides are listed in `minigpt4/reproduce.py` (BUDGETS); each run's resolved config is "
             "`runs/<step>/config.yaml`.", ""]
    if budget == "smoke":
        lines += ["**Smoke budget: a few training steps on tiny samples; it checks the pipeline, its numbers mean "
                  "nothing.**", ""]
    done = sum(step in metrics for step in STEPS)
    lines += [f"Steps finished: {done} of {len(STEPS)}"
              + (f" (the others show `not run`{' or `to run again`' if stale else ''}; the same command continues the "
                 "reproduction)." if done < len(STEPS)
                 else "."), ""]
    if budget != "smoke":
        target, ours = PAPER[DATASETS[dataset]["paper"]]["binllm"], metrics.get("binllm", {}).get("test")
        paper = f"{target[0]:.4f} / {target[1]:.4f} test AUC / UAUC"
        head = (f"Target of the cpu budget: BinLLM at or above the paper's {paper} (Vicuna-7B). " if budget == "cpu"
                else f"The paper's BinLLM (Vicuna-7B): {paper}. ")
        lines += [head
                  + (f"Ours: {ours['auc']:.4f} / {ours['uauc']:.4f}, that is {ours['auc'] - target[0]:+.4f} / "
                     f"{ours['uauc'] - target[1]:+.4f} from it, over {ours['rows']} test rows."
                     if ours else "BinLLM has not finished yet."), ""]
    for title, note, rows in TABLES:
        lines += [f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += ["| method | step | ours AUC | ours UAUC | paper AUC | paper UAUC | Δ AUC | Δ UAUC | rows |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, step, split, key, source in rows:
            paper = _paper(dataset, source, key) or (None, None)
            # values read off a figure keep the 3 decimals they were read with
            p = [("≈" + f"{v:.3f}" if source in ("wc", "c") else _fmt(v)) if v is not None else "–" for v in paper]
            if step is None:
                lines.append(f"| {label} | – | not implemented | not implemented | {p[0]} | {p[1]} | – | – | – |")
                continue
            m = metrics.get(step, {}).get(split)
            if m is None:
                # e.g. a split this run did not score
                why = ("to run again" if step in stale else "not run") if step not in metrics else f"no {split}"
                lines.append(f"| {label} | {step} | {why} | {why} | {p[0]} | {p[1]} | – | – | – |")
                continue
            lines.append(f"| {label} | {step} | {_fmt(m.get('auc'))} | {_fmt(m.get('uauc'))} | {p[0]} | {p[1]} | "
                         f"{_fmt(_diff(m.get('auc'), paper[0]), True)} | {_fmt(_diff(m.get('uauc'), paper[1]), True)} | "
                         f"{m.get('rows', '–')} |")
        if any(split.startswith("test_") for _, _, split, _, _ in rows):
            lines += ["", warm_cold_note(metrics, [r[1] for r in rows])]
        lines.append("")
    if same:
        lines += ["## The LLM rows on the same test rows", "",
                  f"Every finished LLM row on the same {same[0][3]} test rows: the subsample the subsampled rows "
                  "were scored on, with the predictions of the rows scored on the full split restricted to its "
                  "(user, item) pairs. Compare the rows of this table with each other, not with the tables above: "
                  "the subsample holds whole users, so its warm/cold mix differs from the full split's.", "",
                  "| method | step | AUC | UAUC | rows |", "|---|---|---|---|---|"]
        lines += [f"| {STEP_LABEL.get(step, step)} | {step} | {auc:.4f} | {uauc:.4f} | {n} |" for step, auc, uauc, n in same]
        lines.append("")
        if spread:
            on_sample = {step: (auc, uauc) for step, auc, uauc, _ in same}
            lines += [f"How much the draw of the sample alone moves a row: the standard deviation of the full-test "
                      f"rows' AUC / UAUC over 50 redraws of a {same[0][3]}-row sample of whole test users, and how "
                      "far this sample puts them from their full-split values. A subsampled row's difference from "
                      "the paper means little within about twice that spread.", "",
                      "| method | step | sd AUC | sd UAUC | this sample − full split, AUC | UAUC |",
                      "|---|---|---|---|---|---|"]
            for step, sd_auc, sd_uauc in spread:
                full, here = metrics[step]["test"], on_sample.get(step)
                shift = (f"{here[0] - full['auc']:+.4f} | {here[1] - full['uauc']:+.4f}" if here else "– | –")
                lines.append(f"| {STEP_LABEL.get(step, step)} | {step} | ±{sd_auc:.4f} | ±{sd_uauc:.4f} | {shift} |")
            lines.append("")
    return "\n".join(lines)


def results_csv(metrics):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "split", "auc", "uauc", "rows", "users"])
    for step, splits in metrics.items():
        for split, m in splits.items():
            if isinstance(m, dict) and "auc" in m:
                w.writerow([step, split, m.get("auc"), m.get("uauc"), m.get("rows"), m.get("users")])
    return buf.getvalue()


def environment_info(dataset, budget, llama, options=()):
    import torch

    info = environment(seed=None)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    info.update(dataset=dataset, budget=budget, options=list(options),
                backbone=llama or "the configs' model.llama_model (smollm2: the embedded SmolLM2-135M)",
                hardware={"machine": platform.machine(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": gpus})
    return info


def _bars(ax, labels, ours, paper, title):
    """Ours as bars, the paper's value of the same row as a black marker."""
    xs = range(len(labels))
    ax.bar(xs, [v if v is not None else 0 for v in ours], color="tab:blue", label="ours")
    px = [x for x, v in zip(xs, paper) if v is not None]
    ax.scatter(px, [v for v in paper if v is not None], color="black", marker="_", s=300, zorder=3, label="paper")
    ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=8)
    values = [v for v in list(ours) + list(paper) if v is not None]
    ax.set_ylim(min([0.4] + [v - 0.05 for v in values]), max([0.9] + [v + 0.05 for v in values]))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)


def write_figures(folder, dataset, metrics):
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    def figure(name, rows):
        fig, axes = plt.subplots(2, 1, figsize=(max(5, 0.55 * len(rows) + 2), 8))
        for i, (ax, metric) in enumerate(zip(axes, ("AUC", "UAUC"))):
            ours = [(metrics.get(step, {}).get(split) or {}).get(metric.lower()) if step else None
                    for _, step, split, _, _ in rows]
            paper = [(_paper(dataset, src, key) or (None, None))[i] for _, _, _, key, src in rows]
            _bars(ax, [r[0] for r in rows], ours, paper, f"{dataset} {metric}")
        fig.tight_layout()
        atomic_write(folder / name, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
        plt.close(fig)

    figure("methods.png", TABLES[0][2] + TABLES[1][2][:1] + TABLES[1][2][2:4])
    figure("warm_cold.png", TABLES[2][2])
    figure("compression.png", TABLES[3][2])
    figure("code_length.png", TABLES[4][2])


def write_report(folder, dataset, budget, llama, options=(), ran_here=True, stale=()):
    """`ran_here`: steps ran on this machine in this invocation. Otherwise an existing environment.json is kept: it
    describes the machine and command that ran them (a report rewritten elsewhere must not claim this machine).
    `stale`: finished steps whose numbers no longer describe the plan (stale_steps); reported as to run again."""
    metrics = collect(folder / "runs", list(STEPS), stale)
    preds = load_test_predictions(folder / "runs", metrics)
    same = same_rows(preds, metrics)
    spread = sample_spread(preds, same[0][3]) if same else []
    env = folder / "environment.json"
    if ran_here or not env.is_file():
        atomic_text(env, json.dumps(environment_info(dataset, budget, llama, options), indent=2) + "\n")
    info = json.loads(env.read_text(encoding="utf-8"))
    atomic_text(folder / "report.md", report_markdown(dataset, budget, metrics, same, spread, stale, llama, info))
    atomic_text(folder / "results.csv", results_csv(metrics))
    write_figures(folder, dataset, metrics)
    print(f"report: {folder / 'report.md'} (+ results.csv, environment.json, methods.png, warm_cold.png, "
          f"compression.png, code_length.png)")


def reproduce(dataset, budget, out="results", data=None, llama=None, only=None, options=(), dry=False,
              report_only=False):
    """Run the plan (reusing finished steps) and write the report. Returns {step: 'reused' | 'resumed' | 'ran'}.
    `dry`: print the plan and its estimate only. `report_only`: write the report of the finished steps only (after
    a reproduction was killed before it could write one)."""
    steps, runs, data = plan(dataset, budget, out, data, llama, only, options)
    if dry and not runs.exists():  # a plan needs no data: nothing has run yet
        print_plan(steps, dataset, budget, runs, llama=llama)
        return {}
    check_data(dataset, data)
    # judged on the whole plan, so the report leaves out stale rows outside --only too
    stale = stale_steps(plan(dataset, budget, out, data, llama, None, options)[0], runs)
    print_plan(steps, dataset, budget, runs, stale, llama)
    if report_only:
        write_report(runs.parent, dataset, budget, llama, options, ran_here=False, stale=stale)
    if dry or report_only:
        return {}
    runs.mkdir(parents=True, exist_ok=True)
    done = {}
    try:
        for step in steps:
            done[step.name] = run_step(step, runs, stale.get(step.name))
    finally:  # whatever finished is reported, also when a step fails
        write_report(runs.parent, dataset, budget, llama, options,
                     ran_here=any(how != "reused" for how in done.values()), stale=set(stale) - set(done))
    return done


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Reproduce BinLLM's tables: every run, then report.md with the paper's "
                                            "numbers next to ours. Finished runs are reused.")
    p.add_argument("--dataset", default="ml-1m", choices=sorted(DATASETS))
    p.add_argument("--budget", default="cpu", choices=sorted(BUDGETS),
                   help="smoke: minutes, checks the wiring; cpu: ~13 h on 2 AVX2 cores with SmolLM2 in fp32 "
                        "(resumable); full: the shipped recipes on all data, for a GPU; paper: the upstream "
                        "protocol key by key (docs/PAPER_PROTOCOL.md), for a 7B backbone on GPUs")
    p.add_argument("--out", default="results", help="runs go to OUT/<dataset>/<budget>/runs/ (<budget>-<name> for a "
                                                    "named backbone other than smollm2), the report next to them")
    p.add_argument("--llama", help="backbone of the LLM rows: an embedded one (smollm2, gemma3-270m) or a Hugging Face "
                                   "directory or .gguf; default: the configs' smollm2")
    p.add_argument("--data", help="processed data directory (default data/ml-1m or data/amazon_book)")
    p.add_argument("--only", help="comma-separated steps to run (their dependencies are added), e.g. binmf,binllm")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides added last to every LLM step, for the machine's speed settings, e.g. "
                        "run.batch_size_eval=128")
    p.add_argument("--plan", action="store_true", help="print the steps, what is done and the time estimate; run nothing")
    p.add_argument("--report", action="store_true", help="write the report of the finished steps; run nothing")
    return p.parse_args(argv)


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    try:
        return reproduce(args.dataset, args.budget, args.out, args.data, args.llama, only, args.options,
                         dry=args.plan, report_only=args.report)
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
