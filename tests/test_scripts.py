"""The helper scripts in scripts/ that reports cite."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from helpers import ROOT


def _bootstrap(path, *extra):
    return subprocess.run([sys.executable, str(ROOT / "scripts/user_bootstrap.py"), str(path), *extra],
                          capture_output=True, text=True)


@pytest.mark.slow
def test_user_bootstrap_spread(tmp_path):
    rng = np.random.default_rng(0)
    uid = np.repeat(np.arange(40), 10)
    label = rng.integers(0, 2, len(uid))
    perfect = tmp_path / "perfect.csv"
    score = label + 0.1 * rng.random(len(uid)) - 0.05
    pd.DataFrame({"uid": uid, "iid": 0, "label": label, "score": score}).to_csv(perfect, index=False)
    out = _bootstrap(perfect, "--draws", "30")
    assert out.returncode == 0 and "AUC 1.0000 (sd 0.0000)" in out.stdout and "40 users" in out.stdout
    noisy = tmp_path / "noisy.csv"
    score = label + 2 * rng.random(len(uid))
    pd.DataFrame({"uid": uid, "iid": 0, "label": label, "score": score}).to_csv(noisy, index=False)
    sd = float(_bootstrap(noisy, "--draws", "30").stdout.split("AUC ")[1].split("sd ")[1].split(")")[0])
    assert 0.005 < sd < 0.1


@pytest.mark.slow
def test_user_bootstrap_names_missing_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,label,score\n1,0,0.5\n")
    out = _bootstrap(bad)
    assert out.returncode != 0 and "missing column(s) ['uid']" in out.stderr


@pytest.mark.slow
def test_user_bootstrap_pairs_two_runs_on_the_same_rows(tmp_path):
    rng = np.random.default_rng(1)
    uid = np.repeat(np.arange(40), 10)
    iid = np.tile(np.arange(10), 40)
    label = rng.integers(0, 2, len(uid))
    base = label + 2 * rng.random(len(uid))
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    pd.DataFrame({"uid": uid, "iid": iid, "label": label, "score": base}).to_csv(a, index=False)
    # the same scores plus a little noise, in another row order: the difference is small and so is its spread
    frame = pd.DataFrame({"uid": uid, "iid": iid, "label": label, "score": base + 0.05 * rng.random(len(uid))})
    frame.sample(frac=1.0, random_state=0).to_csv(b, index=False)
    out = _bootstrap(a, "--draws", "30", "--versus", b)
    assert out.returncode == 0, out.stderr
    own_sd = float(out.stdout.split("AUC ")[1].split("sd ")[1].split(")")[0])
    diff_sd = float(out.stdout.split("minus ")[1].split("sd ")[1].split(")")[0])
    assert diff_sd < own_sd / 3
    frame.iloc[:300].to_csv(c, index=False)  # other rows: refused
    out = _bootstrap(a, "--versus", c)
    assert out.returncode != 0 and "did not score the same rows" in out.stderr
