"""prepare_data.py: rebuilding the processed splits from the original files (spec §1.1-1.3, §1.6).

Against the shipped ML-1M pickles: histories, valid_small, not_cold and the warm/cold flags recomputed with the
preparers' own functions must equal the shipped columns. End to end: tiny raw files in the original formats
(ML-1M `.dat` files zipped and unpacked, Amazon 2018 gzip JSON lines) go through both commands.
"""

import calendar
import gzip
import hashlib
import itertools
import json
import os
import random
import zipfile
from graphlib import TopologicalSorter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt4 import registry
from minigpt4.data.prepare import amazon_book, common, main, movielens
from minigpt4.data.splits import MovieDataset, read_split, validate_split

SHIPPED = ("train", "valid", "valid_small", "test")


# ---------------------------------------------------------------------------------------------------------
# helpers

def naive_histories(rows):
    """The notebook's per-user walk, literally: emit the current history, then append the item if positive."""
    his, titles, out_his, out_titles = {}, {}, [], []
    for uid, iid, label, title in zip(rows["uid"], rows["iid"], rows["label"], rows["title"]):
        h, t = his.setdefault(uid, [0]), titles.setdefault(uid, [""])
        out_his.append(list(h))
        out_titles.append(list(t))
        if label > 0:
            h.append(iid)
            t.append(title)
    return out_his, out_titles


def flat(column):
    """A column of lists as one flat array plus the list lengths (vectorised comparison)."""
    lengths = column.map(len).to_numpy()
    values = np.array(list(itertools.chain.from_iterable(column)), dtype=object)
    return values, lengths


def match_rate(mine, shipped):
    """Fraction of rows whose list equals the shipped one, compared in one pass over the flat values."""
    (a, la), (b, lb) = flat(mine), flat(shipped)
    if not (la == lb).all():  # misaligned flat arrays: compare row by row (only reached on a failure)
        return float(np.mean([list(x) == list(y) for x, y in zip(mine, shipped)]))
    wrong = np.add.reduceat((a != b).astype(np.int64), np.cumsum(la) - la)  # every list has >= 1 entry
    return float(np.mean(wrong == 0))


def whole(out_dir):
    """All rows of train/valid/test in index order (the walk order)."""
    return pd.concat([pd.read_pickle(out_dir / f"{s}_ood2.pkl") for s in ("train", "valid", "test")]).sort_index()


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_written(out_dir, stems):
    """Every split readable by training's reader (Parquet first) and as a plain pickle; manifest consistent."""
    manifest = json.loads((out_dir / "manifest.json").read_text())
    for stem in stems:
        pkl, parquet = out_dir / f"{stem}_ood2.pkl", out_dir / f"{stem}_ood2.parquet"
        from_parquet = read_split(pkl)  # validates the schema; reads the Parquet copy
        from_pickle = pd.read_pickle(pkl)
        validate_split(from_pickle, pkl)
        assert len(from_pickle) == len(from_parquet) == manifest["splits"][stem]["rows"]
        assert from_parquet.index.equals(from_pickle.index)
        assert from_parquet["iid"].tolist() == from_pickle["iid"].tolist()
        assert [list(h) for h in from_parquet["his"]] == [list(h) for h in from_pickle["his"]]
        assert manifest["sha256"][pkl.name] == sha(pkl) and manifest["sha256"][parquet.name] == sha(parquet)
    assert not list(out_dir.glob(".*"))  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out_dir.iterdir()} == {0o666 & ~umask}  # not private temp modes
    return manifest


# ---------------------------------------------------------------------------------------------------------
# the shipped ML-1M files

@pytest.fixture(scope="module")
def shipped(ml1m_dir):
    return {s: pd.read_pickle(ml1m_dir / f"{s}_ood2.pkl") for s in SHIPPED}


@pytest.fixture(scope="module")
def rebuilt(shipped):
    """The shipped rows with his/his_title/not_cold/valid_small dropped, rebuilt by the preparers' code path."""
    bare = {s: shipped[s].drop(columns=["his", "his_title", "not_cold", "flag"]) for s in ("train", "valid", "test")}
    rows = common.interleave(bare["train"], bare["valid"], bare["test"])
    remapped, _ = common.remap_ids(rows, "uid")
    remapped, _ = common.remap_ids(remapped, "iid")
    return rows, remapped, common.finish(remapped, valid_small_frac=0.5, id_lists=True)


@pytest.mark.slow
def test_shipped_rows_come_back_in_index_order_with_the_same_ids(shipped, rebuilt):
    rows, remapped, _ = rebuilt
    order = pd.concat([shipped[s] for s in ("train", "valid", "test")]).sort_index()
    assert rows.index.equals(order.index)  # sorting by (uid, timestamp) keeps the shipped order
    assert (rows[["uid", "iid", "timestamp"]].to_numpy() == order[["uid", "iid", "timestamp"]].to_numpy()).all()
    assert (rows["flag"].to_numpy() == order["flag"].to_numpy()).all()
    # the shipped ids already are "users ascending, items by first appearance": remapping changes nothing
    assert (remapped[["uid", "iid"]].to_numpy() == rows[["uid", "iid"]].to_numpy()).all()


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_histories_match_shipped(shipped, rebuilt, split):
    mine, ship = rebuilt[2][split], shipped[split]
    assert mine.index.equals(ship.index)
    assert match_rate(mine["his"], ship["his"]) == 1.0
    assert match_rate(mine["his_title"], ship["his_title"]) == 1.0


def test_valid_small_is_the_published_sample(shipped, rebuilt):
    mine = rebuilt[2]["valid_small"]
    assert len(mine) == len(shipped["valid_small"]) == 5200
    assert mine.index.equals(shipped["valid_small"].index)  # same rows, same shuffled order


def test_not_cold_matches_shipped(shipped, rebuilt):
    for split in ("train", "valid", "test", "valid_small"):
        mine, ship = rebuilt[2][split]["not_cold"], shipped[split]["not_cold"]
        assert (mine.to_numpy() == ship.to_numpy()).mean() == 1.0
    assert rebuilt[2]["test"]["not_cold"].sum() == 4153  # PAPER_RESULTS.md: 4,153 warm / 3,178 cold test rows


def test_shipped_same_second_ties_agree_with_one_movie_order(shipped):
    """The preparer orders a user's same-second ratings by a global movie order (the notebook's join order);
    the shipped ties must then never put movie a before b for one user and b before a for another."""
    rows = pd.concat([shipped[s] for s in ("train", "valid", "test")]).sort_index()
    uid, ts, iid = (rows[c].to_numpy() for c in ("uid", "timestamp", "iid"))
    tie = np.flatnonzero((uid[1:] == uid[:-1]) & (ts[1:] == ts[:-1]))
    assert len(tie) == 16809
    graph = TopologicalSorter()
    for k in tie:
        graph.add(int(iid[k + 1]), int(iid[k]))
    graph.prepare()  # raises CycleError if two ties contradict each other


def test_warm_cold_flags_match_read_info_notebook(rebuilt):
    splits = rebuilt[2]
    flags = common.warm_cold(splits["test"], splits["train"])
    assert flags["warm"].sum() == 3522 and flags["cold"].sum() == 26  # read_info.ipynb: 0.480426, 0.003547


# ---------------------------------------------------------------------------------------------------------
# the history builder on its own

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 5), st.integers(1, 9), st.booleans()),
                min_size=1, max_size=40))
@pytest.mark.slow
def test_vectorised_histories_equal_the_notebook_walk(rows):
    frame = pd.DataFrame(rows, columns=["uid", "timestamp", "iid", "label"]).assign(
        label=lambda d: d["label"].astype(np.int64), title=lambda d: "t" + d["iid"].astype(str))
    ordered = common.interleave(frame, frame.iloc[:0], frame.iloc[:0])
    built = common.add_histories(ordered)
    his, titles = naive_histories(ordered)
    assert built["his"].tolist() == his and built["his_title"].tolist() == titles
    arrays = common.add_histories(ordered, id_lists=False)["his"]
    assert all(isinstance(a, np.ndarray) and a.tolist() == h for a, h in zip(arrays, his))


def test_interleave_keeps_the_incoming_order_among_ties():
    rows = pd.DataFrame({"uid": [2, 1, 1, 1], "iid": [5, 7, 3, 9], "label": [1, 1, 1, 0], "timestamp": [9, 4, 4, 1],
                         "title": list("abcd")})
    out = common.interleave(rows, rows.iloc[:0], rows.iloc[:0])
    assert out["iid"].tolist() == [9, 7, 3, 5]  # 7 before 3: same user and second, incoming order kept


def test_histories_need_sorted_rows():
    rows = pd.DataFrame({"uid": [1, 2, 1], "iid": [1, 2, 3], "label": [1, 1, 1], "title": list("abc")})
    with pytest.raises(ValueError, match="contiguous"):
        common.add_histories(rows)


# ---------------------------------------------------------------------------------------------------------
# ML-1M from synthetic raw files

def month_time(slot, day=10, second=0):
    """Unix time in month `slot` counted from April 2000 (slot 0), as in ML-1M."""
    year, month = 2000 + (3 + slot) // 12, (3 + slot) % 12 + 1
    return calendar.timegm((year, month, day, 12, 0, second))


RANDOM_USERS = (1, 3, 5, 6, 8, 9, 11, 12)


def ml_raw_lines():
    """(ratings, movies, users) lines. RANDOM_USERS rate 24 random movies each, mostly in train months; user 2
    hits the slot boundaries; user 4 has a same-second tie; user 14 only appears in test, rating a movie
    nobody else rated (cold user and item); movie 99 is missing from movies.dat."""
    rnd = random.Random(7)
    ratings = [(1, 20, 5, month_time(0, day=26))]  # first line: month 0 is April 2000; movie 20 seen first
    pool = [m for m in range(1, 31) if m not in (10, 20)]
    for user in RANDOM_USERS:
        for movie in rnd.sample(pool, 24):
            slot = rnd.randint(14, 23) if rnd.random() < 0.6 else rnd.randint(24, 33)
            ratings.append((user, movie, rnd.randint(1, 5), month_time(slot, rnd.randint(1, 28), rnd.randint(0, 59))))
    for slot, movie in zip((13, 14, 23, 24, 28, 29, 33, 34), range(11, 19)):
        ratings.append((2, movie, 4 if slot % 2 else 3, month_time(slot)))
    ratings += [(4, 10, 5, month_time(20)), (4, 20, 5, month_time(20)), (4, 1, 3, month_time(21))]
    ratings += [(14, 31, 2, month_time(30)), (3, 99, 5, month_time(20))]
    movies = [f"{m}::Movie {m} (199{m % 10})::Drama" for m in range(1, 32) if m != 7]
    movies.append("7::Café Society (1995)::Comedy|Romance")  # latin-1 é
    users = [f"{u}::M::25::4::12345" for u in sorted(RANDOM_USERS + (2, 4, 14))]
    return [f"{u}::{i}::{r}::{t}" for u, i, r, t in ratings], movies, users


def write_ml_raw(tmp_path, ratings, movies, users):
    """The same files as ml-1m.zip (members under ml-1m/) and unpacked into a directory."""
    unpacked = tmp_path / "unpacked" / "ml-1m"
    unpacked.mkdir(parents=True)
    data = {"ratings.dat": "\n".join(ratings) + "\n", "movies.dat": "\n".join(movies) + "\n",
            "users.dat": "\n".join(users) + "\n"}
    zpath = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for name, text in data.items():
            (unpacked / name).write_bytes(text.encode("latin-1"))
            zf.writestr(f"ml-1m/{name}", text.encode("latin-1"))
    return zpath, unpacked.parent


@pytest.fixture(scope="module")
def ml_prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ml_raw")
    zpath, unpacked = write_ml_raw(tmp, *ml_raw_lines())
    outs = {"zip": tmp / "out_zip", "dir": tmp / "out_dir"}
    assert main(["movielens", "--raw", str(zpath), "--out", str(outs["zip"])]) == 0
    assert main(["movielens", "--raw", str(unpacked), "--out", str(outs["dir"])]) == 0
    return outs


def test_movielens_zip_and_directory_give_the_same_files(ml_prepared):
    for stem in ("train", "valid", "valid_small", "test", "test_warm_cold"):
        a = pd.read_pickle(ml_prepared["zip"] / f"{stem}_ood2.pkl")
        b = pd.read_pickle(ml_prepared["dir"] / f"{stem}_ood2.pkl")
        pd.testing.assert_frame_equal(a, b)


def test_movielens_output_loads_and_manifest_is_right(ml_prepared):
    out = ml_prepared["zip"]
    manifest = check_written(out, ("train", "valid", "valid_small", "test", "test_warm_cold"))
    assert manifest["dataset"] == "movielens" and manifest["published"]["train"] == 33891
    assert (manifest["users"], manifest["user_num"]) == (11, 12)  # all 11 raw users rated in slots 14-33
    # training's dataset builder reads the directory as it is (datasets.<name>.path)
    data = MovieDataset(out)
    for split in ("train", "valid", "valid_full", "test", "test_warm", "test_cold"):
        assert len(data.load(split)) > 0
    assert data.id_counts() == (manifest["user_num"], manifest["item_num"])


def movie_number(title):
    return 7 if title.startswith("Café") else int(title.split()[1])


def test_movielens_time_split_label_and_dropped_rows(ml_prepared):
    rows = whole(ml_prepared["zip"])
    user2 = rows[rows["uid"] == 2]  # raw user 2: movies 11..18 in slots 13, 14, 23, 24, 28, 29, 33, 34
    assert [movie_number(t) for t in user2["title"]] == [12, 13, 14, 15, 16, 17]
    assert user2["flag"].tolist() == [-1.0, -1.0, 0.0, 0.0, 1.0, 1.0]
    assert not rows["title"].str.startswith("Movie 99").any()  # not in movies.dat: dropped by the join
    assert "Café Society (1995)" in set(rows["title"])
    assert rows["timestamp"].dtype == np.int64 and rows["flag"].dtype == np.float64
    # label = rating >= 4, checked against the raw lines (uid n = n-th smallest raw user id)
    ratings, _, _ = ml_raw_lines()
    stars = {tuple(map(int, (u, i, t))): int(r) for u, i, r, t in (line.split("::") for line in ratings)}
    raw_user = sorted(RANDOM_USERS + (2, 4, 14))
    expected = [int(stars[(raw_user[u - 1], movie_number(t), ts)] >= 4)
                for u, t, ts in zip(rows["uid"], rows["title"], rows["timestamp"])]
    assert rows["label"].tolist() == expected


def test_movielens_ids_histories_and_cold_rows(ml_prepared):
    rows = whole(ml_prepared["zip"])
    assert rows.index.tolist() == list(range(len(rows)))
    assert (np.diff(rows["uid"].to_numpy()) >= 0).all() and rows["uid"].min() == 1
    first = rows.drop_duplicates("iid")["iid"].tolist()
    assert first == list(range(1, len(first) + 1))  # items numbered by first appearance
    his, titles = naive_histories(rows)
    assert rows["his"].tolist() == his and rows["his_title"].tolist() == titles
    assert all(isinstance(h, list) for h in rows["his"])  # lists, like the shipped ML-1M pickles
    test = pd.read_pickle(ml_prepared["zip"] / "test_warm_cold_ood2.pkl")
    cold = test[test["title"] == "Movie 31 (1991)"]
    assert cold[["not_cold", "cold", "warm"]].values.tolist() == [[0, 1, 0]]
    valid = pd.read_pickle(ml_prepared["zip"] / "valid_ood2.pkl")
    small = pd.read_pickle(ml_prepared["zip"] / "valid_small_ood2.pkl")
    assert small.index.equals(valid.sample(frac=0.5, random_state=2023).index)


def test_movielens_same_second_ties_follow_the_notebook_join_order(ml_prepared):
    rows = whole(ml_prepared["zip"])
    user4 = rows[rows["uid"] == rows.loc[rows["title"] == "Movie 10 (1990)", "uid"].iloc[0]]
    # ratings.dat lists movie 10 before movie 20 for this user (same second), but movie 20 appears earlier in
    # the file, so the notebook's join put its row first and movie 10's history already holds it.
    assert user4["title"].tolist()[:2] == ["Movie 20 (1990)", "Movie 10 (1990)"]
    assert user4["his_title"].iloc[1] == ["", "Movie 20 (1990)"]
    assert user4["label"].tolist() == [1, 1, 0]


def test_movielens_prints_counts_and_warns_on_mismatch(tmp_path, capsys):
    zpath, _ = write_ml_raw(tmp_path, *ml_raw_lines())
    assert main(["movielens", "--raw", str(zpath), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "33,891" in captured.out and "published" in captured.out
    assert "warning: train" in captured.err and "33,891" in captured.err


@pytest.mark.parametrize("case, words", [
    ("missing", ["no such file", "ml-1m.zip"]),
    ("bad_line", ["ratings.dat", "line 3", "integers"]),
    ("short_line", ["ratings.dat", "line 2", "UserID::MovieID::Rating::Timestamp"]),
    ("processed_zip", ["no ratings.dat", "train_ood2.pkl", "datasets.<name>.path"]),
    ("no_movies", ["no movies.dat"]),
    ("not_zip", ["not a zip file"]),
])
def test_movielens_bad_input_is_a_clear_error(tmp_path, capsys, case, words):
    ratings, movies, users = ml_raw_lines()
    raw = tmp_path / "raw"
    if case == "bad_line":
        ratings[2] = "1::2::five::978300760"
    if case == "short_line":
        ratings[1] = "1::2::5"
    if case in ("bad_line", "short_line", "no_movies"):
        raw = write_ml_raw(tmp_path, ratings, movies, users)[1]
        if case == "no_movies":
            (raw / "ml-1m" / "movies.dat").unlink()
    if case == "processed_zip":
        raw = tmp_path / "processed.zip"
        with zipfile.ZipFile(raw, "w") as zf:
            zf.writestr("ml-1m/train_ood2.pkl", b"x")
    if case == "not_zip":
        raw = tmp_path / "ratings.dat"
        raw.write_text("1::2::3::4\n")
    assert main(["movielens", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().split("\n")[-1]  # the progress bars come before
    assert err.startswith("error: ")
    for word in words:
        assert word in err
    assert not (tmp_path / "out" / "manifest.json").exists()


# ---------------------------------------------------------------------------------------------------------
# Amazon-Book from synthetic raw files

DAY = 86400
START_2017 = calendar.timegm((2017, 1, 1, 0, 0, 0))
BOOKS = [f"B{j:02d}" for j in range(22)]
USERS = [f"A{k:02d}" for k in range(25)]


def review(user, asin, overall, when, **extra):
    record = {"overall": overall, "verified": True, "reviewTime": "01 1, 2017", "reviewerID": user, "asin": asin,
              "reviewerName": "x", "reviewText": 'said "unixReviewTime": 1 once', "summary": "s",
              "unixReviewTime": when}
    record.update(extra)
    if overall is None:
        del record["overall"]
    return json.dumps(record)


def amazon_lines():
    """(reviews, meta) lines. 25 users x 22 books in 2017 survive the filters; everything else is dropped:
    an inactive user, an inactive book, other years, a book without metadata, a review without a rating."""
    reviews = []
    for j, book in enumerate(BOOKS):
        for k, user in enumerate(USERS):
            reviews.append(review(user, book, float((k + j) % 5 + 1), START_2017 + ((k * 7 + j * 13) % 365) * DAY))
    reviews += [review("LOW", b, 5.0, START_2017 + 40 * DAY) for b in BOOKS[:5]]         # 5 ratings: inactive
    reviews += [review(u, "BX", 5.0, START_2017 + 50 * DAY) for u in USERS[:3]]          # 3 ratings: inactive
    reviews += [review(u, "NOMETA", 5.0, START_2017 + 60 * DAY) for u in USERS]          # no metadata
    reviews += [review("A00", "B00", 5.0, START_2017 - DAY), review("A00", "B01", 5.0, START_2017 + 366 * DAY)]
    reviews.append(review("A01", "B02", None, START_2017 + 70 * DAY))                     # no rating
    order = list(reversed(BOOKS[:11])) + ["BX", "ORPHAN"] + BOOKS[11:]                   # metadata order
    meta = [json.dumps({"category": ["Books"], "description": ['with "asin": "B01" inside'], "title": f"Title of {a}",
                        "brand": "", "asin": a, "also_buy": ["B00"]})
            for a in order if a != "B07"]
    meta.insert(3, json.dumps({"asin": "B07", "category": []}))                          # no title -> ''
    meta.append(json.dumps({"asin": "B03", "title": "Title of B03, second edition"}))    # last record wins
    meta.append(json.dumps({"asin": "B05", "title": "new Date().getTime() junk"}))       # dropped
    return reviews, meta


def write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def amazon_prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("amazon_raw")
    reviews, meta = amazon_lines()
    out = tmp / "out"
    code = main(["amazon-book", "--reviews", str(write_gz(tmp / "Books_5.json.gz", reviews)),
                 "--meta", str(write_gz(tmp / "meta_Books.json.gz", meta)), "--out", str(out)])
    assert code == 0
    return out


def test_amazon_output_loads_and_manifest_is_right(amazon_prepared):
    manifest = check_written(amazon_prepared, ("train", "valid", "valid_small", "test"))
    assert manifest["dataset"] == "amazon-book" and manifest["published"]["user_num"] == 22967
    assert (manifest["users"], manifest["items"], manifest["user_num"], manifest["item_num"]) == (25, 22, 26, 23)
    assert not (amazon_prepared / "test_warm_cold_ood2.pkl").exists()  # Amazon warm/cold comes from not_cold
    assert registry.get("preparer", "amazon-book") is amazon_book.AmazonBook


def test_amazon_filters_titles_and_labels(amazon_prepared):
    rows = whole(amazon_prepared)
    assert len(rows) == 25 * 22
    titles = set(rows["title"])
    assert "Title of B03, second edition" in titles and "Title of B03" not in titles
    assert "Title of B05" in titles and not any("getTime" in t for t in titles)
    assert "" in titles  # B07 has no title in its metadata
    assert rows["timestamp"].dtype == np.float64
    assert rows["timestamp"].between(START_2017, START_2017 + 365 * DAY).all()
    stars = {(u, b): (k + j) % 5 + 1 for j, b in enumerate(BOOKS) for k, u in enumerate(USERS)}
    by_title = {f"Title of {b}": b for b in BOOKS}
    by_title.update({"Title of B03, second edition": "B03", "": "B07"})
    expected = [int(stars[(USERS[u - 1], by_title[t])] >= 5) for u, t in zip(rows["uid"], rows["title"])]
    assert rows["label"].tolist() == expected  # label = five stars; uid k+1 = A{k} (first seen in the join)


def test_amazon_ids_follow_the_metadata_order(amazon_prepared):
    rows = whole(amazon_prepared)
    iid_of = rows.drop_duplicates("iid").set_index("title")["iid"]
    # the join is ordered by each book's (last) metadata record: B10..B00 reversed, B07's untitled record at
    # position 3, then B11..B21, B03's second record last
    meta_order = [b for b in list(reversed(BOOKS[:11])) + BOOKS[11:] if b not in ("B03", "B07")]
    meta_order.insert(3, "B07")
    meta_order.append("B03")
    names = {b: f"Title of {b}" for b in BOOKS}
    names.update({"B07": "", "B03": "Title of B03, second edition"})
    assert [iid_of[names[b]] for b in meta_order] == list(range(1, 23))


def test_amazon_december_halves_histories_and_valid_small(amazon_prepared):
    train, valid, test = (pd.read_pickle(amazon_prepared / f"{s}_ood2.pkl") for s in ("train", "valid", "test"))
    december = calendar.timegm((2017, 12, 1, 0, 0, 0))
    assert (train["timestamp"] < december).all()
    assert (valid["timestamp"] >= december).all() and (test["timestamp"] >= december).all()
    assert len(test) - len(valid) in (0, 1) and valid["timestamp"].max() <= test["timestamp"].min()
    rows = whole(amazon_prepared)
    his, titles = naive_histories(rows)
    assert all(isinstance(h, np.ndarray) for h in rows["his"])  # arrays, as the Amazon notebook stored them
    assert [h.tolist() for h in rows["his"]] == his and rows["his_title"].tolist() == titles
    small = pd.read_pickle(amazon_prepared / "valid_small_ood2.pkl")
    assert small.index.equals(valid.sample(frac=0.25, random_state=2023).index)
    train_users, train_items = set(train["uid"]), set(train["iid"])
    expect = [int(u in train_users and i in train_items) for u, i in zip(test["uid"], test["iid"])]
    assert test["not_cold"].tolist() == expect and (train["not_cold"] == 1).all()


@pytest.mark.parametrize("case, words", [
    ("broken_json", ["Books_5.json.gz", "line 3", "not JSON"]),
    ("not_gzip", ["meta_Books.json.gz", "cannot be read as gzip"]),
    ("missing_meta", ["meta_Books.json.gz", "no such file", "Download"]),
    ("bad_title", ["meta_Books.json.gz", "'title' must be a string"]),
])
def test_amazon_bad_input_is_a_clear_error(tmp_path, capsys, case, words):
    reviews, meta = amazon_lines()
    if case == "broken_json":
        reviews[2] = reviews[2][:-20]
    if case == "bad_title":
        meta[0] = json.dumps({"asin": "B10", "title": ["not", "a", "string"]})
    reviews_path = write_gz(tmp_path / "Books_5.json.gz", reviews)
    meta_path = tmp_path / "meta_Books.json.gz"
    if case == "not_gzip":
        meta_path.write_text("\n".join(meta))
    elif case != "missing_meta":
        write_gz(meta_path, meta)
    code = main(["amazon-book", "--reviews", str(reviews_path), "--meta", str(meta_path),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().split("\n")[-1]  # the progress bars come before
    assert code == 2 and err.startswith("error: ")
    for word in words:
        assert word in err


def test_registry_dispatches_both_preparers():
    assert "preparer" in registry.KINDS
    assert registry.get("preparer", "movielens") is movielens.MovieLens
    assert {"movielens", "amazon-book"} <= set(registry.names("preparer"))
