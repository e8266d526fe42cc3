"""Read and validate CoLLM's processed splits; one builder per registered dataset name.

Split names: `train`, `valid` (= valid_small, what the upstream LLM pipeline validates on), `valid_full`,
`test`, `test_warm`, `test_cold`. test_warm / test_cold are rows of test chosen by `run.warm_rule` / `run.cold_rule`
(WARM_RULES, COLD_RULES); `warm_cold_rules(cfg)` names the rules a run applies, for its records.

pandas and data/rules.py are imported by the functions that read rows, so that registering the builders (which
the entry scripts do before checking a config) stays cheap.

Pickles run code when they are loaded: only read pickles you trust. Each split may instead be a Parquet file of
the same name (`train_ood2.parquet`, ...), which is plain data and is read first when present; convert a
directory once with `python -m minigpt4.data.splits --to-parquet data/ml-1m`.
"""

import zlib
from pathlib import Path

import numpy as np

from minigpt4.errors import DataError  # noqa: F401  (raised here; importable from here as before)
from minigpt4.registry import register

FILES = {"train": "train_ood2.pkl", "valid": "valid_small_ood2.pkl", "valid_full": "valid_ood2.pkl",
         "test": "test_ood2.pkl"}
SPLITS = tuple(FILES) + ("test_warm", "test_cold")
COLUMNS = ("uid", "iid", "label", "his", "his_title", "title")




def _plain(x):
    """numpy scalars as plain Python values, so messages read `row 12`, not `row np.int64(12)` (numpy 2 repr)."""
    return x.item() if isinstance(x, np.generic) else x


def read_split(path):
    import pandas as pd

    path = Path(path)
    parquet = path.with_suffix(".parquet")
    if parquet.is_file():
        try:
            df = pd.read_parquet(parquet)
        except Exception as err:
            raise DataError(f"{parquet}: cannot be read as Parquet ({type(err).__name__}: {err})") from None
        validate_split(df, parquet)
        return df
    if not path.is_file():
        raise DataError(f"{path}: missing. Unzip the processed dataset there (docs/DATA.md), or "
                        f"generate synthetic data with `python -m minigpt4.data.synthetic --out {path.parent}`")
    try:
        df = pd.read_pickle(path)
    except Exception as err:
        raise DataError(f"{path}: cannot be read as a pandas pickle ({type(err).__name__}: {err})") from None
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"{path}: holds a {type(df).__name__}, expected a pandas DataFrame")
    validate_split(df, path)
    return df


def validate_split(df, path):
    import pandas as pd

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{path}: has no rows")

    def first_bad(mask, what):
        """Raise for the first row where mask is true; `what(pos)` describes the problem."""
        mask = np.asarray(mask, dtype=bool)
        if mask.any():
            pos = int(np.flatnonzero(mask)[0])
            raise DataError(f"{path}: row {_plain(df.index[pos])!r} (position {pos}): {what(pos)}")

    number = {}
    for col in ("uid", "iid", "label"):
        values = number[col] = pd.to_numeric(df[col], errors="coerce")
        first_bad(values.isna(), lambda p: f"column {col!r} is not a number: {_plain(df[col].iloc[p])!r}")
        first_bad(values != values.round(), lambda p: f"column {col!r} is not an integer: {_plain(df[col].iloc[p])!r}")
    first_bad(~df["label"].isin([0, 1]), lambda p: f"label must be 0 or 1, got {_plain(df['label'].iloc[p])!r}")
    # compared as the numbers read above: to_numeric also reads bytes (b"0"), which do not compare with ints
    first_bad(number["uid"] < 1, lambda p: f"uid must be >= 1 (0 is reserved), got {df['uid'].iloc[p]}")
    first_bad(number["iid"] < 1, lambda p: f"iid must be >= 1 (0 is the padding item), got {df['iid'].iloc[p]}")
    first_bad(~df["title"].map(lambda t: isinstance(t, str)),
              lambda p: f"title is not a string: {_plain(df['title'].iloc[p])!r}")
    for col in ("his", "his_title"):
        first_bad(~df[col].map(lambda h: isinstance(h, (list, tuple, np.ndarray))),
                  lambda p: f"{col} is not a list: {df[col].iloc[p]!r}")
    first_bad(df["his"].map(len) != df["his_title"].map(len),
              lambda p: f"his has {len(df['his'].iloc[p])} entries but his_title has {len(df['his_title'].iloc[p])}")


# test_warm / test_cold rules (run.warm_rule, run.cold_rule); "dataset" = the builder's `default_warm_rule`
WARM_RULES = {"train_rows": "user and item each have more than 3 train rows",  # rules.is_warm
              "not_cold": "the row's not_cold flag is 1"}
COLD_RULES = {"not_cold": "the row's not_cold flag is 0",
              "unseen": "neither the user nor the item occurs in train"}  # rules.is_unseen


class RecDataset:
    """Builder for one processed dataset directory. Subclasses differ only in their default warm rule."""

    default_warm_rule = "train_rows"

    def __init__(self, path, warm_rule="dataset", cold_rule="not_cold"):
        self.path = Path(path)
        rules = self.resolve_rules(warm_rule, cold_rule)
        self.warm_rule, self.cold_rule = rules["warm_rule"], rules["cold_rule"]

    @classmethod
    def resolve_rules(cls, warm_rule="dataset", cold_rule="not_cold"):
        """{"warm_rule", "cold_rule"} as applied: `dataset` replaced by this builder's own warm rule."""
        warm = cls.default_warm_rule if warm_rule == "dataset" else warm_rule
        if warm not in WARM_RULES:
            raise DataError(f"unknown warm rule {warm_rule!r}; rules are dataset, {', '.join(WARM_RULES)}")
        if cold_rule not in COLD_RULES:
            raise DataError(f"unknown cold rule {cold_rule!r}; rules are {', '.join(COLD_RULES)}")
        return {"warm_rule": warm, "cold_rule": cold_rule}

    def rules(self):
        return {"warm_rule": self.warm_rule, "cold_rule": self.cold_rule}

    def ensure(self):
        """Hook for datasets that can create themselves (synthetic)."""
        return self

    def load(self, split, rows_cache=None):
        cache = {} if rows_cache is None else rows_cache
        if split in FILES:
            if split not in cache:
                cache[split] = read_split(self.path / FILES[split])
            return cache[split]
        if split == "test_cold":
            return self._cold(cache)
        if split == "test_warm":
            return self._warm(cache)
        raise DataError(f"unknown split {split!r}; splits are {list(SPLITS)}")

    def _not_cold(self, test, split):
        if "not_cold" not in test.columns:
            raise DataError(f"{self.path / FILES['test']}: column 'not_cold' is needed for {split} "
                            f"(run.warm_rule / run.cold_rule not_cold)")
        return test["not_cold"]

    def _file_flag(self, column):
        """The rows of test_warm_cold_ood2.pkl (upstream's precomputed flags) whose `column` is 1, if it exists."""
        warm_file = self.path / "test_warm_cold_ood2.pkl"
        if not warm_file.is_file():
            return None
        import pandas as pd

        df = pd.read_pickle(warm_file)
        if column not in df.columns:
            raise DataError(f"{warm_file}: column {column!r} is missing; the file has {list(df.columns)}")
        return df[df[column] == 1]

    def _warm(self, cache):
        from minigpt4.data.rules import is_warm

        test = self.load("test", cache)
        if self.warm_rule == "not_cold":
            return test[self._not_cold(test, "test_warm") == 1]
        from_file = self._file_flag("warm")  # same rule, as upstream CoLLM read it
        if from_file is not None:
            return from_file
        return test[is_warm(test, self.load("train", cache))]

    def _cold(self, cache):
        from minigpt4.data.rules import is_unseen

        test = self.load("test", cache)
        if self.cold_rule == "not_cold":
            return test[self._not_cold(test, "test_cold") == 0]
        from_file = self._file_flag("cold")
        if from_file is not None:
            return from_file
        return test[is_unseen(test, self.load("train", cache))]

    def id_counts(self, cache=None):
        """user_num, item_num = max id + 1 over train/valid/test (upstream rule), ids in histories included."""
        frames = [self.load(s, cache) for s in ("train", "valid_full", "test")]
        user_num = max(int(f["uid"].max()) for f in frames) + 1
        item_num = max(max(int(f["iid"].max()), max((max(h) for h in f["his"] if len(h)), default=0))
                       for f in frames) + 1
        return user_num, item_num


@register("dataset", "movie_ood")
@register("dataset", "movie_ood_sasrec")
class MovieDataset(RecDataset):
    default_warm_rule = "train_rows"  # CoLLM's ML-1M rule


@register("dataset", "amazon_ood")
@register("dataset", "amazon_ood_sasrec")
class AmazonDataset(RecDataset):
    # Upstream BinLLM's ML-1M config names `amazon_ood`; the only difference is this warm rule.
    default_warm_rule = "not_cold"


@register("dataset", "synthetic")
class SyntheticDataset(MovieDataset):
    """The embedded demo dataset: generated into `path` on first use (deterministic)."""

    def ensure(self):
        from minigpt4.data.synthetic import ensure_synthetic

        ensure_synthetic(str(self.path))
        return self


def warm_cold_rules(cfg):
    """{"warm_rule", "cold_rule"} a config applies, `dataset` resolved through its dataset builder."""
    from minigpt4 import registry
    from minigpt4.config import dataset_cfg

    name, _ = dataset_cfg(cfg)
    return registry.get("dataset", name).resolve_rules(cfg.run.warm_rule, cfg.run.cold_rule)


def subsample(df, n, seed, per_user=0):
    """A fixed random subsample of about n rows that keeps whole users (all rows when n is 0 or >= len).

    Users are drawn in a random order until n rows are reached (the last user is cut to fit), so the sample's
    UAUC is measured over users with all their rows, not over the one or two rows a row sample leaves each user.
    `per_user` > 0 first keeps at most that many random rows of each user, so n rows span more users (a smaller
    spread over user redraws for the same rows). Original row order is kept."""
    if not n or n >= len(df):
        return df
    if per_user:
        rng = np.random.default_rng([seed, 1])
        keep = [np.sort(rng.choice(idx, size=min(per_user, len(idx)), replace=False))
                for _, idx in sorted(df.groupby("uid").indices.items())]
        df = df.iloc[np.sort(np.concatenate(keep))]
        if n >= len(df):
            return df
    users = df["uid"].to_numpy()
    order = np.random.default_rng(seed).permutation(np.unique(users))
    rank = np.empty(order.max() + 1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    picked = np.argsort(rank[users], kind="stable")[:n]  # rows grouped by the users' random order
    return df.iloc[np.sort(picked)]


def sample_split(load, split, n, seed, per_user=0):
    """The rows of `split` a run uses: all of them, or `subsample` (at most `per_user` rows of a user when > 0) with
    a seed fixed by (seed, split name).

    test_warm and test_cold are subsets of test, so their sample is the warm / cold part of test's sample: the three
    metrics describe the same users, and a prompt scored for test is not scored again (the runner's memo).
    `load(name)` returns a split's rows."""
    import pandas as pd

    def own_seed(name):
        return seed + zlib.crc32(name.encode())

    if split not in ("test_warm", "test_cold") or not n:
        return subsample(load(split), n, own_seed(split), per_user)
    full_test = load("test")
    rows = load(split)
    if n >= len(full_test):
        return rows
    sample = subsample(full_test, n, own_seed("test"), per_user)
    picked = pd.MultiIndex.from_frame(rows[["uid", "iid"]]).isin(pd.MultiIndex.from_frame(sample[["uid", "iid"]]))
    return rows[picked]


def to_parquet(directory):
    """Write a Parquet copy of every pickled split in `directory` (after validating it)."""
    written = []
    for name in FILES.values():
        src = Path(directory) / name
        if src.is_file():
            df = read_split(src)
            out = src.with_suffix(".parquet")
            tmp = out.with_name(f".{out.name}.tmp")
            df.to_parquet(tmp)
            tmp.replace(out)
            written.append(str(out))
    return written


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Convert a processed split directory's pickles to Parquet")
    parser.add_argument("--to-parquet", required=True, metavar="DIR")
    for f in to_parquet(parser.parse_args().to_parquet):
        print(f"wrote {f}")
