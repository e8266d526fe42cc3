"""AUC and UAUC as BinLLM/CoLLM report them.

UAUC is the *unweighted* mean of per-user AUC over users that have at least two samples and both classes
(users with one sample or one class are skipped and counted). RecBole weights users by sample count; we do not.
Per-user AUC is computed for all users at once from tie-averaged ranks, so millions of rows take a second.
"""

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def auc(labels, scores):
    labels = np.asarray(labels)
    if labels.size == 0 or labels.min() == labels.max():
        return float("nan")  # undefined with one class
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def uauc(users, labels, scores):
    """Returns (uauc, info) with info = {"users": used, "one_sample_users": n, "one_class_users": n}."""
    df = pd.DataFrame({"u": np.asarray(users), "y": np.asarray(labels).astype(np.int64),
                       "s": np.asarray(scores, dtype=np.float64)})
    g = df.groupby("u", sort=False)
    size = g["y"].transform("size").to_numpy()
    pos = g["y"].transform("sum").to_numpy()
    neg = size - pos
    # Rank of each score within its user (ties get the average rank, as the Mann-Whitney statistic needs).
    rank = g["s"].rank(method="average").to_numpy()
    per = pd.DataFrame({"u": df["u"], "r": rank * df["y"].to_numpy(), "p": pos, "n": neg, "size": size})
    per = per.groupby("u", sort=False).agg(r=("r", "sum"), p=("p", "first"), n=("n", "first"), size=("size", "first"))
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
