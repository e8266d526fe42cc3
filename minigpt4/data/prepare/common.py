"""The steps every dataset shares once its raw interactions are read (spec §1.1, §1.2 steps 6-9, §1.6).

Input: per split, a frame with `uid`, `iid`, `label`, `timestamp`, `title`, rows in the order the upstream
notebook had them before sorting (that order breaks timestamp ties, so it decides which of two same-second
ratings enters the other's history). Output: the processed columns `uid, iid, label, timestamp, his, his_title,
title, flag, not_cold`, row index = position in the sorted, concatenated frame, as in the shipped pickles.
"""

import numpy as np
import pandas as pd

FLAGS = {"train": -1.0, "valid": 0.0, "test": 1.0}
COLUMNS = ["uid", "iid", "label", "timestamp", "his", "his_title", "title", "flag", "not_cold"]
VALID_SMALL_SEED = 2023


def interleave(train, valid, test):
    """Concatenate train, valid, test (flag -1 / 0 / 1) and sort by (uid, timestamp), keeping the incoming
    order among ties (the upstream multi-column `sort_values` is stable too). Index reset to 0..n-1."""
    parts = [df[["uid", "iid", "label", "timestamp", "title"]].assign(flag=FLAGS[name])
             for name, df in (("train", train), ("valid", valid), ("test", test))]
    rows = pd.concat(parts, ignore_index=True)
    # factorize(sort=True) turns any sortable uid (numbers or raw strings) into ranks for lexsort.
    user_rank = pd.factorize(rows["uid"], sort=True)[0]
    order = np.lexsort((rows["timestamp"].to_numpy(), user_rank))  # lexsort is stable
    return rows.iloc[order].reset_index(drop=True)


def remap_ids(rows, column):
    """Ids 1..N in order of first appearance in `rows` (0 stays free for padding), as the notebooks' maps."""
    codes, uniques = pd.factorize(rows[column], sort=False)
    return rows.assign(**{column: codes.astype(np.int64) + 1}), len(uniques)


def add_histories(rows, id_lists=True):
    """`his` = [0] + iids of the user's positive rows before this one, `his_title` = [''] + their titles.

    This is the upstream per-user walk (emit the row with the current history, then append the item iff
    label > 0), vectorised: each user's positives are laid out once as `[0, p1, p2, ...]` in one array, and
    a row's history is the prefix of its user's block holding the positives seen so far. `rows` must hold
    each user's rows contiguously, in walk order (what `interleave` returns).

    id_lists: `his` as Python lists (the shipped ML-1M pickles, where the notebook remapped histories
    element-wise into lists) or as numpy arrays (the Amazon notebook stored `np.array(his)` unchanged).
    """
    uid = rows["uid"].to_numpy()
    n = len(rows)
    if n == 0:
        return rows.assign(his=pd.Series([], dtype=object), his_title=pd.Series([], dtype=object))
    new_user = np.r_[True, uid[1:] != uid[:-1]]
    if pd.Series(uid[new_user]).duplicated().any():
        raise ValueError("add_histories: each user's rows must be contiguous (sort with interleave first)")
    user_of_row = np.cumsum(new_user) - 1
    positive = rows["label"].to_numpy() > 0
    seen = np.cumsum(positive) - positive                # positives strictly before each row, all users
    first_row = np.flatnonzero(new_user)
    seen_in_user = seen - seen[first_row][user_of_row]   # ... of this row's user
    block_start = np.arange(len(first_row)) + seen[first_row]  # user k's block after k padding slots
    ids = np.zeros(len(first_row) + int(positive.sum()), dtype=np.int64)
    titles = np.full(len(ids), "", dtype=object)
    slot = block_start[user_of_row[positive]] + 1 + seen_in_user[positive]
    ids[slot] = rows["iid"].to_numpy()[positive]
    titles[slot] = rows["title"].to_numpy(dtype=object)[positive]
    lo = block_start[user_of_row]
    hi = lo + 1 + seen_in_user
    his = [ids[a:b].tolist() if id_lists else ids[a:b].copy() for a, b in zip(lo, hi)]
    his_title = [titles[a:b].tolist() for a, b in zip(lo, hi)]
    return rows.assign(his=pd.Series(his, index=rows.index, dtype=object),
                       his_title=pd.Series(his_title, index=rows.index, dtype=object))


def split_by_flag(rows):
    """train / valid / test frames (original index kept), each with `not_cold`."""
    splits = {name: rows[rows["flag"] == flag].copy() for name, flag in FLAGS.items()}
    train = splits["train"]
    for name, df in splits.items():
        df["not_cold"] = not_cold(df, train) if name != "train" else np.ones(len(df), dtype=np.int64)
        splits[name] = df[COLUMNS]
    return splits


def not_cold(df, train):
    """1 iff both the row's user and item occur in `train` (spec §1.1); train rows themselves are all 1."""
    warm = df["uid"].isin(train["uid"].unique()) & df["iid"].isin(train["iid"].unique())
    return warm.astype(np.int64).to_numpy()


def sample_valid_small(valid, frac):
    """The upstream `valid.sample(frac, random_state=2023)`: same rows, same (shuffled) order."""
    return valid.sample(frac=frac, random_state=VALID_SMALL_SEED)


def warm_cold(test, train, min_rows=3):
    """ML-1M's `test_warm_cold_ood2.pkl` (read_info.ipynb): test + `warm` (user and item each have more than
    `min_rows` train rows) and `cold` (neither the user nor the item occurs in train), both int64."""
    users, items = train["uid"].value_counts(), train["iid"].value_counts()
    warm = test["uid"].map(users).fillna(0).gt(min_rows) & test["iid"].map(items).fillna(0).gt(min_rows)
    cold = ~test["uid"].isin(users.index) & ~test["iid"].isin(items.index)
    return test.assign(warm=warm.astype(np.int64), cold=cold.astype(np.int64))


def finish(rows, *, valid_small_frac, id_lists=True):
    """histories -> split -> not_cold -> valid_small: the common tail of every preparer.

    `rows` comes from `interleave` with final (remapped) ids. ML-1M's notebook built histories on raw ids and
    remapped them afterwards; remapping first gives the same result, the map being one-to-one."""
    splits = split_by_flag(add_histories(rows, id_lists=id_lists))
    splits["valid_small"] = sample_valid_small(splits["valid"], valid_small_frac)
    return splits
