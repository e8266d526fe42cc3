"""Amazon-Book end to end on files of its shape: synthetic `Books_5.json.gz` and `meta_Books.json.gz` through
`prepare_data.py amazon-book`, then every step of `reproduce.py --dataset amazon-book --budget smoke` (every
`amazon_*` config) on the tiny Llama. No real Amazon file is reachable here, so this is the only run of that path."""

import calendar
import json
from pathlib import Path

import numpy as np
import pytest
from test_prepare_data import amazon_lines, review, write_gz

from minigpt4.data.prepare import main as prepare
from minigpt4.experiments.definitions import STEPS
from minigpt4.experiments.plan import plan
from minigpt4.experiments.reproduce import main as reproduce

pytestmark = pytest.mark.slow

LAST_DAY = calendar.timegm((2017, 12, 31, 12, 0, 0))


def cold_book():
    """A book that 21 users rate on the last day of 2017 only: its rows fall in the test half of December and it
    has no train row, so the test split has cold rows (the base files' books are all warm)."""
    reviews = [review(f"A{k:02d}", "BCOLD", float(k % 5 + 1), LAST_DAY + k) for k in range(21)]
    return reviews, json.dumps({"asin": "BCOLD", "title": "A Book Nobody Read Before December"})


def test_every_amazon_config_runs_from_raw_files(tiny_llama, tmp_path):
    reviews, meta = amazon_lines()
    extra, extra_meta = cold_book()
    data = tmp_path / "amazon_book"
    assert prepare(["amazon-book", "--reviews", str(write_gz(tmp_path / "Books_5.json.gz", reviews + extra)),
                    "--meta", str(write_gz(tmp_path / "meta_Books.json.gz", meta + [extra_meta])),
                    "--out", str(data)]) == 0
    # the table's steps: every user of these 23 books has rated 22 or 23, so none has negatives to be ranked among
    argv = ["--dataset", "amazon-book", "--budget", "smoke", "--out", str(tmp_path / "out"), "--llama",
            str(tiny_llama), "--data", str(data), "--only", ",".join(STEPS)]
    done = reproduce(argv)
    steps, _, _ = plan("amazon-book", "smoke", tmp_path / "out", data=data, llama=str(tiny_llama), only=list(STEPS))
    assert {Path(s.config).name for s in steps} >= {f"amazon_{m}.yaml" for m in (
        "binmf", "mf", "lightgcn", "sasrec", "din", "tallrec", "binllm", "collm_mf", "icl", "binllm_io", "binllm_it",
        "collm_din", "softprompt", "personprompt", "binllm_ipv4", "collm_lightgcn", "collm_sasrec", "ctrl_align",
        "ctrl")}
    assert done == {s.name: "ran" for s in steps}
    folder = tmp_path / "out" / "amazon-book" / "smoke"
    for step in steps:
        metrics = json.loads((folder / "runs" / step.name / "metrics.json").read_text())
        if "test" not in metrics:  # CTRL's alignment scores nothing: it writes the DIN the ctrl step starts from
            assert metrics["aligned_rows"] > 0 and (folder / "runs" / step.name / "rec_model.pth").is_file()
            continue
        assert np.isfinite(metrics["test"]["auc"]) and metrics["test"]["rows"] > 0, step.name
        assert metrics["test_cold"]["rows"] > 0 and metrics["test_warm"]["rows"] > 0, step.name
    report = (folder / "report.md").read_text()
    assert f"Steps finished: {len(steps)} of {len(steps)}" in report
