"""How much a test AUC / UAUC moves when the test users are redrawn: a bootstrap over whole users.

python scripts/user_bootstrap.py runs/<run>/predictions_test.csv [--draws 200]
                                 [--versus runs/<other>/predictions_test.csv]
Prints the row's AUC / UAUC and their standard deviations over `draws` resamples (with replacement) of the
split's users, each user bringing all of its rows. Two rows scored on the same split differ by more than noise
only when the difference clearly exceeds this spread. `--versus` is the paired comparison: both runs scored the
same rows, and the same resamples give the spread of the difference (tighter than either run's own spread).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minigpt4.metrics import evaluate_scores  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("predictions", help="a run's predictions_<split>.csv (columns uid, label, score)")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--versus", help="another run's predictions on the same rows: the spread of the difference")
    args = p.parse_args()
    frame = read(args.predictions)
    if args.versus:
        other = read(args.versus)
        keys = ["uid", "iid"] if {"iid"} <= set(frame.columns) & set(other.columns) else ["uid"]
        both = frame.merge(other[keys + ["label", "score"]], on=keys, suffixes=("", "_b"))
        if len(both) != len(frame) or len(both) != len(other) or (both["label"] != both["label_b"]).any():
            sys.exit(f"{args.predictions} and {args.versus} did not score the same rows ({len(frame)} and "
                     f"{len(other)} rows, {len(both)} in common): a paired comparison needs the same rows")
        frame = both
    groups = [g for _, g in frame.groupby("uid")]
    rng = np.random.default_rng(args.seed)
    values = []
    for _ in range(args.draws):
        picked = rng.integers(0, len(groups), len(groups))
        d = pd.concat([groups[i].assign(uid=k) for k, i in enumerate(picked)])  # a user drawn twice counts twice
        values.append(metrics(d, "score") + (metrics(d, "score_b") if args.versus else ()))
    values = np.array(values, dtype=float)
    full = metrics(frame, "score")
    sd = np.nanstd(values[:, :2], axis=0)
    print(f"{args.predictions}: {len(frame)} rows, {len(groups)} users; AUC {full[0]:.4f} (sd {sd[0]:.4f}), "
          f"UAUC {full[1]:.4f} (sd {sd[1]:.4f}) over {args.draws} user resamples")
    if args.versus:
        other_full = metrics(frame, "score_b")
        diff_sd = np.nanstd(values[:, :2] - values[:, 2:], axis=0)
        print(f"minus {args.versus}: AUC {full[0] - other_full[0]:+.4f} (sd {diff_sd[0]:.4f}), "
              f"UAUC {full[1] - other_full[1]:+.4f} (sd {diff_sd[1]:.4f}), paired on the same resamples")


def read(path):
    frame = pd.read_csv(path)
    missing = {"uid", "label", "score"} - set(frame.columns)
    if missing:
        sys.exit(f"{path}: missing column(s) {sorted(missing)}; expected a run's predictions_<split>.csv")
    return frame


def metrics(frame, column):
    m = evaluate_scores(frame["uid"].to_numpy(), frame["label"].to_numpy(), frame[column].to_numpy())
    return m["auc"], m["uauc"]


if __name__ == "__main__":
    main()
