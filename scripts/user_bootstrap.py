"""How much a test AUC / UAUC moves when the test users are redrawn: a bootstrap over whole users.

python scripts/user_bootstrap.py runs/<run>/predictions_test.csv [--draws 200]
Prints the row's AUC / UAUC and their standard deviations over `draws` resamples (with replacement) of the
split's users, each user bringing all of its rows. Two rows scored on the same split differ by more than noise
only when the difference clearly exceeds this spread (a paired comparison on the same rows is tighter).
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
    args = p.parse_args()
    frame = pd.read_csv(args.predictions)
    missing = {"uid", "label", "score"} - set(frame.columns)
    if missing:
        sys.exit(f"{args.predictions}: missing column(s) {sorted(missing)}; expected a run's predictions_<split>.csv")
    groups = [g for _, g in frame.groupby("uid")]
    rng = np.random.default_rng(args.seed)
    values = []
    for _ in range(args.draws):
        picked = rng.integers(0, len(groups), len(groups))
        d = pd.concat([groups[i].assign(uid=k) for k, i in enumerate(picked)])  # a user drawn twice counts twice
        m = evaluate_scores(d["uid"].to_numpy(), d["label"].to_numpy(), d["score"].to_numpy())
        values.append((m["auc"], m["uauc"]))
    full = evaluate_scores(frame["uid"].to_numpy(), frame["label"].to_numpy(), frame["score"].to_numpy())
    sd = np.nanstd(np.array(values, dtype=float), axis=0)
    print(f"{args.predictions}: {len(frame)} rows, {len(groups)} users; AUC {full['auc']:.4f} (sd {sd[0]:.4f}), "
          f"UAUC {full['uauc']:.4f} (sd {sd[1]:.4f}) over {args.draws} user resamples")


if __name__ == "__main__":
    main()
