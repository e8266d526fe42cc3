"""Step records: the numbers of every finished step, kept beside the report (`<report folder>/steps/<step>.json`)
and committed with it, so a reproduction that outlives its machine continues on another one.

The run directories (`runs/<step>/`: checkpoints, predictions) are derived from the data and stay on the machine
that made them (MovieLens' license forbids redistributing them). A record holds only what the report prints: the
step's metrics, its spread over redraws of the test users, the code and environment it ran on, the resolved config
(to tell when the plan has changed since) and the test AUC of each step it read. A step with a record counts as
finished: it runs again when its settings changed, and it is trained again (a rebuild: its row stays its record)
when a step that runs needs its checkpoint (a stage-0 encoder, the stage-1 adapter), which a record cannot hold.

The pairs of steps compared on the same rows (`spread.compare`) need both steps' predictions on one machine; each
pair computed so far is kept in `differences.json`, with the test metrics of both steps it was computed from, and
shown while both steps still have those metrics.

A ranking step's record (ranking_report.py) is the same, with its metrics.json (HR@K, NDCG@K, MRR and their spread
over redraws of the users, the candidates' settings) as `metrics` and the test AUC of the step it ranked as `reads`.
"""

import json

from omegaconf import OmegaConf

from minigpt4.config import load_config
from minigpt4.config.reference import defaults as schema_defaults
from minigpt4.experiments.definitions import ALL_STEPS, ReproduceError, split_seed
from minigpt4.fileio import atomic_text

# Keys that differ between two machines' runs of the same plan by design: where the repository, the data and the
# runs lie (absolute paths of the clone), on top of run.DERIVED_KEYS.
WIRING_KEYS = {"run.output_dir", "model.ckpt", "model.rec_config.pretrained_path", "run.rank_run"}
# The parts of a run's environment.json a record keeps (the command line names this machine's paths).
ENVIRONMENT_KEYS = ("git_commit", "git_dirty", "resumes", "python", "platform", "libraries", "world_size")
DIFFERENCES = "differences.json"


def folder_of(runs):
    return runs.parent / "steps"


def rebuild_marker(runs, step):
    """`runs/<step>.rebuild.json`: the run in `runs/<step>` was trained again only for its checkpoint; the step's
    row is its record. Written before the run starts, so an interrupted rebuild is one too."""
    return runs / f"{step}.rebuild.json"


def mark_rebuild(runs, step, record):
    runs.mkdir(parents=True, exist_ok=True)
    atomic_text(rebuild_marker(runs, step), json.dumps({"step": step, "record": test_key(record["metrics"])}) + "\n")


def rebuilt(runs, known):
    """The steps of `known` (records) whose run here is a rebuild."""
    return {s for s in known if rebuild_marker(runs, s).is_file()}


def flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def ignored(key):
    return key in WIRING_KEYS or (key.startswith("datasets.") and key.endswith(".path"))


def config_changes(step, then, ignore=(), paths=True):
    """{key: (then, now)} where the resolved config `then` (a nested dict) differs from what the plan runs for
    `step` now, leaving out `ignore`, and without `paths` the wiring keys (paths in the clone that ran it). A key
    the schema gained after the run (absent from `then`) at its default is no change: a new key's default keeps
    the behaviour the code had without it."""
    now = flat(OmegaConf.to_container(load_config(step.config, step.overrides)))
    then, added = flat(then), schema_defaults()
    return {k: (then.get(k), now.get(k)) for k in sorted(set(then) | set(now))
            if k not in ignore and (paths or not ignored(k)) and then.get(k) != now.get(k)
            and not (k not in then and k in added and now.get(k) == added[k])}


def test_key(metrics):
    """What identifies a step's result for the steps that read it and the pairs computed from it: its test AUC and
    UAUC to the 4 decimals the report prints (None without a test split). Rounded, because the same encoder trained
    on another CPU moves in the 8th decimal (float sums in another order), which changes nothing the report says."""
    test = (metrics or {}).get("test") or {}
    if not test:
        return None
    return [None if test.get(k) is None else round(test[k], 4) for k in ("auc", "uauc")]


def rounded_scores(metrics):
    """True for an LLM run that computed in bf16 before its Yes/No score head was kept out of autocast (commit
    `LLM score head in fp32 under bf16 autocast too`): its metrics.json lacks precision.score_head."""
    p = (metrics or {}).get("precision") or {}
    return p.get("dtype") == "bf16" and p.get("score_head") != "fp32"


def load(runs):
    """{step: record} of the records beside `runs/`. A record that is not valid JSON, or names another step, is an
    error naming the file: it would otherwise be skipped silently and its step run again for hours."""
    out = {}
    folder = folder_of(runs)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ReproduceError(f"{path}: not valid JSON ({err}); restore it with `git checkout -- {path}` or "
                                 "delete it to run that step again") from None
        if not isinstance(record, dict) or record.get("step") != path.stem or "metrics" not in record:
            raise ReproduceError(f"{path}: not a step record (it needs 'step': {path.stem!r} and 'metrics'); "
                                 "restore it with git or delete it to run that step again")
        if path.stem in ALL_STEPS or split_seed(path.stem)[1] is not None:
            out[path.stem] = record
    return out


def from_run(runs, step, metrics, redraw_sd, reads):
    """The record of the finished run `runs/<step>`: `reads` {step: test_key} of the steps it read."""
    path = runs / step
    env_file, cfg_file = path / "environment.json", path / "config.yaml"
    env = json.loads(env_file.read_text(encoding="utf-8")) if env_file.is_file() else {}
    config = OmegaConf.to_container(OmegaConf.load(cfg_file)) if cfg_file.is_file() else None
    return {"step": step, "metrics": metrics, "redraw_sd": list(redraw_sd) if redraw_sd else None,
            "reads": reads, "environment": {k: env[k] for k in ENVIRONMENT_KEYS if k in env},
            "config": config, "source": "run"}


def write(runs, record):
    folder = folder_of(runs)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_text(folder / f"{record['step']}.json", json.dumps(record, indent=1, sort_keys=True) + "\n")


def load_differences(runs):
    path = runs.parent / DIFFERENCES
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReproduceError(f"{path}: not valid JSON ({err}); restore it with git or delete it (the pairs are "
                             "computed again when both steps' predictions are on one machine)") from None


def merge_differences(runs, computed, metrics):
    """The report's pairs: those `computed` now (spread.compare tuples) and the earlier ones of differences.json
    whose two steps still have the test metrics the pair was computed from. Writes the merged list back."""
    keep = {}
    for d in load_differences(runs):
        a, b = d["first"], d["second"]
        if d["from"] == {a: test_key(metrics.get(a)), b: test_key(metrics.get(b))}:
            keep[a, b] = d
    for a, b, n, d_auc, d_uauc, sd_auc, sd_uauc in computed:
        keep[a, b] = {"first": a, "second": b, "rows": n, "d_auc": d_auc, "d_uauc": d_uauc, "sd_auc": sd_auc,
                      "sd_uauc": sd_uauc, "from": {a: test_key(metrics[a]), b: test_key(metrics[b])}}
    merged = list(keep.values())
    if merged or (runs.parent / DIFFERENCES).is_file():
        atomic_text(runs.parent / DIFFERENCES, json.dumps(merged, indent=1, sort_keys=True) + "\n")
    return [(d["first"], d["second"], d["rows"], d["d_auc"], d["d_uauc"], d["sd_auc"], d["sd_uauc"])
            for d in merged]
