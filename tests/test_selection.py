"""Model selection (minigpt4/train/selection.py), the one copy both training loops use: the best epoch, early
stopping after run.patience evaluations without a better valid AUC, and the loop state a resume point holds."""

import json
import math

import pytest

from minigpt4.config import ConfigError
from minigpt4.train.selection import Progress, Selection


def test_the_best_epoch_and_early_stopping():
    s = Selection()
    saved = [s.evaluated(epoch, auc, patience=2) for epoch, auc in enumerate([0.5, 0.6, 0.6, 0.55])]
    assert saved == [True, True, False, False]  # an equal AUC is not better
    assert (s.best, s.best_epoch, s.bad, s.stopped) == (0.6, 1, 2, True)


def test_without_a_valid_split_every_epoch_is_kept():
    s = Selection()
    assert all(s.evaluated(epoch, None, patience=1) for epoch in range(3))
    assert (s.best, s.best_epoch, s.bad, s.stopped) == (-math.inf, 2, 0, False)


def test_progress_round_trips_through_a_resume_point_and_reads_older_ones(tmp_path):
    p = Progress(epoch=1, iter=3, step=7, losses=[0.7, 0.69], best=0.61, best_epoch=0, bad=1)
    assert Progress.from_json(json.loads(json.dumps(p.to_json()))) == p
    # progress.json as the loop wrote it before this class: the same flat keys
    older = {"epoch": 2, "iter": 0, "step": 10, "losses": [], "best": -math.inf, "best_epoch": -1, "bad": 0,
             "stopped": False}
    assert Progress.from_json(json.loads(json.dumps(older))).step == 10
    with pytest.raises(ConfigError, match=r"x/progress.json: unknown key\(s\) \['steps'\]"):
        Progress.from_json({**older, "steps": 3}, where="x/progress.json")
