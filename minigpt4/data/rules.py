"""The rules that define the processed splits' derived columns and subsets, written once and shared by the
preparers (data/prepare/common.py), the synthetic generator (data/synthetic.py) and the split reader
(data/splits.py): a row's history, `not_cold`, `valid_small`, and the warm / cold test rows (spec §1.1-1.3, §1.6).

They live here rather than in data/prepare/ because data/splits.py needs the warm / cold rule and the prepare
package imports data/splits.py.
"""

import numpy as np
import pandas as pd

VALID_SMALL_SEED = 2023
WARM_MIN_ROWS = 3  # CoLLM's ML-1M warm rule: user and item each with more than 3 train rows


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


def not_cold(df, train):
    """1 iff both the row's user and item occur in `train` (spec §1.1); train rows themselves are all 1."""
    warm = df["uid"].isin(train["uid"].unique()) & df["iid"].isin(train["iid"].unique())
    return warm.astype(np.int64).to_numpy()


def sample_valid_small(valid, frac):
    """The upstream `valid.sample(frac, random_state=2023)`: same rows, same (shuffled) order."""
    return valid.sample(frac=frac, random_state=VALID_SMALL_SEED)


def is_warm(test, train, min_rows=WARM_MIN_ROWS):
    """Boolean Series over `test`: the row's user and item each have more than `min_rows` rows in `train`."""
    users, items = train["uid"].value_counts(), train["iid"].value_counts()
    return test["uid"].map(users).fillna(0).gt(min_rows) & test["iid"].map(items).fillna(0).gt(min_rows)


def is_unseen(test, train):
    """Boolean Series over `test`: neither the row's user nor its item occurs in `train` (the cold rule)."""
    return ~test["uid"].isin(train["uid"].unique()) & ~test["iid"].isin(train["iid"].unique())


def warm_cold(test, train, min_rows=WARM_MIN_ROWS):
    """ML-1M's `test_warm_cold_ood2.pkl` (read_info.ipynb): test + `warm` (is_warm) and `cold` (is_unseen), both
    int64."""
    return test.assign(warm=is_warm(test, train, min_rows).astype(np.int64),
                       cold=is_unseen(test, train).astype(np.int64))
