"""Amazon-Book from the 2018 Amazon review data, `Books_5.json.gz` + `meta_Books.json.gz` (spec §1.3; CoLLM
`dataset/amazon_book/processing_ood.ipynb`). The steps are in the docstring of `AmazonBook`."""

import calendar
import re
from array import array
from pathlib import Path

import numpy as np
import pandas as pd

from minigpt4.data.prepare import common, gzip_lines
from minigpt4.data.splits import DataError
from minigpt4.registry import register

YEAR = 2017
MIN_RATINGS = 20        # users and items need more than this many ratings in YEAR
POSITIVE_RATING = 5
SOURCE = "https://nijianmo.github.io/amazon/index.html (2018 version)"
REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")
# Cheap pre-filters on the raw line, so that only reviews of YEAR and metadata of reviewed books are parsed as
# JSON (most of the 27M reviews and 2.9M metadata lines are skipped). Inside a JSON string a quote is always
# escaped, so these patterns can only match the real keys; a line they do not match is parsed in full.
TIME_PATTERN = re.compile(rb'"unixReviewTime":\s*(-?\d+)')
ASIN_PATTERN = re.compile(rb'"asin":\s*"([^"\\]*)"')


def year_bounds(year):
    return calendar.timegm((year, 1, 1, 0, 0, 0)), calendar.timegm((year + 1, 1, 1, 0, 0, 0))


class Reviews:
    """The reviews of YEAR, as integer codes in file order (reviewers and asins coded as first seen)."""

    def __init__(self, path):
        self.path = Path(path)
        self.users, self.asins = {}, {}
        self.user, self.asin, self.line, self.time = array("q"), array("q"), array("q"), array("q")
        self.rating = array("d")
        self.lines_read = self.incomplete = 0
        start, end = year_bounds(YEAR)
        how = f"Download Books_5.json.gz (the 5-core reviews) from {SOURCE}"
        for number, raw in gzip_lines.lines(self.path, "reviews", how):
            self.lines_read = number
            hit = TIME_PATTERN.search(raw)
            if hit is not None and not start <= int(hit.group(1)) < end:
                continue
            review = gzip_lines.parse(raw, self.path, number, "review")
            values = [review.get(k) for k in REVIEW_KEYS]
            if any(v is None for v in values):
                self.incomplete += 1  # the notebook's dropna() dropped these rows
                continue
            reviewer, asin, overall, when = values
            try:
                overall, when = float(overall), int(when)
            except (TypeError, ValueError):
                raise DataError(f"{self.path}: line {number}: 'overall' and 'unixReviewTime' must be numbers, "
                                f"got {overall!r} and {when!r}") from None
            if not start <= when < end:
                continue
            self.user.append(self.users.setdefault(str(reviewer), len(self.users)))
            self.asin.append(self.asins.setdefault(str(asin), len(self.asins)))
            self.line.append(number)
            self.time.append(when)
            self.rating.append(overall)
        if not self.line:
            raise DataError(f"{self.path}: no review from {YEAR} among {self.lines_read:,} lines; is this "
                            f"Books_5.json.gz of the 2018 Amazon data?")


class Titles:
    """Title and line of the metadata record of every reviewed asin; the last record of an asin wins."""

    def __init__(self, path, asins):
        self.path = Path(path)
        self.title, self.line = {}, {}
        self.skipped_gettime = 0
        how = f"Download meta_Books.json.gz from {SOURCE}"
        for number, raw in gzip_lines.lines(self.path, "metadata", how):
            hit = ASIN_PATTERN.search(raw)
            if hit is not None and hit.group(1).decode("utf-8", "replace") not in asins:
                continue
            record = gzip_lines.parse(raw, self.path, number, "metadata")
            asin = record.get("asin")
            code = asins.get(asin) if isinstance(asin, str) else None
            if code is None:
                continue
            title = record.get("title")
            title = "" if title is None else title  # the notebook's fillna('')
            if not isinstance(title, str):
                raise DataError(f"{self.path}: line {number}: 'title' must be a string, got {title!r}")
            if "getTime" in title:
                self.skipped_gettime += 1  # the notebook drops these "unformatted rows" before de-duplicating
                continue
            # drop_duplicates(subset='asin', keep='last'): a later record replaces an earlier one, and its
            # position is the one the right join orders by.
            self.title[code], self.line[code] = title, number


@register("preparer", "amazon-book")
class AmazonBook:
    """Amazon-Book from Books_5.json.gz + meta_Books.json.gz (2018 Amazon review data), as CoLLM's
    processing_ood.ipynb built it.

    Reviews (reviewerID, asin, overall, unixReviewTime) are joined with the book titles of the metadata (last
    record of an asin wins; reviews without metadata are dropped). Only 2017 (UTC) is kept; users with more
    than 20 ratings in 2017 are kept, then items with more than 20 (both counts taken before either filter,
    no k-core iteration); label = rating >= 5 (five stars). Users and items are numbered 1.. in order of first
    appearance. Train = January-November; December sorted by time and cut in half: valid, then test.
    Histories, not_cold as for ML-1M; valid_small = a quarter of valid (seed 2023). Both files are streamed
    line by line; only the 2017 reviews are kept in memory.
    """

    summary = "Amazon-Book from the 2018 Amazon data (--reviews Books_5.json.gz --meta meta_Books.json.gz)"
    # BinLLM / CoLLM Table 1. The notebook's own output has 727,463 train rows (spec §1.3), 5 fewer than the
    # paper, so a faithful rebuild is expected to warn about train.
    published = {"train": 727468, "valid": 25747, "test": 25747, "valid_small": 6437,
                 "user_num": 22967, "item_num": 34154}

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--reviews", type=Path, required=True, help="Books_5.json.gz (5-core reviews)")
        parser.add_argument("--meta", type=Path, required=True, help="meta_Books.json.gz (book metadata)")

    def build(self, args):
        reviews = Reviews(args.reviews)
        titles = Titles(args.meta, reviews.asins)
        rows, notes = self.join(reviews, titles)
        rows = self.active(rows, notes)
        rows["label"] = (rows["rating"] >= POSITIVE_RATING).astype(np.int64)
        rows, n_users = common.remap_ids(rows, "uid")
        rows, n_items = common.remap_ids(rows, "iid")
        notes.append(f"{len(rows):,} ratings of {n_users:,} users and {n_items:,} items after the filter")
        train, valid, test = self.cut(rows)
        splits = common.finish(common.interleave(train, valid, test), valid_small_frac=0.25, id_lists=False)
        for note in notes:
            print(note)
        return splits, notes

    @staticmethod
    def join(reviews, titles):
        """The 2017 reviews that have metadata, in the order of the notebook's right join: by the position of
        the book's (last) metadata record, then review file order."""
        asin = np.frombuffer(reviews.asin, dtype=np.int64)
        meta_line = np.full(len(reviews.asins), -1, dtype=np.int64)
        meta_line[list(titles.line)] = list(titles.line.values())
        has_meta = meta_line[asin] >= 0
        order = np.lexsort((np.frombuffer(reviews.line, dtype=np.int64), meta_line[asin]))
        order = order[has_meta[order]]
        title_of = np.empty(len(reviews.asins), dtype=object)
        title_of[list(titles.title)] = list(titles.title.values())
        rows = pd.DataFrame({
            "uid": np.frombuffer(reviews.user, dtype=np.int64)[order],
            "iid": asin[order],
            "rating": np.frombuffer(reviews.rating, dtype=np.float64)[order],
            # float64 like the notebook's, whose right join (with NaN rows) turned the column into floats
            "timestamp": np.frombuffer(reviews.time, dtype=np.int64)[order].astype(np.float64),
        })
        rows["title"] = pd.Series(title_of[rows["iid"].to_numpy()], dtype=object)
        notes = [f"{reviews.lines_read:,} review lines read, {len(reviews.line):,} from {YEAR}, "
                 f"{int(has_meta.sum()):,} of them with book metadata"]
        if reviews.incomplete:
            notes.append(f"{reviews.incomplete:,} reviews without {'/'.join(REVIEW_KEYS)} dropped")
        if titles.skipped_gettime:
            notes.append(f"{titles.skipped_gettime:,} metadata records with 'getTime' in the title dropped")
        return rows, notes

    @staticmethod
    def active(rows, notes):
        user_count = rows["uid"].map(rows["uid"].value_counts())
        item_count = rows["iid"].map(rows["iid"].value_counts())
        kept = rows[(user_count > MIN_RATINGS) & (item_count > MIN_RATINGS)].reset_index(drop=True)
        if kept.empty:
            raise DataError(f"no user and item have more than {MIN_RATINGS} ratings in {YEAR} together; is the "
                            f"review file Books_5.json.gz?")
        notes.append(f"{len(rows) - len(kept):,} ratings of users or items with <= {MIN_RATINGS} ratings "
                     f"in {YEAR} dropped")
        return kept

    @staticmethod
    def cut(rows):
        """Train = January-November; December by time, first half valid, second half test."""
        month = pd.to_datetime(rows["timestamp"], unit="s").dt.month.to_numpy()
        train = rows[month < 12]
        # The notebook used pandas' default (quicksort) here, which orders equal timestamps arbitrarily
        # (reviews carry whole days, so ties are the rule); which same-day rows land on either side of the
        # cut cannot be reproduced. A stable sort keeps the join order among ties, so reruns agree.
        december = rows[month == 12].sort_values("timestamp", kind="stable")
        if december.empty or train.empty:
            missing = "December" if december.empty else "January-November"
            raise DataError(f"after the filters no ratings are left in {missing} {YEAR}; valid and test come "
                            f"from December, train from the months before")
        half = len(december) // 2
        return train, december.iloc[:half], december.iloc[half:]
