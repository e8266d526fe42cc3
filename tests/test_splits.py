"""Reading and validating the processed splits; ML-1M sizes and warm/cold (spec §1.2, §1.6, §5)."""

import pickle
import zlib

import numpy as np
import pandas as pd
import pytest

from minigpt4.data.splits import AmazonDataset, DataError, MovieDataset, read_split, sample_split, subsample

ML1M_FILES = ("train_ood2.pkl", "valid_ood2.pkl", "valid_small_ood2.pkl", "test_ood2.pkl")


def _good():
    return pd.DataFrame({"uid": [1, 2, 3], "iid": [1, 2, 3], "label": [0, 1, 0],
                         "his": [[0], [0, 1], [0]], "his_title": [[""], ["", "A"], [""]],
                         "title": ["A", "B", "C"]}, index=[100, 101, 102])


def _write(tmp_path, df, name="train_ood2.pkl"):
    path = tmp_path / name
    pd.to_pickle(df, path)
    return path


def test_good_file_reads(tmp_path):
    df = read_split(_write(tmp_path, _good()))
    assert list(df.index) == [100, 101, 102]


def test_missing_column_names_file_and_column(tmp_path):
    path = _write(tmp_path, _good().drop(columns=["his_title"]))
    with pytest.raises(DataError) as err:
        read_split(path)
    assert str(path) in str(err.value) and "his_title" in str(err.value)


def _bad(mutate):
    df = _good()
    mutate(df)
    return df


@pytest.mark.parametrize("mutate, words", [
    (lambda df: df.__setitem__("label", [0, 2, 1]), ["label", "2"]),
    (lambda df: df.__setitem__("uid", [1.0, np.nan, 3.0]), ["uid"]),
    (lambda df: df.__setitem__("his_title", [[""], [""], [""]]), ["his has 2", "his_title has 1"]),
    (lambda df: df.__setitem__("iid", [1, 0, 3]), ["iid", "padding"]),
    (lambda df: df.__setitem__("uid", [1, 2.5, 3]), ["uid", "integer"]),
    (lambda df: df.__setitem__("title", ["A", None, "C"]), ["title"]),
    (lambda df: df.__setitem__("his", [[0], 5, [0]]), ["his", "list"]),
    (lambda df: df.__setitem__("label", [1.0, np.nan, 0.0]), ["label", "not a number"]),
    (lambda df: df.__setitem__("uid", [1, -4, 3]), ["uid", ">= 1"]),
    (lambda df: df.__setitem__("title", ["A", b"\xff\xfe bad", "C"]), ["title", "not a string"]),
], ids=["label2", "nan_uid", "his_len", "iid0", "float_uid", "title_none", "his_not_list", "nan_label",
        "negative_uid", "non_utf8_title"])
def test_bad_row_names_file_and_row(tmp_path, mutate, words):
    path = _write(tmp_path, _bad(mutate))
    with pytest.raises(DataError) as err:
        read_split(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "row 101" in msg and "position 1" in msg, msg
    for w in words:
        assert w in msg, msg


def test_non_dataframe_pickle(tmp_path):
    path = tmp_path / "train_ood2.pkl"
    path.write_bytes(pickle.dumps({"uid": [1]}))
    with pytest.raises(DataError, match="DataFrame") as err:
        read_split(path)
    assert str(path) in str(err.value)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="pickle") as err:
        read_split(junk)
    assert str(junk) in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "test_ood2.pkl"
    with pytest.raises(DataError, match="missing") as err:
        read_split(path)
    assert str(path) in str(err.value)
    with pytest.raises(DataError, match="test_ood2.pkl"):
        MovieDataset(tmp_path / "nowhere").load("test")
    with pytest.raises(DataError, match="unknown split"):
        MovieDataset(tmp_path).load("tets")


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="no rows"):
        read_split(_write(tmp_path, _good().iloc[:0]))


def test_subsample_is_fixed_and_ordered():
    df = pd.DataFrame({"uid": range(1, 101), "x": range(100)}, index=range(1000, 1100))
    a, b = subsample(df, 10, seed=3), subsample(df, 10, seed=3)
    assert a.equals(b) and len(a) == 10 and a.index.is_monotonic_increasing
    assert not a.equals(subsample(df, 10, seed=4))
    assert subsample(df, 0, 1) is df and subsample(df, 500, 1) is df


def test_subsample_with_a_per_user_cap_spans_more_users():
    """run.max_eval_rows_per_user: the same number of rows from more users, each user's rows a seeded draw."""
    df = pd.DataFrame({"uid": np.repeat(np.arange(1, 41), 20), "x": range(800)})
    whole = subsample(df, 80, seed=3)
    capped = subsample(df, 80, seed=3, per_user=4)
    assert len(whole) == len(capped) == 80
    assert whole["uid"].nunique() == 4 and capped["uid"].nunique() == 20
    assert capped.groupby("uid").size().max() == 4 and capped.index.is_monotonic_increasing
    assert capped.equals(subsample(df, 80, seed=3, per_user=4))
    assert not capped.equals(subsample(df, 80, seed=4, per_user=4))
    assert len(subsample(df, 500, seed=3, per_user=2)) == 80  # fewer capped rows than asked: all of them


# ------------------------------------------------------------------------------------------------ ML-1M
@pytest.fixture(scope="module")
def ml1m(ml1m_dir, tmp_path_factory):
    """ML-1M without test_warm_cold_ood2.pkl (links to the four pickles), plus a shared frame cache."""
    d = tmp_path_factory.mktemp("ml1m_links")
    for name in ML1M_FILES:
        (d / name).symlink_to((ml1m_dir / name).resolve())
    return MovieDataset(d), {}


@pytest.mark.slow
def test_ml1m_id_counts(ml1m):
    ds, cache = ml1m
    assert ds.id_counts(cache) == (839, 3256)


def test_ml1m_split_sizes(ml1m):
    ds, cache = ml1m
    sizes = {s: len(ds.load(s, cache)) for s in ("train", "valid_full", "valid", "test")}
    assert sizes == {"train": 33891, "valid_full": 10401, "valid": 5200, "test": 7331}
    assert (ds.load("train", cache)["not_cold"] == 1).all()


def test_ml1m_test_cold(ml1m):
    ds, cache = ml1m
    cold = ds.load("test_cold", cache)
    test = ds.load("test", cache)
    assert len(cold) == 3178
    assert (cold["not_cold"] == 0).all()
    assert len(test[test["not_cold"] == 0]) == 3178
    # same rule for Amazon
    assert len(AmazonDataset(ds.path).load("test_cold", cache)) == 3178


def test_ml1m_test_warm_rule(ml1m):
    ds, cache = ml1m
    assert not (ds.path / "test_warm_cold_ood2.pkl").exists()
    train, test = ds.load("train", cache), ds.load("test", cache)
    warm = ds.load("test_warm", cache)
    u_counts, i_counts = train["uid"].value_counts(), train["iid"].value_counts()
    expect = [idx for idx, u, i in zip(test.index, test["uid"], test["iid"])
              if u_counts.get(u, 0) > 3 and i_counts.get(i, 0) > 3]
    assert list(warm.index) == expect
    assert 0.47 <= len(warm) / len(test) <= 0.49  # spec: 48.0 % of test
    # Amazon warm = not_cold == 1
    amazon_warm = AmazonDataset(ds.path).load("test_warm", cache)
    assert list(amazon_warm.index) == list(test.index[test["not_cold"] == 1])


def test_warm_from_file_when_present(synthetic_dir):
    ds = MovieDataset(synthetic_dir)
    warm = ds.load("test_warm")
    twc = pd.read_pickle(synthetic_dir / "test_warm_cold_ood2.pkl")
    assert list(warm.index) == list(twc.index[twc["warm"] == 1])


def test_subsample_keeps_whole_users():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"uid": rng.integers(1, 40, 600), "x": np.arange(600)})
    sub = subsample(df, 120, seed=5)
    assert len(sub) == 120
    sizes = df["uid"].value_counts()
    kept = sub["uid"].value_counts()
    # every user but at most one (the one cut to fit) keeps all of its rows
    assert (kept != sizes[kept.index]).sum() <= 1


def test_warm_and_cold_samples_are_the_warm_and_cold_rows_of_the_test_sample(ml1m):
    ds, cache = ml1m

    def load(name):
        return ds.load(name, cache)

    test = sample_split(load, "test", 1000, 42)
    warm, cold = sample_split(load, "test_warm", 1000, 42), sample_split(load, "test_cold", 1000, 42)
    pairs = set(zip(test["uid"], test["iid"]))
    assert 0 < len(warm) and 0 < len(cold) and len(warm) + len(cold) <= len(test)
    assert set(zip(warm["uid"], warm["iid"])) <= pairs and set(zip(cold["uid"], cold["iid"])) <= pairs
    # every warm row of the sampled test rows is kept, none is added
    all_warm = set(zip(load("test_warm")["uid"], load("test_warm")["iid"]))
    assert set(zip(warm["uid"], warm["iid"])) == pairs & all_warm
    assert sample_split(load, "test", 1000, 42).equals(test)  # fixed by the seed
    assert len(sample_split(load, "test_warm", 0, 42)) == len(load("test_warm"))  # 0 = all rows
    assert sample_split(load, "valid", 500, 42).equals(subsample(load("valid"), 500, 42 + zlib.crc32(b"valid")))
