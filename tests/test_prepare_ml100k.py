"""prepare_data.py ml-100k: MovieLens-100K from RecBole's atomic files (folder or wheel) or GroupLens' layout
(ml-100k.zip or its folder). The raw files are small and synthetic: the same ratings are written in both layouts
(GroupLens' rows in another order), so "both layouts give identical splits" checks titles, ids, ties and splits.
One test reads the real wheel at data/raw/ (what `make` downloads) and is skipped without it.
"""

import argparse
import calendar
import hashlib
import json
import random
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from minigpt4 import registry
from minigpt4.data.prepare import main, movielens100k
from minigpt4.data.splits import read_split, validate_split

STEMS = ("train", "valid", "valid_small", "test", "test_warm_cold")
WHEEL = Path(__file__).resolve().parents[1] / "data" / "raw" / "recbole-1.2.1-py3-none-any.whl"
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
FEB_1998 = calendar.timegm((1998, 2, 1, 0, 0, 0))
MAR_1998 = calendar.timegm((1998, 3, 1, 0, 0, 0))

# (id, GroupLens' u.item title, RecBole's movie_title, RecBole's release_year): the real file's special rows
# (no year in the RecBole title, "(V)" after the year, the untitled item, latin-1 letters) and plain ones.
ITEMS = [(1, "Toy Story (1995)", "Toy Story", "1995"),
         (2, "Misérables, Les (1995)", "Misérables, Les", "1995"),
         (3, "Land Before Time III: The Time of the Great Giving (1995) (V)",
          "Land Before Time III: The Time of the Great Giving (1995)", "V"),
         (4, "unknown", "unkonwn", "unkonwn"),
         (5, "Seven (Se7en) (1995)", "Seven (Se7en)", "1995")]
ITEMS += [(k, f"Movie Number {k}, The ({1930 + k})", f"Movie Number {k}, The", str(1930 + k)) for k in range(6, 31)]


def synthetic_ratings(seed=0, users=24):
    """(uid, iid, rating, timestamp) over Sep 1997 - Apr 1998, in a shuffled file order. Some ratings of a user
    share a second (ties), each user rates an item at most once, every month has ratings."""
    rng = random.Random(seed)
    start, end = movielens100k.period_bounds()
    rows = []
    for uid in range(1, users + 1):
        items = rng.sample([i[0] for i in ITEMS], rng.randint(6, 20))
        first = rng.randrange(start, end - 40 * 86400)
        when = [rng.randrange(first, min(end, first + rng.randint(1, 120) * 86400)) for _ in items]
        for k in range(1, len(when), 4):
            when[k] = when[k - 1]  # same-second ratings
        rows += [(uid, iid, rng.randint(1, 5), t) for iid, t in zip(items, when)]
    for month in range(8):  # at least one rating in every month, so no split is empty
        year, mon = 1997 + (8 + month) // 12, (8 + month) % 12 + 1
        rows.append((users + 1 + month, 1 + month, 4, calendar.timegm((year, mon, 15, 12, 0, 0))))
    rng.shuffle(rows)
    return rows


def write_recbole(folder, ratings, items=ITEMS):
    folder.mkdir(parents=True, exist_ok=True)
    inter = [INTER_HEADER] + [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings]
    (folder / "ml-100k.inter").write_text("\n".join(inter) + "\n", encoding="utf-8")
    item = [ITEM_HEADER] + [f"{k}\t{title}\t{year}\tDrama" for k, _, title, year in items]
    (folder / "ml-100k.item").write_text("\n".join(item) + "\n", encoding="utf-8")
    return folder


def write_grouplens(folder, ratings, items=ITEMS):
    """u.data / u.item as GroupLens writes them (u.item latin-1, 24 '|' fields), rows in reverse file order."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in reversed(ratings)))
    lines = [f"{k}|{title}|01-Jan-1995||http://us.imdb.com/x|" + "|".join(["0"] * 18 + ["1"])
             for k, title, _, _ in items]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return folder


def zip_folder(folder, zpath, prefix):
    with zipfile.ZipFile(zpath, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"{prefix}/{path.name}")
    return zpath


def prepare(raw, out):
    assert main(["ml-100k", "--raw", str(raw), "--out", str(out)]) == 0
    return {stem: pd.read_pickle(out / f"{stem}_ood2.pkl") for stem in STEMS}


def walk_order(splits):
    return pd.concat([splits[s] for s in ("train", "valid", "test")]).sort_index()


@pytest.fixture(scope="module")
def raw_data():
    return synthetic_ratings()


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, raw_data):
    """The same ratings as a RecBole folder, a wheel-like zip, a GroupLens folder and GroupLens' zip."""
    tmp = tmp_path_factory.mktemp("ml100k_raw")
    recbole = write_recbole(tmp / "recbole_dir", raw_data)
    grouplens = write_grouplens(tmp / "grouplens" / "ml-100k", raw_data)
    return {"recbole_dir": recbole,
            "recbole_wheel": zip_folder(recbole, tmp / "recbole-1.2.1-py3-none-any.whl", movielens100k.RECBOLE_DIR),
            "grouplens_dir": grouplens.parent,  # the folder the zip unpacks to: files in ml-100k/
            "grouplens_zip": zip_folder(grouplens, tmp / "ml-100k.zip", "ml-100k")}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, layouts):
    out = tmp_path_factory.mktemp("ml100k_out")
    return {name: (out / name, prepare(raw, out / name)) for name, raw in layouts.items()}


@pytest.mark.parametrize("layout", ["recbole_wheel", "grouplens_dir", "grouplens_zip"])
def test_both_layouts_give_identical_splits(prepared, layout):
    base, other = prepared["recbole_dir"][1], prepared[layout][1]
    for stem in STEMS:
        pd.testing.assert_frame_equal(base[stem], other[stem])
    titles = set(walk_order(other)["title"])
    assert {"Toy Story (1995)", "Misérables, Les (1995)", "unknown",
            "Land Before Time III: The Time of the Great Giving (1995) (V)"} <= titles
    assert titles <= {t for _, t, _, _ in ITEMS}  # RecBole's titles rebuilt exactly as GroupLens writes them


def test_counts_match_the_manifest(prepared, raw_data):
    out, splits = prepared["grouplens_zip"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dataset"] == "ml-100k"
    for stem in STEMS:
        pkl, parquet = out / f"{stem}_ood2.pkl", out / f"{stem}_ood2.parquet"
        assert manifest["splits"][stem]["rows"] == len(splits[stem]) == len(read_split(pkl))
        validate_split(splits[stem], pkl)
        for path in (pkl, parquet):
            assert manifest["sha256"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    rows = walk_order(splits)
    assert len(rows) == len(raw_data)  # every month is used: no rating is dropped
    assert manifest["users"] == rows["uid"].nunique() == len({u for u, _, _, _ in raw_data})
    assert manifest["items"] == rows["iid"].nunique() == len({i for _, i, _, _ in raw_data})
    assert manifest["user_num"] == rows["uid"].max() + 1 and manifest["item_num"] == rows["iid"].max() + 1
    assert sorted(rows["uid"].unique()) == list(range(1, manifest["users"] + 1))
    assert len(splits["valid_small"]) == round(len(splits["valid"]) * 0.5)
    assert set(splits["valid_small"].index) <= set(splits["valid"].index)


def test_histories_hold_only_liked_items_in_time_order(prepared, raw_data):
    """Recomputed from the raw ratings by title: a row's history is its user's ratings >= 4 before it, ordered
    by (time, item id); ids and titles agree."""
    title = {k: t for k, t, _, _ in ITEMS}
    by_user = {}
    for u, i, r, t in raw_data:
        by_user.setdefault(u, []).append((t, i, r))
    expected = []
    for u in sorted(by_user):
        liked = []
        for t, i, r in sorted(by_user[u]):
            expected.append((title[i], t, [""] + [title[k] for _, k in liked], int(r >= 4)))
            if r >= 4:
                liked.append((t, i))
    rows = walk_order(prepared["recbole_dir"][1])
    got = list(zip(rows["title"], rows["timestamp"], rows["his_title"].map(list), rows["label"]))
    assert got == expected
    iid_of = dict(zip(rows["title"], rows["iid"]))
    assert all(list(h) == [0] + [iid_of[t] for t in ht[1:]] for h, ht in zip(rows["his"], rows["his_title"]))
    assert rows["his"].map(len).max() > 5  # the check above saw real histories


def test_no_test_row_precedes_the_end_of_train(prepared):
    splits = prepared["recbole_dir"][1]
    train, valid, test = (splits[s]["timestamp"] for s in ("train", "valid", "test"))
    assert train.max() < FEB_1998 <= valid.min() and valid.max() < MAR_1998 <= test.min()
    assert test.min() > train.max() and test.min() > valid.max()
    assert (splits["train"]["not_cold"] == 1).all()
    for stem in ("valid", "test"):
        df = splits[stem]
        warm = df["uid"].isin(splits["train"]["uid"]) & df["iid"].isin(splits["train"]["iid"])
        assert (df["not_cold"].to_numpy() == warm.to_numpy()).all()
        assert 0 < df["not_cold"].sum() < len(df)  # both kinds of row occur, so the check can fail
    flags = splits["test_warm_cold"]
    counts = splits["train"]["uid"].value_counts()
    assert (flags["warm"] <= flags["not_cold"]).all()
    assert (flags["cold"].astype(bool) == (~flags["uid"].isin(counts.index) & ~flags["iid"].isin(
        splits["train"]["iid"]))).all()


def lines_of(path, encoding="utf-8"):
    return path.read_text(encoding=encoding).splitlines()


def bad_input(tmp_path, case, raw_data):
    """A raw path broken as `case` says, and the words its error must contain."""
    rec = write_recbole(tmp_path / "rec", raw_data)
    gl = write_grouplens(tmp_path / "gl", raw_data)
    inter, udata, uitem = rec / "ml-100k.inter", gl / "u.data", gl / "u.item"
    n_inter, n_udata = len(lines_of(inter)), len(lines_of(udata))
    if case == "truncated_mid_line":  # a copy cut off inside the last line's timestamp
        udata.write_bytes(udata.read_bytes()[:-6])
        return gl, ["u.data", f"line {n_udata}", "outside ML-100K", "truncated"]
    if case == "truncated_mid_field":
        inter.write_text(inter.read_text().rsplit("\t", 2)[0])
        return rec, ["ml-100k.inter", f"line {n_inter}", "expected 4 tab-separated fields", "truncated"]
    if case == "truncated_item_file":  # u.item cut after 3 movies: the others' ratings have no title
        uitem.write_bytes(b"\n".join(uitem.read_bytes().split(b"\n")[:3]) + b"\n")
        return gl, ["u.data", "line", "has no row in", "u.item", "cut short"]
    if case == "truncated_wheel":
        wheel = zip_folder(rec, tmp_path / "recbole.whl", movielens100k.RECBOLE_DIR)
        wheel.write_bytes(wheel.read_bytes()[:200])
        return wheel, ["recbole.whl", "not a zip file", "truncated"]
    if case == "bad_line":
        lines = lines_of(inter)
        lines[5] = lines[5].rsplit("\t", 2)[0] + "\tfive\t881250949"
        inter.write_text("\n".join(lines) + "\n")
        return rec, ["ml-100k.inter", "line 6", "the rating must be a number", "five"]
    if case == "bad_item_line":
        lines = lines_of(uitem, "latin-1")
        lines[2] = "3|Four Rooms (1995)|01-Jan-1995"
        uitem.write_text("\n".join(lines) + "\n", encoding="latin-1")
        return gl, ["u.item", "line 3", "expected 24", "got 3"]
    if case == "untyped_header":
        inter.write_text("\n".join(["user_id\titem_id\trating\ttimestamp"] + lines_of(inter)[1:]) + "\n")
        return rec, ["ml-100k.inter", "line 1", "typed header"]
    if case == "wrong_folder":
        folder = tmp_path / "ml-1m"
        folder.mkdir()
        (folder / "ratings.dat").write_text("1::1193::5::978300760\n")
        return tmp_path / "ml-1m", ["neither layout", "u.data + u.item", "ML-1M", "prepare_data.py movielens"]
    if case == "empty_folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", ["neither layout", "ml-100k.inter + ml-100k.item", "recbole==1.2.1"]
    if case == "folder_of_the_wheel":
        zip_folder(rec, tmp_path / "recbole-1.2.1-py3-none-any.whl", movielens100k.RECBOLE_DIR)
        (tmp_path / "downloads").mkdir()
        (tmp_path / "recbole-1.2.1-py3-none-any.whl").rename(tmp_path / "downloads" / "recbole-1.2.1-py3-none-any.whl")
        return tmp_path / "downloads", ["neither layout", "holds recbole-1.2.1-py3-none-any.whl", "pass that file"]
    if case == "half_a_layout":
        uitem.unlink()
        return gl, ["has u.data but no u.item"]
    if case == "missing":
        return tmp_path / "nowhere", ["no such file or directory", "recbole==1.2.1"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated_mid_line", "truncated_mid_field", "truncated_item_file",
                                  "truncated_wheel", "bad_line", "bad_item_line", "untyped_header",
                                  "wrong_folder", "empty_folder", "folder_of_the_wheel", "half_a_layout",
                                  "missing"])
def test_bad_input_is_a_clear_error(tmp_path, capsys, raw_data, case):
    raw, words = bad_input(tmp_path, case, raw_data)
    assert main(["ml-100k", "--raw", str(raw), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().split("\n")[-1]
    assert err.startswith("error: ")
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_recbole_titles_get_their_year_back():
    assert movielens100k.recbole_title("Toy Story", "1995") == "Toy Story (1995)"
    assert movielens100k.recbole_title("Land Before Time III (1995)", "V") == "Land Before Time III (1995) (V)"
    assert movielens100k.recbole_title("unkonwn", "unkonwn") == "unknown"
    assert movielens100k.recbole_title("Untitled", "") == "Untitled"


def test_registered_as_ml_100k():
    assert registry.get("preparer", "ml-100k") is movielens100k.MovieLens100K


def test_line_loop_reads_what_the_vectorised_pass_reads(tmp_path, monkeypatch, prepared, layouts):
    """Bad files are diagnosed by the line loop; on good files it must give the same splits."""
    monkeypatch.setattr(movielens100k, "_all_valid", lambda *a: None)
    for name in ("recbole_dir", "grouplens_zip"):
        splits = prepare(layouts[name], tmp_path / name)
        for stem in STEMS:
            pd.testing.assert_frame_equal(splits[stem], prepared[name][1][stem])


@pytest.mark.slow
@pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL} absent (`make` downloads it)")
def test_the_real_wheel():
    splits, notes = movielens100k.MovieLens100K().build(argparse.Namespace(raw=WHEEL))  # not written: seconds
    assert {s: len(splits[s]) for s in STEMS} == {"train": 66994, "valid": 10991, "valid_small": 5496,
                                                  "test": 22015, "test_warm_cold": 22015}
    rows = walk_order(splits)
    assert rows["uid"].nunique() == 943 and rows["iid"].nunique() == 1682
    assert rows["iid"].max() + 1 == 1683 and rows["uid"].max() + 1 == 944
    assert {"Toy Story (1995)", "unknown", "Land Before Time III: The Time of the Great Giving (1995) (V)"} <= set(
        rows["title"])
    assert not rows["title"].str.contains("unkonwn").any()
    assert round(splits["train"]["label"].mean(), 3) == 0.557
    assert int(splits["test"]["not_cold"].sum()) == 2875 and int(splits["test_warm_cold"]["warm"].sum()) == 2801
