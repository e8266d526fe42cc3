"""The steps every dataset shares once its raw interactions are read (spec §1.1, §1.2 steps 6-9, §1.6).

Input: per split, a frame with `uid`, `iid`, `label`, `timestamp`, `title`, rows in the order the upstream
notebook had them before sorting (that order breaks timestamp ties, so it decides which of two same-second
ratings enters the other's history). Output: the processed columns `uid, iid, label, timestamp, his, his_title,
title, flag, not_cold`, row index = position in the sorted, concatenated frame, as in the shipped pickles.
"""

import numpy as np
import pandas as pd

# the rules every preparer applies (one copy, shared with data/synthetic.py and data/splits.py), importable from
# here as before
from minigpt4.data.rules import (  # noqa: F401
    VALID_SMALL_SEED,
    add_histories,
    not_cold,
    sample_valid_small,
    warm_cold,
)

FLAGS = {"train": -1.0, "valid": 0.0, "test": 1.0}
COLUMNS = ["uid", "iid", "label", "timestamp", "his", "his_title", "title", "flag", "not_cold"]


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


def split_by_flag(rows):
    """train / valid / test frames (original index kept), each with `not_cold`."""
    splits = {name: rows[rows["flag"] == flag].copy() for name, flag in FLAGS.items()}
    train = splits["train"]
    for name, df in splits.items():
        df["not_cold"] = not_cold(df, train) if name != "train" else np.ones(len(df), dtype=np.int64)
        splits[name] = df[COLUMNS]
    return splits


def finish(rows, *, valid_small_frac, id_lists=True):
    """histories -> split -> not_cold -> valid_small: the common tail of every preparer.

    `rows` comes from `interleave` with final (remapped) ids. ML-1M's notebook built histories on raw ids and
    remapped them afterwards; remapping first gives the same result, the map being one-to-one."""
    splits = split_by_flag(add_histories(rows, id_lists=id_lists))
    splits["valid_small"] = sample_valid_small(splits["valid"], valid_small_frac)
    return splits
