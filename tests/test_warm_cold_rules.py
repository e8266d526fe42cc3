"""run.warm_rule / run.cold_rule: which test rows form test_warm and test_cold (issue 19, item 6).

Upstream's scripts disagree: CoLLM's movie_ood warm = user and item each have > 3 train rows, BinLLM's ML-1M config
(amazon_ood) warm = not_cold == 1; the LLM evaluation's cold = not_cold == 0, the encoder pretraining scripts' cold =
user and item both unseen in train. Each rule is checked on a hand-made frame where all four pick different rows,
and on the ML-1M pickles when present.
"""

import json
import zlib

import pandas as pd
import pytest

from helpers import write_yaml
from minigpt4 import registry
from minigpt4.cli import main
from minigpt4.config import ConfigError, load_config
from minigpt4.data.splits import (
    AmazonDataset,
    DataError,
    MovieDataset,
    RecDataset,
    SyntheticDataset,
    sample_split,
    subsample,
)

# test rows (uid, iid, not_cold) and which rule takes each; in train user 1 and item 10 have 4 rows, user 2 and
# item 20 one row, user 3 and item 30 none
TEST_ROWS = {
    100: (1, 10, 1),  # both > 3 train rows: warm under both warm rules
    101: (2, 10, 1),  # user seen once: warm only under not_cold
    102: (1, 20, 1),  # item seen once: warm only under not_cold
    103: (3, 10, 0),  # user unseen, item seen: cold only under not_cold
    104: (1, 30, 0),  # item unseen, user seen: cold only under not_cold
    105: (3, 30, 0),  # both unseen: cold under both cold rules
}
WARM = {"train_rows": [100], "not_cold": [100, 101, 102]}
COLD = {"not_cold": [103, 104, 105], "unseen": [105]}


def _frame(rows, index):
    uid, iid, not_cold = (list(c) for c in zip(*rows))
    return pd.DataFrame({"uid": uid, "iid": iid, "label": [i % 2 for i in range(len(rows))],
                         "his": [[0]] * len(rows), "his_title": [[""]] * len(rows),
                         "title": [f"Movie {i}" for i in iid], "not_cold": not_cold}, index=index)


@pytest.fixture
def small_dir(tmp_path):
    train = [(1, 10, 1)] * 3 + [(1, 11, 1), (2, 12, 1), (4, 10, 1), (4, 20, 1)]
    train_df = _frame(train, range(len(train)))
    assert train_df["uid"].value_counts()[1] == 4 and train_df["iid"].value_counts()[10] == 4
    test = _frame(TEST_ROWS.values(), list(TEST_ROWS))
    for name, df in (("train_ood2.pkl", train_df), ("valid_ood2.pkl", test), ("valid_small_ood2.pkl", test),
                     ("test_ood2.pkl", test)):
        df.to_pickle(tmp_path / name)
    return tmp_path


@pytest.mark.parametrize("builder", [MovieDataset, AmazonDataset])
@pytest.mark.parametrize("warm_rule", ["train_rows", "not_cold"])
@pytest.mark.parametrize("cold_rule", ["not_cold", "unseen"])
def test_each_rule_selects_its_rows(small_dir, builder, warm_rule, cold_rule):
    ds = builder(small_dir, warm_rule, cold_rule)  # an explicit rule overrides the builder's own
    assert list(ds.load("test_warm").index) == WARM[warm_rule]
    assert list(ds.load("test_cold").index) == COLD[cold_rule]
    assert ds.rules() == {"warm_rule": warm_rule, "cold_rule": cold_rule}


@pytest.mark.parametrize("name, warm_rule", [("movie_ood", "train_rows"), ("movie_ood_sasrec", "train_rows"),
                                             ("synthetic", "train_rows"), ("amazon_ood", "not_cold"),
                                             ("amazon_ood_sasrec", "not_cold")])
def test_dataset_default_follows_the_builder(small_dir, name, warm_rule):
    builder = registry.get("dataset", name)
    ds = builder(small_dir)  # run.warm_rule default `dataset`, run.cold_rule default not_cold
    assert ds.rules() == {"warm_rule": warm_rule, "cold_rule": "not_cold"}
    assert builder(small_dir, "dataset").rules() == ds.rules()
    assert list(ds.load("test_warm").index) == WARM[warm_rule]
    assert list(ds.load("test_cold").index) == COLD["not_cold"]


def test_unknown_rule_refused(small_dir):
    with pytest.raises(DataError, match="warm rule 'unseen'"):
        MovieDataset(small_dir, warm_rule="unseen")
    with pytest.raises(DataError, match="cold rule 'train_rows'"):
        MovieDataset(small_dir, cold_rule="train_rows")


def _cfg(tmp_path, dataset, path, extra=""):
    return write_yaml(tmp_path / "rules.yaml", f"""\
model:
  rec_model: MF
datasets:
  {dataset}:
    path: {path}
run:
  device: cpu
  output_dir: {tmp_path / "runs"}
{extra}""")


@pytest.mark.parametrize("key, bad", [("warm_rule", "unseen"), ("warm_rule", "warm"), ("cold_rule", "train_rows"),
                                      ("cold_rule", "dataset")])
def test_config_refuses_a_bad_rule(small_dir, tmp_path, key, bad):
    with pytest.raises(ConfigError, match=f"run.{key} must be one of"):
        load_config(_cfg(tmp_path, "movie_ood", small_dir), [f"run.{key}={bad}"])


@pytest.mark.parametrize("dataset, options, warm, cold", [
    ("movie_ood", [], "train_rows", "not_cold"),
    ("amazon_ood", [], "not_cold", "not_cold"),
    ("amazon_ood", ["run.warm_rule=train_rows", "run.cold_rule=unseen"], "train_rows", "unseen"),
    ("movie_ood", ["run.warm_rule=not_cold"], "not_cold", "not_cold"),
])
def test_task_applies_and_names_the_configured_rules(small_dir, tmp_path, dataset, options, warm, cold):
    from minigpt4.data.splits import warm_cold_rules
    from minigpt4.tasks import RecTask

    cfg = load_config(_cfg(tmp_path, dataset, small_dir), options)
    task = RecTask(cfg)
    assert list(task.rows("test_warm").index) == WARM[warm]
    assert list(task.rows("test_cold").index) == COLD[cold]
    assert task.warm_cold_rules() == warm_cold_rules(cfg) == {"warm_rule": warm, "cold_rule": cold}


def test_sample_keeps_the_rule_rows_of_the_test_sample(small_dir):
    ds = MovieDataset(small_dir, "not_cold", "unseen")

    def load(name):
        return ds.load(name)

    def test_sample(n, seed):  # the test rows sample_split draws for max_eval_rows n
        return set(subsample(load("test"), n, seed + zlib.crc32(b"test")).index)

    # max_eval_rows=2 of 6 test rows: a seed whose test sample misses row 105 (the only unseen row) gives no cold
    # row (scored as 0 rows, nan AUC) ...
    seed = next(s for s in range(100) if 105 not in test_sample(2, s))
    assert len(sample_split(load, "test_cold", 2, seed)) == 0
    # ... and one whose sample of 4 holds it and a warm row: warm / cold are the rule's rows among the sampled rows
    seed = next(s for s in range(100) if 105 in test_sample(4, s) and test_sample(4, s) & set(WARM["not_cold"]))
    assert list(sample_split(load, "test_cold", 4, seed).index) == [105]
    assert list(sample_split(load, "test_warm", 4, seed).index) == sorted(test_sample(4, seed) & set(WARM["not_cold"]))
    assert list(sample_split(load, "test_cold", 0, seed).index) == [105]  # 0 = all rows


def test_file_flags_follow_the_rule(synthetic_dir):
    """With test_warm_cold_ood2.pkl present (upstream's precomputed flags) each rule reads its own column."""
    twc = pd.read_pickle(synthetic_dir / "test_warm_cold_ood2.pkl")
    ds = SyntheticDataset(synthetic_dir, cold_rule="unseen")
    train, test = ds.load("train"), ds.load("test")
    unseen = test[~test["uid"].isin(train["uid"]) & ~test["iid"].isin(train["iid"])]
    assert 0 < len(unseen) < (test["not_cold"] == 0).sum()  # the two cold rules differ on this data
    assert list(ds.load("test_cold").index) == list(twc.index[twc["cold"] == 1]) == list(unseen.index)
    assert list(SyntheticDataset(synthetic_dir).load("test_cold").index) == list(test.index[test["not_cold"] == 0])
    assert list(ds.load("test_warm").index) == list(twc.index[twc["warm"] == 1])


def test_stage0_metrics_name_the_rules(synthetic_dir, tmp_path):
    cfg = _cfg(tmp_path, "synthetic", synthetic_dir, "  max_epoch: 1\n  job_id: mf\n")
    results = main("collab", "stage 0", ["--cfg-path", str(cfg), "--options", "run.cold_rule=unseen"])
    metrics = json.loads((tmp_path / "runs" / "mf" / "metrics.json").read_text())
    rules = {"warm_rule": "train_rows", "cold_rule": "unseen"}
    assert metrics["warm_cold_rules"] == results["warm_cold_rules"] == rules
    twc = pd.read_pickle(synthetic_dir / "test_warm_cold_ood2.pkl")
    assert metrics["test_cold"]["rows"] == int(twc["cold"].sum())
    assert metrics["test_warm"]["rows"] == int(twc["warm"].sum())


# ------------------------------------------------------------------------------------------------ ML-1M
@pytest.mark.parametrize("builder, warm_rule, cold_rule, n_warm, n_cold", [
    (MovieDataset, "dataset", "not_cold", 3522, 3178),  # our ML-1M configs (movie_ood)
    (AmazonDataset, "dataset", "not_cold", 4153, 3178),  # upstream BinLLM's ML-1M config (amazon_ood)
    (MovieDataset, "not_cold", "unseen", 4153, 26),
    (AmazonDataset, "train_rows", "unseen", 3522, 26),
])
@pytest.mark.slow
def test_ml1m_counts(ml1m_dir, builder, warm_rule, cold_rule, n_warm, n_cold):
    ds = builder(ml1m_dir, warm_rule, cold_rule)
    warm, cold, test = ds.load("test_warm"), ds.load("test_cold"), ds.load("test")
    assert (len(warm), len(cold), len(test)) == (n_warm, n_cold, 7331)
    assert set(warm.index) <= set(test.index) and set(cold.index) <= set(test.index)
    assert not set(warm.index) & set(cold.index)


def test_base_class_default_is_the_movie_rule():
    assert RecDataset.resolve_rules() == {"warm_rule": "train_rows", "cold_rule": "not_cold"}
