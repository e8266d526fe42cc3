"""The helper scripts in scripts/ that reports cite."""

import subprocess
import sys

import numpy as np
import pandas as pd

from conftest import ROOT


def _bootstrap(path, *extra):
    return subprocess.run([sys.executable, str(ROOT / "scripts/user_bootstrap.py"), str(path), *extra],
                          capture_output=True, text=True)


def test_user_bootstrap_spread(tmp_path):
    rng = np.random.default_rng(0)
    uid = np.repeat(np.arange(40), 10)
    label = rng.integers(0, 2, len(uid))
    perfect = tmp_path / "perfect.csv"
    pd.DataFrame({"uid": uid, "iid": 0, "label": label, "score": label + 0.1 * rng.random(len(uid)) - 0.05}).to_csv(perfect, index=False)
    out = _bootstrap(perfect, "--draws", "30")
    assert out.returncode == 0 and "AUC 1.0000 (sd 0.0000)" in out.stdout and "40 users" in out.stdout
    noisy = tmp_path / "noisy.csv"
    pd.DataFrame({"uid": uid, "iid": 0, "label": label, "score": label + 2 * rng.random(len(uid))}).to_csv(noisy, index=False)
    sd = float(_bootstrap(noisy, "--draws", "30").stdout.split("AUC ")[1].split("sd ")[1].split(")")[0])
    assert 0.005 < sd < 0.1


def test_user_bootstrap_names_missing_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,label,score\n1,0,0.5\n")
    out = _bootstrap(bad)
    assert out.returncode != 0 and "missing column(s) ['uid']" in out.stderr
