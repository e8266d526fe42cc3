"""The plan of a reproduction: the ordered steps of a dataset and budget, each a shipped config with its
`--options` (the step's own, the wiring to this reproduction's runs, the budget's, the machine's), and the plan as
`--plan` prints it, with the time estimate. The ranking steps (steps.yaml ranking_steps) come after all others,
each wired to the finished run it ranks."""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from minigpt4 import protocol, stages
from minigpt4.config import EMBEDDED_LLM, REPO_ROOT, backbone_profile, compose, load_config
from minigpt4.config.reference import defaults as schema_defaults
from minigpt4.config.reference import read_by
from minigpt4.experiments.definitions import (
    ALL_STEPS,
    BUDGETS,
    CPU_SPEED,
    DATASETS,
    ENCODER_STEP,
    FULL_TEST_STEPS,
    LLM_TEST_SPLITS,
    RANKING_STEPS,
    STAGE1_STEP,
    STEPS,
    ReproduceError,
    seeded,
    takes_seed,
)
from minigpt4.experiments.records import rebuild_marker
from minigpt4.preflight import is_set


@dataclass
class Step:
    name: str
    stage: str            # the cli stage that runs it, a name in minigpt4/stages.py
    config: str           # the shipped config it runs
    overrides: list       # --options, in order: the config's own changes, wiring, budget
    depends: list = field(default_factory=list)
    full_test: bool = True
    machine_keys: tuple = ()  # keys set by --options: machine settings, ignored when judging a run stale
    ranks: str = None     # a ranking step's: the step whose finished run it ranks


def budget_folder(budget, llama):
    """`cpu`, or `cpu-gemma3-270m` for another named backbone (one with its own train_configs/backbones/ file), so
    each backbone's runs and report live apart. A directory or file backbone keeps the budget's folder."""
    if llama and llama != EMBEDDED_LLM and backbone_profile(llama).stem == llama:
        return f"{budget}-{llama}"
    return budget


def plan(dataset, budget, out, data=None, llama=None, only=None, options=(), seed=None):
    """The ordered steps of a reproduction, with every dependency wired to the runs of this reproduction.

    `options` (key=value) go last on every LLM, eval and ranking step, after the budget: settings of the machine,
    such as run.batch_size_eval or run.amp, that change speed, not the protocol. The ranking steps come last.
    `seed`: another seed of the LLM steps that train, each `<step>.seed<N>` (run.seed N) beside the step's own run,
    scoring the same rows (run.sample_seed kept) and reading the same encoders; a stage-2 step reads the stage-1
    adapter of its own seed. Ranking steps rank the steps' own runs, so such a plan has none."""
    if dataset not in DATASETS:
        raise ReproduceError(f"--dataset {dataset!r}: choose one of {sorted(DATASETS)}")
    if budget not in BUDGETS:
        raise ReproduceError(f"--budget {budget!r}: choose one of {sorted(BUDGETS)}")
    ds, b = DATASETS[dataset], BUDGETS[budget]
    if budget == "paper" and ds["paper"] is None:
        raise ReproduceError(f"--budget paper follows the paper's protocol for the datasets it reports; it has none "
                             f"for {dataset}: choose one of {sorted(set(BUDGETS) - {'paper'})}")
    runs = Path(out) / dataset / budget_folder(budget, llama) / "runs"
    data = Path(data or REPO_ROOT / ds["data"])
    steps = {}
    # the steps that take the seed: their runs are named <step>.seed<N>, and what reads them reads those
    named = (lambda n: seeded(n, seed) if takes_seed(n) else n) if seed is not None else (lambda n: n)
    for base, spec in ALL_STEPS.items():
        if seed is not None and spec.ranks:
            continue
        name = named(base)
        stage, extra, llm = spec.stage, list(spec.options), stages.get(spec.stage).llm
        config = REPO_ROOT / "train_configs" / f"{ds['prefix']}_{spec.method}.yaml"
        if not config.is_file():
            raise ReproduceError(f"step {base}: config {config} is missing (every method needs one per dataset)")
        common = [f"datasets.{ds['key']}.path={data}", f"run.output_dir={runs}", f"run.job_id={name}"]
        # the paper budget's settings of this method, then the step's own (a code length) again on top
        upstream = protocol.overrides(dataset, stage, spec.method) + extra if budget == "paper" else []
        depends, wiring = [], []
        model = OmegaConf.merge(compose(config), OmegaConf.from_dotlist(upstream)).get("model", {})
        # Wire the dependencies to this reproduction's runs, never to the configs' default paths: an LLM step's
        # stage-1 adapter and encoder, a stage-0 step's starting weights (CTRL: the aligned DIN).
        if llm and model.get("ckpt"):
            depends.append(named(STAGE1_STEP))
            wiring.append(f"model.ckpt={runs / named(STAGE1_STEP) / 'checkpoint_best'}")
        if is_set(model.get("rec_config", {}).get("pretrained_path", "")):  # upstream's not_have: none
            enc = spec.encoder or ENCODER_STEP[model.rec_model]
            depends.append(enc)
            wiring.append(f"model.rec_config.pretrained_path={runs / enc / 'rec_model.pth'}")
        if llama and stage in read_by("model.llama_model"):  # every stage that loads the backbone
            wiring.append(f"model.llama_model={llama}")
        if llm:
            wiring.append(LLM_TEST_SPLITS)
        if spec.ranks:  # a ranking step: the finished run it ranks
            depends.append(spec.ranks)
            wiring.append(f"run.rank_run={runs / spec.ranks}")
        full = not llm or base in FULL_TEST_STEPS  # an encoder scores every test row
        for_dataset = (b.get("datasets") or {}).get(dataset, {})  # appended after the budget's own lists
        budget_opts = b[stage] + for_dataset.get(stage, [])
        test_kind = "full_test" if full else "sub_test"
        kind = b[test_kind] + for_dataset.get(test_kind, []) if llm else []
        mine = list(options) if llm or spec.ranks else []
        overrides = extra + common + wiring + budget_opts + upstream + kind
        if name != base:
            overrides += _seed_options(config, overrides, seed, base)
        steps[name] = Step(name, stage, str(config), overrides + mine,
                           depends, full, tuple(o.split("=", 1)[0] for o in mine), spec.ranks)
    if only:
        if seed is not None:
            ranking = [s for s in only if s in RANKING_STEPS]
            if ranking:
                raise ReproduceError(f"--only {','.join(ranking)} with --seed: ranking steps rank each step's own "
                                     "run; run them without --seed")
            only = [named(s) for s in only]
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


def _seed_options(config, overrides, seed, base):
    """run.seed N and the sample seed the step's own run draws its rows with, so both seeds score the same rows
    and pair row by row."""
    run = OmegaConf.merge(compose(config), OmegaConf.from_dotlist(overrides)).get("run", {})
    own = run.get("seed", schema_defaults()["run.seed"])
    if seed == own:
        raise ReproduceError(f"--seed {seed}: it is the seed of {base}'s own run (run.seed in {Path(config).name}); "
                             "give another seed, or leave --seed out for the step's own runs")
    sample = run.get("sample_seed", schema_defaults()["run.sample_seed"])
    return [f"run.seed={seed}", f"run.sample_seed={own if sample < 0 else sample}"]


def check_data(dataset, data):
    if not any((data / f"train_ood2.{ext}").is_file() for ext in ("pkl", "parquet")):
        raise ReproduceError(
            f"no processed {dataset} data in {data} (train_ood2.pkl is missing): build it with prepare_data.py "
            "(docs/DATA.md, 'Preparing data from the original files') or pass --data DIR pointing at the processed "
            "files")


def estimate_minutes(step, dataset, score=True):
    """Rough minutes of a step under the cpu budget (see CPU_SPEED); without `score`, its training only (a
    rebuild)."""
    if step.ranks:  # a ranking step: each drawn positive with its negatives, scored as rows by the run it ranks
        return _ranking_minutes(load_config(step.config, step.overrides).run, step.ranks, dataset)
    cfg = OmegaConf.merge(compose(step.config), OmegaConf.from_dotlist(step.overrides))
    stage = stages.get(step.stage)
    encoder = CPU_SPEED["encoder_min"].get(OmegaConf.select(cfg, "model.rec_model"), CPU_SPEED["default_encoder_min"])
    if "ctrl" in stage.key_groups:  # CTRL's alignment: the backbone writes each aligned row's text view once
        rows = min(cfg.run.max_train_rows or DATASETS[dataset]["train_rows"], DATASETS[dataset]["train_rows"])
        return encoder + rows / CPU_SPEED["score_rows_per_s"] / 60
    if not stage.llm:
        return encoder
    run = cfg.run
    train = 0 if not stage.trains else run.max_epoch * run.iters_per_epoch * run.batch_size_train
    n_test = DATASETS[dataset]["test_rows"]
    # warm and cold are rows of the scored test rows: each prompt is scored once (the runner's memo)
    scored = min(run.max_eval_rows or n_test, n_test) if score else 0
    return (train * CPU_SPEED["train_s_per_row"] + scored / CPU_SPEED["score_rows_per_s"]) / 60


def _ranking_minutes(run, ranked, dataset):
    """An LLM ranks users x positives x (1 + negatives) rows at the cpu budget's scoring speed times the measured
    gain of scoring a user's candidates with their shared prompt prefix (cpu_speed.rank_speedup); an encoder takes
    about a minute. A setting of 0
    (every user, every positive) is bounded by the test split's rows."""
    if not stages.get(STEPS[ranked].stage).llm:
        return 1
    n_test = DATASETS[dataset]["test_rows"]
    positives = min(run.rank_users * run.rank_positives if run.rank_users and run.rank_positives else n_test, n_test)
    return positives * (1 + run.rank_negatives) / (CPU_SPEED["score_rows_per_s"] * CPU_SPEED["rank_speedup"]) / 60


def print_plan(steps, dataset, budget, runs, stale=None, llama=None, recorded=(), needed=()):
    """`recorded`: the steps with a record (records.py); `needed`: those of them that run again for their
    checkpoint (run.needed_steps)."""
    stale = stale or {}
    print(f"reproduction of {dataset}, budget {budget}: {len(steps)} steps under {runs}")
    total, train_rows, score_rows = 0.0, 0, 0
    name_w, stage_w = max([15, *(len(s.name) for s in steps)]), max([6, *(len(s.stage) for s in steps)])
    for i, s in enumerate(steps, 1):
        ran = (runs / s.name / "metrics.json").is_file()
        rebuilt = rebuild_marker(runs, s.name).is_file() and s.name in recorded
        done = (ran or (s.name in recorded and s.name not in needed)) and s.name not in stale
        est = ""
        if budget == "cpu" and not done:
            m = estimate_minutes(s, dataset, score=s.name not in needed)
            total += m
            est = f" ~{m:.0f} min"
        state = ("recorded (steps/); rebuilt here for its checkpoint" if done and rebuilt
                 else "done, reused" if done and ran else "recorded (steps/), reused" if done
                 else "to run again" if s.name in stale
                 else "recorded; trained again for its checkpoint (its row stays its record)" if s.name in needed
                 else "to run")
        print(f"  {i:2d}. {s.name:{name_w}s} {s.stage:{stage_w}s} {Path(s.config).name:28s} after "
              f"{','.join(s.depends) or '-':16s} [{state}]{est}")
        if budget == "paper" and stages.get(s.stage).llm:
            cfg = load_config(s.config, s.overrides)
            sch = protocol.schedule(dataset, s.stage, cfg)
            if stages.get(s.stage).trains:
                print(f"      lr {cfg.run.init_lr:g}, up to {sch['epochs']} epochs x {cfg.run.iters_per_epoch} "
                      f"steps of {sch['batch']} rows = {sch['train_rows']:,} rows; {cfg.model.score_type} score; "
                      f"valid_small after every epoch, patience {sch['patience']}; "
                      f"test {protocol.SIZES[dataset]['test']:,} rows")
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
