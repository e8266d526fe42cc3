"""Running a plan like make: a step whose `metrics.json` exists is reused, and so is a step with a record made on
another machine (records.py) unless a step that runs needs its checkpoint; an interrupted LLM run resumes from its
last resume point, and a finished run or record whose settings no longer match the plan (or that reads a run that
runs again) is set aside and run again. Each step runs in this process through `minigpt4.cli.main`. A ranking
step whose output directory holds candidates drawn with other settings (the plan's run.rank_* changed, so every
ranking step runs again) sets that file aside, and the first ranking step to run draws the candidates anew."""

import json
import sys

from minigpt4 import cli, stages
from minigpt4.experiments import records as rec
from minigpt4.experiments.definitions import ReproduceError

# Keys in which a run's config.yaml differs from its plan by design: the user / item counts the runner derives
# from the splits, the resume point a resumed run was given, and the precision settings, which belong to the
# machine (bf16 moves scores within rounding; each run's metrics.json records what it computed in).
DERIVED_KEYS = {"model.user_num", "model.item_num", "model.rec_config.user_num", "model.rec_config.item_num",
                "run.resume_ckpt_path", "run.dtype", "run.amp", "run.compile"}


def _aside(path, why="incomplete"):
    n = 1
    while path.with_name(f"{path.name}.{why}-{n}").exists():
        n += 1
    target = path.with_name(f"{path.name}.{why}-{n}")
    path.rename(target)
    return target


def changed_keys(step, path):
    """The settings in which the run in `path` differs from what the plan would run now: {key: (then, now)}.

    A shipped config edited after its step ran, or a budget that changed, would otherwise leave a stale row in the
    report. Machine settings given with --options and the keys the runner derives from the data are ignored.
    Empty when the run left no config.yaml to compare with."""
    saved = path / "config.yaml"
    if not saved.is_file():
        return {}
    from omegaconf import OmegaConf

    then = OmegaConf.to_container(OmegaConf.load(saved))
    return rec.config_changes(step, then, DERIVED_KEYS | set(step.machine_keys), paths=True)


def record_changes(step, record):
    """changed_keys() for a step's record (made on any machine, so the clone's paths are left out too)."""
    if not record.get("config"):
        return {}
    return rec.config_changes(step, record["config"], DERIVED_KEYS | set(step.machine_keys), paths=False)


def _metrics(path):
    return json.loads((path / "metrics.json").read_text(encoding="utf-8"))


def stale_steps(steps, runs, records=None):
    """{step: why} for the runs (and, without a run, the records) that exist but must run again: their settings
    changed (changed_keys), their scores were rounded (records.rounded_scores), or a step they read will run (again), so
    what they read would change under them. A recorded step that is only rebuilt for its checkpoint is not a step
    that runs again here: same settings."""
    records = records or {}
    stale, will_run = {}, set()
    for step in steps:
        path = runs / step.name
        finished = (path / "metrics.json").is_file()
        rebuild = rec.rebuild_marker(runs, step.name).is_file() and step.name in records
        record = records.get(step.name) if rebuild or not finished else None
        if path.exists() and not record:
            changed, what = changed_keys(step, path), "it ran"
        else:
            changed, what = (record_changes(step, record), "its record was made") if record else ({}, "")
        reread = [d for d in step.depends if d in will_run]
        done = record["metrics"] if record else _metrics(path) if finished else None
        if rec.rounded_scores(done):
            stale[step.name] = ("scored in bf16 before the score head was kept in fp32, so its scores were rounded "
                                "to bf16 (on ML-100K 4,000 rows took 16-44 distinct values): it runs again")
        elif changed:
            shown = "; ".join(f"{k}: {then!r} -> {now!r}" for k, (then, now) in list(changed.items())[:4])
            more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
            stale[step.name] = f"settings changed since {what}: {shown}{more}"
        elif reread and (path.exists() or record):
            stale[step.name] = f"it reads {', '.join(reread)}, which run(s) again"
        if step.name in stale or not (finished or record):
            will_run.add(step.name)
    return stale


def needed_steps(steps, runs, stale, records):
    """The recorded steps without a run here that must run again because a step that runs reads their checkpoint
    (a record holds numbers, not weights); with their own dependencies, transitively. A rebuild that finished has
    its checkpoint: no longer needed."""
    need = set()
    for step in reversed(steps):  # a step comes after what it reads
        finished = (runs / step.name / "metrics.json").is_file()
        no_usable_record = step.name not in records or step.name in need  # a needed record holds no weights
        if step.name in stale or (not finished and no_usable_record):
            need.update(step.depends)
    return {s for s in need if s in records and not (runs / s / "metrics.json").is_file()}


def _set_aside_other_candidates(step):
    """Move aside the candidates file a ranking step would read when it was drawn with other settings than the
    step's (rank.py refuses such a file); the old one is kept for inspection."""
    from minigpt4.config import load_config
    from minigpt4.recipes.rank import SETTINGS, candidates_path

    run = load_config(step.config, step.overrides).run
    path = candidates_path(run)
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8")).get("settings") or {}
    if any(saved.get(k) != int(run[k]) for k in SETTINGS):
        print(f"[{step.name}] {path} holds candidates drawn with other settings: moved to {_aside(path, 'stale')}")


def run_step(step, runs, stale=None, record=None, needed=False):
    """Run one step unless its metrics.json exists, or its `record` does and no step that runs needs its checkpoint
    (`needed`); returns 'reused', 'recorded', 'rebuilt', 'resumed' or 'ran'. `stale`: why an existing run or
    record must run again (stale_steps); an old run is moved aside first, kept for inspection."""
    path = runs / step.name
    if stale and path.exists():
        print(f"[{step.name}] {stale}: the old run moved to {_aside(path, 'stale')}")
    if stale:
        rec.rebuild_marker(runs, step.name).unlink(missing_ok=True)
    if (path / "metrics.json").is_file():
        print(f"[{step.name}] reusing {path}")
        return "reused"
    argv = ["--cfg-path", step.config, "--options", *step.overrides]
    how = "ran"
    if record and not stale:
        if not needed:
            print(f"[{step.name}] recorded in {rec.folder_of(runs) / (step.name + '.json')} (run on another machine)")
            return "recorded"
        # Trained again only for the checkpoint that a step to run reads: its row stays its record. An LLM step
        # is not scored (minutes of training instead of an hour more); an encoder is (seconds), so the report can
        # tell whether what the readers read matches the record.
        print(f"[{step.name}] recorded, but a step that runs reads its checkpoint, which a record does not hold: "
              "training it again (same settings; its row stays its record)")
        rec.mark_rebuild(runs, step.name, record)
        if stages.get(step.stage).llm and stages.get(step.stage).trains:
            argv.append("run.test_splits=[]")
        elif stages.get(step.stage).llm:  # trains nothing (ICL): the run directory is all a reader needs. The
            # least scoring that writes it, on valid so that no test number stands beside the record's
            argv += ["run.test_splits=[valid]", "run.max_eval_rows=40"]
        how = "rebuilt"
    missing = [d for d in step.depends if not (runs / d / "metrics.json").is_file()]
    if missing:
        raise ReproduceError(f"step {step.name} needs the finished run(s) {missing} under {runs}")
    if path.exists():
        # No metrics.json: the run was interrupted. An LLM training run that saved a resume point continues from
        # it with its own resolved config; anything else starts again, the old directory kept for inspection.
        resumable = (path / "resume" / "latest").is_file() and (path / "config.yaml").is_file()
        if stages.get(step.stage).resumes and resumable:
            argv = ["--cfg-path", str(path / "config.yaml"), "--options", f"run.resume_ckpt_path={path}"]
            how = "resumed" if how == "ran" else how
            print(f"[{step.name}] resuming the interrupted run {path}")
        else:
            print(f"[{step.name}] {path} has no metrics.json and no resume point: moved to {_aside(path)}")
    if step.ranks:
        _set_aside_other_candidates(step)
    print(f"[{step.name}] {step.stage}: {' '.join(argv)}")
    sys.stdout.flush()
    try:
        cli.main(step.stage, f"reproduce: {step.name}", argv)
    except SystemExit as err:
        raise ReproduceError(f"step {step.name} ({step.config}) stopped with status {err.code}; its message is "
                             f"above. Fix it and run the same command again: finished steps are reused") from None
    if not (path / "metrics.json").is_file():
        raise ReproduceError(f"step {step.name} finished without writing {path / 'metrics.json'}")
    return how
