"""Print one AUC/UAUC table from the metrics.json of several run directories.

Usage: python -m minigpt4.summary RUN_DIR [RUN_DIR ...]"""

import json
import sys
from pathlib import Path


def rows(run_dirs):
    for run in map(Path, run_dirs):
        metrics = json.loads((run / "metrics.json").read_text())
        for split, m in metrics.items():
            if isinstance(m, dict) and "auc" in m and split.startswith("test"):
                yield run.name, split, m["auc"], m["uauc"], m["rows"]


def main(argv):
    print(f"{'run':<16} {'split':<10} {'AUC':>7} {'UAUC':>7} {'rows':>6}")
    for name, split, auc, uauc, n in rows(argv):
        print(f"{name:<16} {split:<10} {auc:7.4f} {uauc:7.4f} {n:6d}")


if __name__ == "__main__":
    main(sys.argv[1:])
