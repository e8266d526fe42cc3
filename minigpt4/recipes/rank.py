"""Ranking (rank.py): a finished run of any method ranks each drawn positive test row among sampled negatives.

Read top to bottom: config -> candidates -> model -> scores -> metrics -> files.
- config: the run ranked is the finished run directory `run.rank_run`, rebuilt as its own config.yaml describes it
  (a stage-0 run's rec_model.pth, or an LLM run's checkpoint_best/; an eval run's: the checkpoint it scored).
  The scoring keys (run.batch_size_eval, run.dtype, run.device) and the run.rank_* keys are this config's.
- candidates: `run.rank_users` test users with a positive test row, `run.rank_positives` of each one's positives,
  `run.rank_negatives` negatives each from the items the user never interacted with, all drawn with
  `run.rank_seed` (minigpt4/data/catalogue.py); a user with fewer unseen items than that is left out, and named.
  The first ranking run of an output directory writes them to
  `run.rank_candidates` (default `{run.output_dir}/ranking_candidates.json`); the others read them, so every method
  ranks the same candidates. A file drawn with other settings is an error, never silently reused.
- scores: an LLM scores a user's candidates with their shared prompt prefix run once (minigpt4/shared_prefix.py),
  the prompts written from the positive row's history; an encoder scores them as rows.
- metrics: HR@1/5/10, NDCG@5/10 and MRR; a tie with a negative counts against the positive. Their sd over
  redraws of whole users says how much the row would move with other users.
- files: the ranking's own run directory `{run.output_dir}/{run.job_id}`: config.yaml, environment.json,
  metrics.json (the run ranked, settings, metrics, their sd, speed) and ranking_scores.csv (every candidate's
  score).
"""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from minigpt4.config import ConfigError, dataset_cfg
from minigpt4.data.catalogue import ranking_candidates
from minigpt4.fileio import atomic_text
from minigpt4.metrics import ranking_metrics, ranking_spread
from minigpt4.recommender import Recommender
from minigpt4.train.run_dir import RunDir

SETTINGS = ("rank_users", "rank_positives", "rank_negatives", "rank_seed")


def candidates_path(run):
    return Path(run.rank_candidates) if run.rank_candidates else Path(run.output_dir) / "ranking_candidates.json"


def load_or_draw(path, ranker, run, data_path):
    """The candidate sets of `path`, checked against this run's settings, or drawn now and written there."""
    settings = {k: int(run[k]) for k in SETTINGS} | {"data": str(Path(data_path).resolve())}
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        differ = {k: (saved["settings"].get(k), v) for k, v in settings.items()
                  if k != "data" and saved["settings"].get(k) != v}
        if differ:
            raise ConfigError(f"{path} holds candidates drawn with other settings ("
                              + ", ".join(f"run.{k}: {a} there, {b} here" for k, (a, b) in differ.items())
                              + "); rank with its settings, or set run.rank_candidates to a new file")
        sets = pd.DataFrame(saved["sets"], columns=["row", "uid", "positive", "negatives"])
        sets.attrs["left_out_users"] = saved.get("left_out_users", [])
        return sets, False
    sets = ranking_candidates(ranker.frames, run.rank_negatives, run.rank_seed, run.rank_users, run.rank_positives)
    if not len(sets):
        few = sets.attrs["left_out_users"]
        raise ConfigError(f"nothing to rank in {data_path}: " + (
            f"each of the {len(few)} test users with a positive row interacted with all but fewer than "
            f"{run.rank_negatives} items; lower run.rank_negatives" if few else "the test split has no positive row"))
    table = [[int(r), int(u), int(p), [int(x) for x in n]] for r, u, p, n in sets.itertuples(index=False)]
    text = json.dumps({"settings": settings, "left_out_users": sets.attrs["left_out_users"], "sets": table})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_text(path, text + "\n")
    return sets, True


def main(cfg, stage):
    # ------------------------------------------------------------------------------------------------- config
    run = cfg.run
    ranked = Path(run.rank_run)
    scoring = [f"run.batch_size_eval={run.batch_size_eval}", f"run.dtype={run.dtype}", f"run.device={run.device}"]
    # -------------------------------------------------------------------------------------------------- model
    ranker = Recommender.from_run(ranked, options=scoring)
    # --------------------------------------------------------------------------------------------- candidates
    path = candidates_path(run)
    sets, drawn = load_or_draw(path, ranker, run, dataset_cfg(cfg)[1].path)
    negatives = len(sets["negatives"].iloc[0])
    left_out = sets.attrs["left_out_users"]
    run_dir = RunDir(Path(run.output_dir) / run.job_id, cfg)
    print(f"run directory: {run_dir.path}; ranking with {ranked}: {len(sets):,} positives of "
          f"{sets['uid'].nunique():,} test users, each among {negatives} negatives "
          f"({'drawn now and written to' if drawn else 'read from'} {path})"
          + (f"; left out: {len(left_out)} test users who interacted with all but fewer than {negatives} items"
             if left_out else ""))
    # ------------------------------------------------------------------------------------------------- scores
    start = time.time()
    ranks, scores = ranker.rank(sets)
    seconds = time.time() - start
    # ------------------------------------------------------------------------------------------------ metrics
    metrics = ranking_metrics(ranks)
    spread = ranking_spread(sets["uid"].to_numpy(), ranks)
    result = {"ranked_run": str(ranked), "candidates": str(path), "users": int(sets["uid"].nunique()),
              "positives": len(sets), "negatives": negatives, "settings": {k: int(run[k]) for k in SETTINGS},
              "left_out_users": left_out,
              "metrics": metrics, "sd_over_user_redraws": spread, "seconds": seconds,
              "samples_per_s": scores.size / max(seconds, 1e-9),
              "ties": "a negative scored equal to the positive ranks above it"}
    # -------------------------------------------------------------------------------------------------- files
    run_dir.write_json("metrics.json", result)
    table = pd.DataFrame({"row": np.repeat(sets["row"].to_numpy(), 1 + negatives),
                          "uid": np.repeat(sets["uid"].to_numpy(), 1 + negatives),
                          "iid": np.concatenate([[p, *n] for p, n in zip(sets["positive"], sets["negatives"])]),
                          "label": np.tile([1] + [0] * negatives, len(sets)), "score": scores.reshape(-1)})
    atomic_text(run_dir.path / "ranking_scores.csv", table.to_csv(index=False, float_format="%.9g"))
    print("  ".join(f"{k} {metrics[k]:.4f} (sd {spread[k]:.4f})" for k in ("hr@1", "hr@5", "hr@10", "ndcg@5",
                                                                            "ndcg@10", "mrr")))
    print(f"scored {scores.size:,} candidates in {seconds:.0f} s ({result['samples_per_s']:.1f} /s); files: "
          f"{run_dir.path}/")
    run_dir.close()
    return result
