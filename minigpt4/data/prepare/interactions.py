"""Any interaction log as a dataset: `prepare_data.py interactions` (docs/DATA.md, "Your own dataset").

Only the reading of the raw files is dataset-specific; the rest is the same for every dataset and lives here once
(`build_splits`, which `movielens100k.py` uses too):
- label: rating >= `liked` (ML-1M and ML-100K: 4), or a 0/1 column as it is;
- optional k-core: drop users and items with fewer than k interactions, repeated until none is left;
- a temporal split: by given dates (train before the first, valid before the second, test from it on), or at the
  timestamps that leave the given fractions of rows before them (CoLLM's ML-1M shares by default, 66 / 20 / 14 %);
- a user's rows in time order, same-second rows ordered by item id (so the result does not depend on the order of
  rows in the file); train, valid and test concatenated, sorted by (user, time) and walked for histories of liked
  titles; users and items numbered 1.. in that order; valid_small (a fraction of valid, seed 2023) and
  test_warm_cold (ML-1M's warm / cold rule) as for the other datasets (common.finish).
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from minigpt4.data.prepare import common
from minigpt4.data.splits import DataError
from minigpt4.fileio import atomic_text
from minigpt4.registry import register

COLLM_FRACTIONS = (0.66, 0.20, 0.14)  # ML-1M as CoLLM processed it: 33,891 / 10,401 / 7,331 rows
CONFIG_MARK = "# Written by `prepare_data.py interactions`"
SHIPPED_CONFIGS = ("ml1m", "ml100k", "amazon")
SEPARATORS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
_INT = re.compile(r"-?(0|[1-9][0-9]*)")


@dataclass
class Table:
    """Columns read from one file: role -> values as strings; `line(k)` names row k in messages."""

    where: str
    values: dict
    first_line: int  # the file line of row 0 (2 under a header line); 0 for Parquet (rows are numbered instead)

    def line(self, k):
        return f"row {k + 1}" if self.first_line == 0 else f"line {k + self.first_line}"

    def __len__(self):
        return len(next(iter(self.values.values())))


def _separator(path, sep):
    if sep not in (None, "", "auto"):
        return {"tab": "\t", "\\t": "\t", "comma": ",", "space": " "}.get(sep, sep)
    suffixes = [s.lower() for s in Path(path).suffixes if s.lower() != ".gz"]
    return SEPARATORS.get(suffixes[-1] if suffixes else "", ",")


def read_table(path, columns, sep="auto", encoding="utf-8", option="--interactions"):
    """The `columns` ({role: header name, or 1-based position in a file without a header line}) of a CSV / TSV
    (gzip accepted) or Parquet file, each as strings. Columns named by position mean the file has no header."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise DataError(f"{option} {path}: no such file")
    wanted = {role: str(c).strip() for role, c in columns.items() if c not in (None, "")}
    positional = [role for role, c in wanted.items() if c.isdigit()]
    if positional and len(positional) != len(wanted):
        named = [f"{role}={wanted[role]!r}" for role in wanted if role not in positional]
        raise DataError(f"{where}: columns are given partly by position ({', '.join(positional)}) and partly by "
                        f"name ({', '.join(named)}); give all by name (a file with a header line) or all by position")
    parquet = ".parquet" in [s.lower() for s in path.suffixes]
    try:
        if parquet:
            if positional:
                raise DataError(f"{where}: a Parquet file has column names; give the columns by name")
            frame = pd.read_parquet(path)
        else:
            s = _separator(path, sep)
            frame = pd.read_csv(path, sep=s, header=None if positional else 0, dtype=str, keep_default_na=False,
                                encoding=encoding, engine="python" if len(s) > 1 else "c", compression="infer",
                                skip_blank_lines=True)
    except DataError:
        raise
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not {encoding} text ({err}); set --encoding") from None
    except (ValueError, OSError, pd.errors.ParserError) as err:  # a ragged line, a damaged gzip or Parquet file
        raise DataError(f"{where}: cannot be read as {'Parquet' if parquet else 'delimited text'}: "
                        f"{str(err).strip().splitlines()[0]}") from None
    if positional:
        frame.columns = [str(k + 1) for k in range(frame.shape[1])]
    values = {}
    for role, col in wanted.items():
        if col not in frame.columns:
            has = (f"{frame.shape[1]} columns" if positional else
                   "columns " + ", ".join(repr(str(c)) for c in frame.columns))
            raise DataError(f"{where}: no column {col!r} (the {role}; set --{role}-col); the file has {has}")
        values[role] = frame[col].astype(str).str.strip().to_numpy(dtype=object)
    if frame.shape[0] == 0:
        raise DataError(f"{where}: no rows")
    return Table(where, values, 0 if parquet else (1 if positional else 2))


def _ids(values):
    """Integer ids stay integers (so they sort as numbers); anything else is kept as text."""
    if all(_INT.fullmatch(v) for v in values):
        return values.astype(np.int64)
    return values


def _first(table, mask, what):
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        k = int(np.flatnonzero(mask)[0])
        raise DataError(f"{table.where}: {table.line(k)}: {what(k)}" + (
            f" ({int(mask.sum()):,} rows in all)" if mask.sum() > 1 else ""))


def parse_times(table, time_format="auto"):
    """Unix seconds (int64) of the `time` column: numbers (seconds; `unix-ms`: milliseconds) or dates and times,
    ISO 8601 under `auto` or by a strftime format; naive dates are UTC."""
    raw = table.values["time"]
    fmt = time_format
    if fmt == "auto":
        fmt = "unix" if _is_number(raw[0]) else "iso"
    if fmt in ("unix", "unix-ms"):
        numbers = pd.to_numeric(pd.Series(raw), errors="coerce").to_numpy()
        _first(table, ~np.isfinite(numbers), lambda k: f"the time {raw[k]!r} is not a number (--time-format {fmt})")
        return np.floor(numbers / (1000 if fmt == "unix-ms" else 1)).astype(np.int64)
    parsed = pd.to_datetime(pd.Series(raw), format="ISO8601" if fmt == "iso" else fmt, errors="coerce", utc=True)
    _first(table, parsed.isna().to_numpy(), lambda k: f"the time {raw[k]!r} does not parse as "
           + ("an ISO 8601 date (e.g. 2017-03-01 or 2017-03-01T12:30:00)" if fmt == "iso" else f"{fmt!r}")
           + "; set --time-format (unix, unix-ms, iso or a strftime format such as %d/%m/%Y)")
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(dtype=np.int64)


def _is_number(text):
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def parse_date(text, option):
    try:
        when = pd.Timestamp(text)
    except ValueError:
        raise DataError(f"{option}: {text!r} is not a date (e.g. 1998-02-01)") from None
    when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    return int(when.timestamp())


@dataclass
class Split:
    """Where train ends and test begins: given dates (Unix seconds), or the shares of rows before them."""

    dates: tuple = None  # (valid from, test from)
    fractions: tuple = COLLM_FRACTIONS

    def bounds(self, times):
        if self.dates:
            return self.dates
        order = np.sort(times)
        n = len(order)
        cut = [min(n - 1, int(round(n * self.fractions[0]))),
               min(n - 1, int(round(n * (self.fractions[0] + self.fractions[1]))))]
        return int(order[cut[0]]), int(order[cut[1]])

    def describe(self, bounds):
        fmt = "%Y-%m-%d %H:%M:%S UTC"
        at = [datetime.fromtimestamp(b, tz=timezone.utc).strftime(fmt) for b in bounds]
        how = "given dates" if self.dates else "fractions " + "/".join(f"{f:g}" for f in self.fractions)
        return f"train before {at[0]}, valid before {at[1]}, test from then on ({how})"


def kcore(rows, k):
    """Users and items with at least k rows, repeated until every one left has k (0 or 1: everything)."""
    if k <= 1:
        return rows
    while True:
        users, items = rows["uid"].value_counts(), rows["iid"].value_counts()
        keep = rows["uid"].map(users).ge(k) & rows["iid"].map(items).ge(k)
        if keep.all():
            return rows
        rows = rows[keep]


def build_splits(rows, split, valid_small_frac=0.5, min_interactions=0, where="the interactions"):
    """rows: uid, iid (raw ids), timestamp (seconds), label (0/1), title, one per interaction. Returns the splits
    (train, valid, valid_small, test, test_warm_cold) and notes on what was done."""
    notes = []
    before = len(rows)
    rows = kcore(rows, min_interactions)
    if len(rows) < before:
        notes.append(f"{min_interactions}-core: kept {len(rows):,} of {before:,} interactions "
                     f"({rows['uid'].nunique():,} users, {rows['iid'].nunique():,} items)")
    if rows.empty:
        raise DataError(f"{where}: no interaction is left after the {min_interactions}-core filter (--min-"
                        f"interactions); lower it")
    # same-second rows of a user ordered by item id: interleave keeps this order among ties
    rows = rows.sort_values(["uid", "timestamp", "iid"], kind="stable")
    bounds = split.bounds(rows["timestamp"].to_numpy())
    t = rows["timestamp"]
    parts = {"train": rows[t < bounds[0]], "valid": rows[(t >= bounds[0]) & (t < bounds[1])],
             "test": rows[t >= bounds[1]]}
    for name, part in parts.items():
        if part.empty:
            raise DataError(f"{where}: the {name} split is empty ({split.describe(bounds)}; the interactions run "
                            f"from {_day(t.min())} to {_day(t.max())}); choose other --split-dates or --fractions")
    shares = ", ".join(f"{name} {len(p):,} ({len(p) / len(rows):.0%})" for name, p in parts.items())
    notes.append(f"split: {split.describe(bounds)}: {shares}")
    raw = common.interleave(parts["train"], parts["valid"], parts["test"])
    merged, _ = common.remap_ids(raw, "uid")
    merged, _ = common.remap_ids(merged, "iid")
    splits = common.finish(merged, valid_small_frac=valid_small_frac, id_lists=True)
    splits["test_warm_cold"] = common.warm_cold(splits["test"], splits["train"])
    # the raw ids behind the new ones (the same rows in the same order)
    users = pd.DataFrame({"uid": merged["uid"], "user": raw["uid"]}).drop_duplicates("uid")
    items = pd.DataFrame({"iid": merged["iid"], "item": raw["iid"], "title": merged["title"]}).drop_duplicates("iid")
    maps = {"users.csv": users.sort_values("uid", ignore_index=True),
            "items.csv": items.sort_values("iid", ignore_index=True)}
    return splits, notes, maps


def _day(seconds):
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%d")


def read_interactions(args):
    """The interactions file as rows (uid, iid, timestamp, label), indexed by their row in the file."""
    columns = {"user": args.user_col, "item": args.item_col, "time": args.time_col}
    columns.update({"label": args.label_col} if args.label_col else {"rating": args.rating_col})
    table = read_table(args.interactions, columns, args.sep, args.encoding)
    v = table.values
    if args.label_col:
        label = pd.to_numeric(pd.Series(v["label"]), errors="coerce").to_numpy()
        _first(table, ~np.isin(label, (0, 1)), lambda k: f"the label (column {args.label_col!r}) must be 0 or 1, "
               f"got {v['label'][k]!r}")
        label = label.astype(np.int64)
    else:
        rating = pd.to_numeric(pd.Series(v["rating"]), errors="coerce").to_numpy()
        _first(table, ~np.isfinite(rating), lambda k: f"the rating (column {args.rating_col!r}) must be a number, "
               f"got {v['rating'][k]!r}")
        label = (rating >= args.liked).astype(np.int64)
    for role in ("user", "item"):
        _first(table, v[role] == "", lambda k, role=role: f"the {role} id is empty")
    rows = pd.DataFrame({"uid": _ids(v["user"]), "iid": _ids(v["item"]), "timestamp": parse_times(table,
                         args.time_format), "label": label})  # index = row of the file
    dup = rows.duplicated(["uid", "iid", "timestamp"], keep=False).to_numpy()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        same = rows[(rows["uid"] == rows["uid"].iloc[k]) & (rows["iid"] == rows["iid"].iloc[k])
                    & (rows["timestamp"] == rows["timestamp"].iloc[k])]
        raise DataError(f"{table.where}: {table.line(k)} and {table.line(int(same.index[1]))}: user "
                        f"{v['user'][k]!r}, item {v['item'][k]!r} at the same time {v['time'][k]!r} twice "
                        f"({int(dup.sum()):,} such rows in all); remove the duplicates")
    return rows, table


def read_titles(args, interactions, table):
    """item id -> title from the items file; every interacted item needs one."""
    template = "{" in args.title_col
    fields = re.findall(r"{([^{}]+)}", args.title_col) if template else []
    columns = {"item": args.items_id_col or args.item_col, **({f"title field {f}": f for f in fields} if template
                                                              else {"title": args.title_col})}
    items = read_table(args.items, columns, args.items_sep, args.encoding, option="--items")
    ids = _ids(items.values["item"])
    if template:
        try:
            titles = np.array([args.title_col.format(**{f: items.values[f"title field {f}"][k] for f in fields})
                               for k in range(len(items))], dtype=object)
        except (KeyError, IndexError, ValueError) as err:
            raise DataError(f"--title-col {args.title_col!r}: not a template of column names ({err})") from None
    else:
        titles = items.values["title"]
    titles = np.array([t.strip() for t in titles], dtype=object)
    frame = pd.DataFrame({"iid": ids, "title": titles})
    dup = frame["iid"].duplicated(keep=False).to_numpy()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        other = int(np.flatnonzero(dup & (frame["iid"] == frame["iid"].iloc[k]).to_numpy())[1])
        raise DataError(f"{items.where}: {items.line(k)} and {items.line(other)}: item {items.values['item'][k]!r} "
                        "appears twice; give each item one row")
    by_id = dict(zip(frame["iid"], frame["title"]))
    empty = titles == ""
    used = pd.Series(ids).isin(set(interactions["iid"])).to_numpy()
    _first(items, empty & used, lambda k: f"item {items.values['item'][k]!r} has no title (--title-col "
           f"{args.title_col!r}); every item the interactions name needs one")
    known = interactions["iid"].isin(list(by_id)).to_numpy()
    if not known.all():
        k = int(np.flatnonzero(~known)[0])
        raise DataError(f"{table.where}: {table.line(k)}: item {table.values['item'][k]!r} has no row in "
                        f"{items.where} ({int((~known).sum()):,} interactions have none); every item needs a title")
    return by_id


def dataset_name(args):
    name = args.name or Path(args.out).name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise DataError(f"--name {name!r}: use letters, digits, '_' and '-' (it names the dataset config and the "
                        "runs folder)")
    return name


def config_path(args):
    """--config, or train_configs/datasets/<name>.yaml of the folder the commands run from (the repository's when
    that folder has no train_configs/)."""
    if args.config:
        return Path(args.config)
    root = Path.cwd() if (Path.cwd() / "train_configs").is_dir() else Path(__file__).resolve().parents[3]
    return root / "train_configs" / "datasets" / f"{dataset_name(args)}.yaml"


def check_config(args):
    """Refuse, before anything is written, to replace a dataset config this command did not write."""
    path = config_path(args)
    if path.stem in SHIPPED_CONFIGS and path.parent.name == "datasets":
        raise DataError(f"--name {path.stem}: the shipped dataset config train_configs/datasets/{path.name} has that "
                        "name; choose another --name")
    if path.exists() and not path.read_text(encoding="utf-8").startswith(CONFIG_MARK):
        raise DataError(f"{path} exists and was not written by `prepare_data.py interactions`; choose another "
                        "--name or --config")
    return path


def config_text(args, manifest):
    name, out = dataset_name(args), Path(args.out)
    try:  # relative to where the commands run, as the shipped configs' data/ paths
        shown = out.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = out.resolve()
    noun = [f"item_noun: {json.dumps(args.noun)}"] + (
        [f"item_noun_plural: {json.dumps(args.noun_plural)}"] if args.noun_plural else [])
    return f"""{CONFIG_MARK} from {args.interactions}:
# {manifest['rows_total']:,} interactions of {manifest['users']:,} users and {manifest['items']:,} items
# (docs/DATA.md, "Your own dataset"). Any ML-1M recipe runs on it with a one-line config, e.g.
#   defaults: [ml1m_binllm.yaml, datasets/{name}.yaml]
# runs go to runs/{name}/.
datasets:
  movie_ood: {{path: {json.dumps(str(shown) + "/")}}}
model: {{{", ".join(noun)}}}
run: {{output_dir: runs/{name}}}
"""


@register("preparer", "interactions")
class Interactions:
    """Any interaction log: an interactions file (user, item, time, and a rating or a 0/1 label) and an items
    file (item id, title), CSV / TSV (gzip accepted) or Parquet.

    Columns are named by their header, or by position (1 = first) in a file without a header line. Label =
    rating >= --liked, or the --label-col as it is. Split in time: by --split-dates, or at the times that leave
    --fractions of the rows before them. Then the same rules as ML-1M: histories of liked titles, ids numbered
    1.., valid_small, test_warm_cold. Writes the splits, manifest.json, users.csv and items.csv (raw id -> id,
    title), and the dataset config train_configs/datasets/<name>.yaml, so that any ml1m_* recipe runs on it with
    `defaults: [ml1m_<method>.yaml, datasets/<name>.yaml]` (docs/DATA.md, "Your own dataset").
    """
    summary = "any interaction log: CSV/TSV/Parquet files of interactions and item titles, columns as options"
    published = {}

    @staticmethod
    def add_arguments(parser):
        d = "(default: %(default)s)"
        parser.add_argument("--interactions", type=Path, required=True,
                            help="interactions file: .csv, .tsv, .parquet (.gz accepted)")
        parser.add_argument("--items", type=Path, required=True, help="items file with an id and a title per item")
        parser.add_argument("--name", default="", help="dataset name: the config train_configs/datasets/<name>.yaml "
                            "and runs/<name>/ (default: the --out folder's name)")
        parser.add_argument("--user-col", default="user_id", help=f"user id column {d}")
        parser.add_argument("--item-col", default="item_id", help=f"item id column {d}")
        parser.add_argument("--time-col", default="timestamp", help=f"time column {d}")
        parser.add_argument("--rating-col", default="rating", help=f"rating column {d}")
        parser.add_argument("--liked", type=float, default=4.0, help=f"label 1 when rating >= this {d}")
        parser.add_argument("--label-col", default="", help="a 0/1 label column to use instead of a rating "
                            "(default: none)")
        parser.add_argument("--items-id-col", default="", help="item id column of the items file (default: "
                            "--item-col)")
        parser.add_argument("--title-col", default="title", help="title column of the items file, or a template "
                            "of its columns such as '{title} ({year})' " + d)
        parser.add_argument("--sep", default="auto", help="separator of the interactions file: auto (by "
                            "extension: .csv comma, .tsv tab), tab, comma or the characters " + d)
        parser.add_argument("--items-sep", default="auto", help=f"separator of the items file {d}")
        parser.add_argument("--encoding", default="utf-8", help=f"text encoding of both files {d}")
        parser.add_argument("--time-format", default="auto", help="auto (numbers: Unix seconds, else ISO 8601 "
                            "dates), unix, unix-ms, iso, or a strftime format such as %%d/%%m/%%Y " + d)
        split = parser.add_mutually_exclusive_group()
        split.add_argument("--split-dates", default="", help="two dates: valid from the first, test from the "
                           "second, e.g. 1998-02-01,1998-03-01 (UTC) (default: split by --fractions)")
        split.add_argument("--fractions", default=",".join(f"{f:g}" for f in COLLM_FRACTIONS),
                           help="train,valid,test shares of the rows, cut in time (CoLLM's ML-1M) " + d)
        parser.add_argument("--min-interactions", type=int, default=0, help="k-core: keep users and items with at "
                            "least this many interactions, repeated until all have (0: keep all) " + d)
        parser.add_argument("--valid-small", type=float, default=0.5, help="share of valid in valid_small, the "
                            f"split model selection scores (ML-1M 0.5, Amazon-Book 0.25) {d}")
        parser.add_argument("--noun", default="item", help="what an item is, in the prompts' words: movie, book, "
                            f"song ... (model.item_noun) {d}")
        parser.add_argument("--noun-plural", default="", help="its plural (default: the noun + s)")
        parser.add_argument("--config", default="", help="where to write the dataset config (default: "
                            "train_configs/datasets/<name>.yaml)")

    def build(self, args):
        dataset_name(args)  # every check before anything is written
        check_config(args)
        split = Split(dates=_split_dates(args.split_dates)) if args.split_dates else Split(
            fractions=_fractions(args.fractions))
        if not 0 < args.valid_small <= 1:
            raise DataError(f"--valid-small {args.valid_small}: must be in (0, 1]")
        if not re.fullmatch(r"[A-Za-z][A-Za-z -]*", args.noun):
            raise DataError(f"--noun {args.noun!r}: one or a few words of letters")
        rows, table = read_interactions(args)
        titles = read_titles(args, rows, table)
        rows["title"] = rows["iid"].map(titles).astype(object)
        splits, notes, self.tables = build_splits(rows, split, args.valid_small,
                                                  args.min_interactions, where=table.where)
        notes.insert(0, f"{len(table):,} interactions in {table.where}; label "
                        + (f"= {args.label_col}" if args.label_col else f"= {args.rating_col} >= {args.liked:g}"))
        for note in notes:
            print(note)
        return splits, notes

    def after_writing(self, args, manifest):
        """The dataset config, last: it names the data that now exists."""
        path = config_path(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_text(path, config_text(args, {**manifest, "rows_total": sum(
            manifest["splits"][s]["rows"] for s in ("train", "valid", "test"))}))
        print(f"wrote {path}; any ML-1M recipe runs on it with `defaults: [ml1m_<method>.yaml, "
              f"datasets/{dataset_name(args)}.yaml]`")


def _split_dates(text):
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise DataError(f"--split-dates {text!r}: give two dates, valid's first day and test's, e.g. "
                        "1998-02-01,1998-03-01")
    dates = tuple(parse_date(p, "--split-dates") for p in parts)
    if dates[0] >= dates[1]:
        raise DataError(f"--split-dates {text!r}: valid must begin before test")
    return dates


def _fractions(text):
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
        raise DataError(f"--fractions {text!r}: three positive shares of train, valid and test that sum to 1, e.g. "
                        "0.66,0.2,0.14")
    return values
