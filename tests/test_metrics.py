"""AUC / UAUC against sklearn (spec §5)."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from minigpt4.metrics import auc, bce_with_logits, evaluate_scores, uauc


def _reference_uauc(users, labels, scores):
    aucs, one_sample, one_class = [], 0, 0
    for u in np.unique(users):
        m = users == u
        y, s = labels[m], scores[m]
        if m.sum() == 1:
            one_sample += 1
        elif y.min() == y.max():
            one_class += 1
        else:
            aucs.append(roc_auc_score(y, s))
    return float(np.mean(aucs)), len(aucs), one_sample, one_class


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uauc_matches_per_user_sklearn_loop_with_ties(seed):
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.full(rng.integers(1, 9), u) for u in range(60)])
    rng.shuffle(users)  # users interleaved, not grouped
    labels = rng.integers(0, 2, size=len(users))
    scores = np.round(rng.normal(size=len(users)), 1)  # many ties
    # Guarantee each kind of user is present.
    users = np.concatenate([users, [1000], [1001, 1001, 1001], [1002, 1002]])
    labels = np.concatenate([labels, [1], [0, 0, 0], [1, 0]])
    scores = np.concatenate([scores, [0.3], [0.1, 0.2, 0.3], [0.5, 0.5]])  # 1002: a tie -> auc 0.5

    value, info = uauc(users, labels, scores)
    ref, used, one_sample, one_class = _reference_uauc(users, labels, scores)
    assert value == pytest.approx(ref, abs=1e-12)
    assert info == {"users": used, "one_sample_users": one_sample, "one_class_users": one_class}
    assert one_sample >= 1 and one_class >= 1


def test_uauc_is_unweighted_mean():
    # user 1: 4 rows, perfectly ranked (auc 1); user 2: 2 rows, inverted (auc 0). Unweighted mean = 0.5.
    users = np.array([1, 1, 1, 1, 2, 2])
    labels = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([4.0, 3.0, 2.0, 1.0, 0.0, 1.0])
    value, info = uauc(users, labels, scores)
    assert value == pytest.approx(0.5)
    assert info == {"users": 2, "one_sample_users": 0, "one_class_users": 0}


def test_uauc_no_usable_user_is_nan():
    value, info = uauc([1, 2, 2], [1, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(value)
    assert info == {"users": 0, "one_sample_users": 1, "one_class_users": 1}


def test_auc_equals_sklearn():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, size=500)
    scores = np.round(rng.normal(size=500) + labels * 0.5, 1)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))


def test_evaluate_scores_fields():
    rng = np.random.default_rng(7)
    users = rng.integers(0, 10, size=200)
    labels = rng.integers(0, 2, size=200)
    scores = rng.normal(size=200)
    m = evaluate_scores(users, labels, scores)
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["uauc"] == pytest.approx(_reference_uauc(users, labels, scores)[0])
    assert m["rows"] == 200
    p = 1 / (1 + np.exp(-scores))
    assert m["loss"] == pytest.approx(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    assert bce_with_logits([1], [1000.0]) == pytest.approx(0.0, abs=1e-9)  # stable for large logits


def _scored(users, seed):
    rng = np.random.default_rng(seed)
    u = np.repeat(np.arange(users), 20)
    y = rng.integers(0, 2, u.size)
    return u, y, y * 0.8 + rng.normal(size=u.size)


def test_redraw_spread_shrinks_as_one_over_root_users():
    from minigpt4.metrics import redraw_spread

    few, many = redraw_spread(*_scored(25, 0)), redraw_spread(*_scored(400, 0))
    assert all(f > 0 for f in few)
    for f, m in zip(few, many):  # 16x the users: a quarter of the spread, within bootstrap noise
        assert 2.5 < f / m < 6.5


def test_redraw_spread_is_zero_when_every_redraw_ranks_perfectly():
    from minigpt4.metrics import redraw_spread

    u, y, _ = _scored(30, 1)
    assert redraw_spread(u, y, y.astype(float), draws=20) == (0.0, 0.0)


def test_redraw_spread_redraws_whole_users():
    """Users whose rows are all right and users whose rows are all wrong: resampling rows within the scored users
    would keep every user and hardly move UAUC; resampling whole users moves it by about 0.5/sqrt(users)."""
    from minigpt4.metrics import redraw_spread

    u, y, _ = _scored(40, 2)
    flip = np.where(u % 2 == 0, 1.0, -1.0)
    _, sd_uauc = redraw_spread(u, y, flip * y, draws=300)
    assert 0.05 < sd_uauc < 0.11  # 0.5 / sqrt(40) = 0.079


def test_redraw_difference_of_two_models_on_the_same_users():
    from minigpt4.metrics import redraw_difference, redraw_spread

    u, y, s = _scored(40, 3)
    rng = np.random.default_rng(4)
    other = s + 0.3 * rng.normal(size=s.size)  # a second model that mostly agrees with the first
    assert redraw_difference(u, y, s, s) == (0.0, 0.0)
    diff = redraw_difference(u, y, s, other)
    # the users a redraw picks move both models alike, so the difference moves less than either model
    assert all(0 < d < 0.7 * min(a, b) for d, a, b in zip(diff, redraw_spread(u, y, s), redraw_spread(u, y, other)))
