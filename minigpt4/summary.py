"""Print one AUC/UAUC table from the metrics.json of several run directories.

Each row states the test rows it scored and its spread: the standard deviation of AUC and UAUC over 200 redraws of
the scored users (`metrics.redraw_spread`, from the run's predictions_<split>.csv). Runs that scored the same rows
are then compared pairwise, each with the one before it: their difference and its spread over the same redraws
(`metrics.redraw_difference`), which is what says whether one beats the other.

Usage: python -m minigpt4.summary RUN_DIR [RUN_DIR ...]"""

import json
import sys
from pathlib import Path

import pandas as pd

from minigpt4.metrics import redraw_difference, redraw_spread


def rows(run_dirs):
    """(run, split, auc, uauc, rows, sd auc, sd uauc) of every test split of every run; sd is None without
    predictions."""
    for run in map(Path, run_dirs):
        metrics = json.loads((run / "metrics.json").read_text())
        for split, m in metrics.items():
            if isinstance(m, dict) and "auc" in m and split.startswith("test"):
                preds = run / f"predictions_{split}.csv"
                sd = (None, None)
                if preds.is_file():
                    p = pd.read_csv(preds)
                    sd = redraw_spread(p["uid"].to_numpy(), p["label"].to_numpy(), p["score"].to_numpy())
                yield run.name, split, m["auc"], m["uauc"], m["rows"], *sd


def _sd(v):
    return f"{v:.4f}" if v is not None else "–"


def differences(run_dirs, split="test"):
    """(run, earlier run, rows, AUC difference, UAUC difference, sd of each) for each run whose predictions of
    `split` cover the same (uid, iid) rows as an earlier run's: compared with the nearest such run before it."""
    scored = []
    for run in map(Path, run_dirs):
        preds = run / f"predictions_{split}.csv"
        if preds.is_file():
            metrics = json.loads((run / "metrics.json").read_text())[split]
            scored.append((run.name, pd.read_csv(preds).sort_values(["uid", "iid"], ignore_index=True), metrics))
    for i, (name, p, m) in enumerate(scored):
        for earlier, q, k in reversed(scored[:i]):
            if len(p) == len(q) and (p[["uid", "iid"]].to_numpy() == q[["uid", "iid"]].to_numpy()).all():
                sd = redraw_difference(p["uid"].to_numpy(), p["label"].to_numpy(), p["score"].to_numpy(),
                                       q["score"].to_numpy())
                yield name, earlier, len(p), m["auc"] - k["auc"], m["uauc"] - k["uauc"], *sd
                break


def main(argv):
    print(f"{'run':<16} {'split':<10} {'AUC':>7} {'UAUC':>7} {'rows':>6} {'sd AUC':>7} {'sd UAUC':>7}")
    for name, split, auc, uauc, n, sd_auc, sd_uauc in rows(argv):
        print(f"{name:<16} {split:<10} {auc:7.4f} {uauc:7.4f} {n:6d} {_sd(sd_auc):>7} {_sd(sd_uauc):>7}")
    print("sd: over 200 redraws of the scored users; a difference below about twice it is not a finding.")
    for name, earlier, n, d_auc, d_uauc, sd_auc, sd_uauc in differences(argv):
        print(f"{name} - {earlier} on the same {n} test rows: AUC {d_auc:+.4f} (sd {sd_auc:.4f}), "
              f"UAUC {d_uauc:+.4f} (sd {sd_uauc:.4f})")


if __name__ == "__main__":
    main(sys.argv[1:])
