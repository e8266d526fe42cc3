"""AUC and UAUC as BinLLM/CoLLM report them, and the ranking metrics of one positive among sampled negatives.

UAUC is the *unweighted* mean of per-user AUC over users that have at least two samples and both classes
(users with one sample or one class are skipped and counted). RecBole weights users by sample count; we do not.
Per-user AUC is computed for all users at once from tie-averaged ranks, so millions of rows take a second.

Ranking (`positive_ranks`, `ranking_metrics`): each positive is ranked among its candidates (itself and N sampled
negatives); HR@K, NDCG@K (one relevant item: 1 / log2(rank + 1)) and MRR are means over positives. A negative
scored equal to the positive ranks above it: a model that cannot tell them apart gets no credit for the tie.
"""

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def auc(labels, scores):
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan")  # undefined with one class
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def _per_user(users, labels, scores):
    """Per user: r (sum of the positives' ranks within the user, ties averaged, as the Mann-Whitney statistic
    needs), p and n (positives, negatives) and size; indexed by user."""
    df = pd.DataFrame({"u": np.asarray(users), "y": np.asarray(labels).astype(np.int64),
                       "s": np.asarray(scores, dtype=np.float64)})
    g = df.groupby("u", sort=False)
    size = g["y"].transform("size").to_numpy()
    pos = g["y"].transform("sum").to_numpy()
    rank = g["s"].rank(method="average").to_numpy()
    per = pd.DataFrame({"u": df["u"], "r": rank * df["y"].to_numpy(), "p": pos, "n": size - pos, "size": size})
    return per.groupby("u", sort=False).agg(r=("r", "sum"), p=("p", "first"), n=("n", "first"),
                                            size=("size", "first"))


def uauc(users, labels, scores):
    """Returns (uauc, info) with info = {"users": used, "one_sample_users": n, "one_class_users": n}."""
    per = _per_user(users, labels, scores)
    one_sample = int((per["size"] == 1).sum())
    valid = (per["p"] > 0) & (per["n"] > 0)
    one_class = int((~valid & (per["size"] > 1)).sum())
    per = per[valid]
    user_auc = (per["r"] - per["p"] * (per["p"] + 1) / 2) / (per["p"] * per["n"])
    value = float(user_auc.mean()) if len(user_auc) else float("nan")
    return value, {"users": int(len(per)), "one_sample_users": one_sample, "one_class_users": one_class}


def bce_with_logits(labels, scores):
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(np.maximum(s, 0) - s * y + np.log1p(np.exp(-np.abs(s))))) if s.size else float("nan")


def evaluate_scores(users, labels, scores):
    """All metrics of one split, as logged and written to metrics.json."""
    u, info = uauc(users, labels, scores)
    return {"auc": auc(labels, scores), "uauc": u, "loss": bce_with_logits(labels, scores), "rows": int(len(labels)),
            **info}


def redraw_spread(users, labels, scores, draws=200, seed=0):
    """How much AUC and UAUC would move if another set of users had been scored: the standard deviation of each
    over `draws` bootstrap redraws of the scored users (whole users, with replacement, as a test subsample holds
    whole users). Returns (sd AUC, sd UAUC)."""
    sd = np.nanstd(_redraws(users, labels, scores, draws, seed), axis=0)
    return float(sd[0]), float(sd[1])


def redraw_difference(users, labels, scores_a, scores_b, draws=200, seed=0):
    """Two models scored on the same rows: the standard deviation of their AUC and UAUC differences (a - b) over
    the same redraws of the users as `redraw_spread`. Both models see the same users in a redraw, so this is
    smaller than either model's own spread; a difference below about twice it is not a finding."""
    a = _redraws(users, labels, scores_a, draws, seed)
    b = _redraws(users, labels, scores_b, draws, seed)
    sd = np.nanstd(a - b, axis=0)
    return float(sd[0]), float(sd[1])


def _redraws(users, labels, scores, draws, seed):
    """[draws, 2] (AUC, UAUC) of bootstrap redraws of whole users; the same seed draws the same users."""
    users, labels = np.asarray(users), np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    ids, inverse = np.unique(users, return_inverse=True)
    # a user's AUC does not depend on who else is drawn, so each redraw's UAUC is a weighted mean of these
    per = _per_user(users, labels, scores)
    user_auc = pd.Series(np.nan, index=ids)
    user_auc[per.index] = ((per["r"] - per["p"] * (per["p"] + 1) / 2) / (per["p"] * per["n"])).where(
        (per["p"] > 0) & (per["n"] > 0))
    user_auc = user_auc.to_numpy()
    usable = ~np.isnan(user_auc)
    rng = np.random.default_rng(seed)
    values = np.full((draws, 2), np.nan)
    for d in range(draws):
        times = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))  # a user drawn twice counts twice
        w = times[inverse]
        kept = w > 0
        y = labels[kept]
        if y.min() != y.max():
            values[d, 0] = roc_auc_score(y, scores[kept], sample_weight=w[kept])
        u_w = times * usable
        if u_w.sum():
            values[d, 1] = np.sum(np.nan_to_num(user_auc) * u_w) / u_w.sum()
    return values


# ------------------------------------------------------------------------------------------------------ ranking
HIT_KS = (1, 5, 10)
NDCG_KS = (5, 10)


def positive_ranks(scores):
    """Rank (1 = first) of each positive among its candidates: `scores` [positives, 1 + N], the positive's score in
    column 0. Ties count against the positive (rank = 1 + negatives scored at least as high)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be [positives, 1 + negatives] with at least one negative, got {scores.shape}")
    return 1 + (scores[:, 1:] >= scores[:, :1]).sum(axis=1)


def ranking_metrics(ranks):
    """{"hr@K", "ndcg@K", "mrr", "positives"} over the positives' ranks (NaN for none)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        nan = float("nan")
        return {**{f"hr@{k}": nan for k in HIT_KS}, **{f"ndcg@{k}": nan for k in NDCG_KS}, "mrr": nan, "positives": 0}
    gain = 1.0 / np.log2(ranks + 1)
    return {**{f"hr@{k}": float(np.mean(ranks <= k)) for k in HIT_KS},
            **{f"ndcg@{k}": float(np.mean(np.where(ranks <= k, gain, 0.0))) for k in NDCG_KS},
            "mrr": float(np.mean(1.0 / ranks)), "positives": int(ranks.size)}


def ranking_spread(users, ranks, draws=200, seed=0):
    """{metric: sd} of `ranking_metrics` over bootstrap redraws of whole users (a user's positives together), as
    `redraw_spread` does for AUC: how much a ranking row would move had other users been ranked."""
    users, ranks = np.asarray(users), np.asarray(ranks, dtype=np.float64)
    ids, inverse = np.unique(users, return_inverse=True)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        times = np.bincount(rng.integers(0, len(ids), len(ids)), minlength=len(ids))[inverse]
        repeated = np.repeat(ranks, times)  # a user drawn twice counts twice
        values.append(ranking_metrics(repeated))
    keys = [k for k in values[0] if k != "positives"]
    return {k: float(np.std([v[k] for v in values])) for k in keys}
