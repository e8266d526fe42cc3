"""MovieLens-1M from GroupLens' `ml-1m.zip` (spec §1.2; CoLLM `dataset/ml-1m/processing_ood.ipynb` and
`read_info.ipynb`). The steps are in the docstring of `MovieLens`."""

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from minigpt4.data.prepare import common
from minigpt4.data.splits import DataError
from minigpt4.registry import register

SLOTS = {"train": range(14, 24), "valid": range(24, 29), "test": range(29, 34)}
POSITIVE_RATING = 4
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"


class RawFiles:
    """The `.dat` files inside `ml-1m.zip` or a directory holding them (directly or in `ml-1m/`)."""

    def __init__(self, raw):
        self.raw = Path(raw)
        if not self.raw.exists():
            raise DataError(f"--raw {self.raw}: no such file or directory. Download {GROUPLENS_URL} and pass "
                            f"the zip or the directory it unpacks to")
        if self.raw.is_file() and not zipfile.is_zipfile(self.raw):
            raise DataError(f"--raw {self.raw}: not a zip file; pass GroupLens' ml-1m.zip or the directory "
                            f"holding ratings.dat and movies.dat")

    def _zip_member(self, zf, name):
        names = zf.namelist()
        found = [m for m in names if m.rsplit("/", 1)[-1] == name]
        if len(found) == 1:
            return found[0]
        if not found:
            processed = any(m.endswith("train_ood2.pkl") for m in names)
            hint = (" It holds already processed splits (train_ood2.pkl ...): unzip it and point "
                    "`datasets.<name>.path` at it instead of preparing it." if processed else "")
            raise DataError(f"--raw {self.raw}: no {name} inside the zip.{hint} Expected GroupLens' "
                            f"{GROUPLENS_URL}")
        raise DataError(f"--raw {self.raw}: several {name} inside the zip ({', '.join(found)}); pass the one "
                        f"directory to use instead")

    def read(self, name, encoding):
        """(text, where) of one `.dat` file; `where` names it in error messages."""
        try:
            if self.raw.is_file():
                with zipfile.ZipFile(self.raw) as zf:
                    member = self._zip_member(zf, name)
                    data, where = zf.read(member), f"{self.raw}:{member}"
            else:
                candidates = [self.raw / name, self.raw / "ml-1m" / name]
                path = next((p for p in candidates if p.is_file()), None)
                if path is None:
                    raise DataError(f"--raw {self.raw}: no {name} there (looked in {self.raw} and "
                                    f"{self.raw / 'ml-1m'}). Unzip {GROUPLENS_URL} there")
                data, where = path.read_bytes(), str(path)
        except zipfile.BadZipFile as err:
            raise DataError(f"--raw {self.raw}: damaged zip ({err}); download it again") from None
        try:
            return data.decode(encoding), where
        except UnicodeDecodeError as err:
            raise DataError(f"{where}: not {encoding} text ({err}); is this the GroupLens ML-1M file?") from None


def _bad_line(where, number, layout, line):
    return DataError(f"{where}: line {number}: expected {layout} separated by '::', got {line[:120]!r}")


def read_ratings(text, where):
    """uid, iid, rating, timestamp (int64 arrays), in file order."""
    lines = text.splitlines()
    out = np.zeros((len(lines), 4), dtype=np.int64)
    kept = 0
    for number, line in enumerate(tqdm(lines, desc="ratings.dat", unit=" lines", mininterval=1.0), 1):
        if not line.strip():
            continue  # blank lines are skipped, as pandas.read_csv does
        parts = line.split("::")
        if len(parts) != 4:
            raise _bad_line(where, number, "UserID::MovieID::Rating::Timestamp", line)
        try:
            out[kept] = [int(p) for p in parts]
        except ValueError:
            raise DataError(f"{where}: line {number}: UserID, MovieID, Rating and Timestamp must be integers, "
                            f"got {line[:120]!r}") from None
        kept += 1
    if kept == 0:
        raise DataError(f"{where}: no ratings in the file")
    return pd.DataFrame(out[:kept], columns=["uid", "iid", "rating", "timestamp"])


def read_movies(text, where):
    """MovieID -> title."""
    titles = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) < 3:
            raise _bad_line(where, number, "MovieID::Title::Genres", line)
        try:
            movie = int(parts[0])
        except ValueError:
            raise DataError(f"{where}: line {number}: MovieID must be an integer, got {parts[0]!r}") from None
        if movie in titles:
            raise DataError(f"{where}: line {number}: MovieID {movie} appears twice")
        titles[movie] = "::".join(parts[1:-1])  # the title is everything between the id and the genres
    return titles


def join_movies(ratings, titles):
    """Inner join on MovieID in the row order the notebook's pandas produced: grouped by movie, movies in
    order of first appearance in ratings.dat, each group in file order. (The pandas the notebook ran on
    ordered inner merges this way: its printed head shows user 2's rating of user 1's first movie as row 1;
    current pandas keeps the left order.) That order breaks ties between a user's same-second ratings when
    they are sorted by time, so it decides histories."""
    known = ratings["iid"].isin(list(titles)).to_numpy()
    joined = ratings[known]
    first_seen = pd.factorize(joined["iid"])[0]
    joined = joined.iloc[np.argsort(first_seen, kind="stable")].reset_index(drop=True)
    return joined.assign(title=joined["iid"].map(titles).astype(object)), int((~known).sum())


def month_slots(timestamps):
    """Months since the first month in the data (UTC), 0-based, as the notebook's `time` column."""
    when = pd.to_datetime(timestamps, unit="s")
    months = (when.dt.year - when.dt.year.min()) * 12 + when.dt.month
    return (months - months.min()).to_numpy()


@register("preparer", "movielens")
class MovieLens:
    """MovieLens-1M from GroupLens' ml-1m.zip, as CoLLM's processing_ood.ipynb built it.

    Reads ratings.dat (UserID::MovieID::Rating::Timestamp) and movies.dat (MovieID::Title::Genres, latin-1)
    from the zip or from the directory it unpacks to; users.dat is not needed (the notebook reads it but
    never uses it). Ratings are joined with movies; months are counted from the first month in the data
    (April 2000 = slot 0); train = slots 14-23, valid = 24-28, test = 29-33, the other months are dropped;
    label = rating >= 4; no cold-start filter. Histories hold each user's earlier positive items over the
    time-sorted concatenation of the three splits; users and items are numbered 1.. in that order. Written:
    train, valid, valid_small (half of valid, seed 2023), test and test_warm_cold (test + warm/cold flags).
    """
    summary = "MovieLens-1M from GroupLens' ml-1m.zip (--raw zip or directory)"
    published = {"train": 33891, "valid": 10401, "test": 7331, "valid_small": 5200, "test_warm_cold": 7331,
                 "user_num": 839, "item_num": 3256}

    @staticmethod
    def add_arguments(parser):
        parser.add_argument("--raw", type=Path, required=True,
                            help=f"GroupLens' ml-1m.zip ({GROUPLENS_URL}) or the directory it unpacks to")

    def build(self, args):
        raw = RawFiles(args.raw)
        ratings = read_ratings(*raw.read("ratings.dat", "latin-1"))
        titles = read_movies(*raw.read("movies.dat", "latin-1"))
        joined, unknown = join_movies(ratings, titles)
        notes = [f"{len(ratings):,} ratings read, {len(joined):,} with a movie in movies.dat"]
        if unknown:
            notes.append(f"{unknown:,} ratings of movies missing from movies.dat dropped (inner join)")
        slot = month_slots(joined["timestamp"])
        joined["label"] = (joined["rating"] >= POSITIVE_RATING).astype(np.int64)
        parts = {name: joined[np.isin(slot, list(slots))] for name, slots in SLOTS.items()}
        for name, part in parts.items():
            if part.empty:
                raise DataError(f"--raw {args.raw}: no ratings fall in the {name} months (slots "
                                f"{SLOTS[name].start}-{SLOTS[name].stop - 1} counted from the first month, "
                                f"{slot.max() + 1} months in the data); is this ML-1M?")
        notes.append(f"{len(joined) - sum(map(len, parts.values())):,} ratings outside slots 14-33 dropped")
        rows = common.interleave(parts["train"], parts["valid"], parts["test"])
        # The notebook numbered users and items after sorting: users ascending, items by first appearance.
        rows, _ = common.remap_ids(rows, "uid")
        rows, _ = common.remap_ids(rows, "iid")
        splits = common.finish(rows, valid_small_frac=0.5, id_lists=True)
        splits["test_warm_cold"] = common.warm_cold(splits["test"], splits["train"])
        for note in notes:
            print(note)
        return splits, notes
