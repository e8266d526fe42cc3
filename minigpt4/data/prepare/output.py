"""Writing a prepared dataset: every split as a pickle (what upstream code reads) and as Parquet (plain data,
read first by `minigpt4.data.splits`), then `manifest.json` with row counts, id counts and the sha256 of every
file. Each file is written to a temporary name and renamed, so an interrupted run never leaves a half file
under a final name. The counts are printed next to the published ones; a difference is a warning."""

import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from minigpt4.data.splits import validate_split
from minigpt4.fileio import atomic_write, sha256_file

SUFFIX = "_ood2"


def file_names(stem):
    return f"{stem}{SUFFIX}.pkl", f"{stem}{SUFFIX}.parquet"


def _readable(tmp):
    """Temporary files are created private (0600); give the data files the usual umask-based mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def _write_pickle(df, tmp):
    df.to_pickle(tmp, compression=None)  # no compression guessed from the temporary name
    _readable(tmp)


def _write_parquet(df, tmp):
    df.to_parquet(tmp)
    _readable(tmp)


def _write_csv(df, tmp):
    df.to_csv(tmp, index=False)
    _readable(tmp)


def _write_json(obj, tmp):
    Path(tmp).write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    _readable(tmp)


def counts(splits):
    """Rows per split; distinct users/items over train+valid+test; user_num/item_num = max id + 1, the
    convention of the published tables and of the training scripts (spec §1.4)."""
    frames = [splits[s] for s in ("train", "valid", "test")]
    uids = set().union(*(f["uid"].unique() for f in frames))
    iids = set().union(*(f["iid"].unique() for f in frames))
    return {"rows": {name: len(df) for name, df in splits.items()},
            "users": len(uids), "items": len(iids),
            "user_num": int(max(uids)) + 1, "item_num": int(max(iids)) + 1}


def compare(found, published, out=None, err=None):
    """Print ours next to the published numbers; return the keys that differ (each also warned about)."""
    out, err = out or sys.stdout, err or sys.stderr  # looked up per call (tests swap the streams)
    ours = dict(found["rows"], user_num=found["user_num"], item_num=found["item_num"])
    print(f"{'':14}{'prepared':>12}{'published':>12}", file=out)
    differ = []
    for key, value in ours.items():
        ref = published.get(key)
        mark = "" if ref is None or ref == value else "  <- differs"
        print(f"{key:14}{value:>12,}{'' if ref is None else format(ref, ','):>12}{mark}", file=out)
        if mark:
            differ.append(key)
    for key in differ:
        print(f"warning: {key} = {ours[key]:,}, the published count is {published[key]:,}", file=err)
    return differ


def write_prepared(out_dir, splits, *, dataset, published, inputs, notes=(), tables=None):
    """Validate and write every split (and `tables`, {file name: DataFrame} written as CSV, e.g. the raw ids
    behind the new ones), then the manifest; return the manifest dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, df in splits.items():
        validate_split(df, out_dir / file_names(stem)[0])  # same schema check as training's reader
    hashes = {}
    for stem, df in tqdm(list(splits.items()), desc="writing", unit="split"):
        pkl, parquet = file_names(stem)
        atomic_write(out_dir / pkl, lambda tmp: _write_pickle(df, tmp))
        atomic_write(out_dir / parquet, lambda tmp: _write_parquet(df, tmp))
        hashes[pkl] = sha256_file(out_dir / pkl)
        hashes[parquet] = sha256_file(out_dir / parquet)
    for name, df in (tables or {}).items():
        atomic_write(out_dir / name, lambda tmp, df=df: _write_csv(df, tmp))
        hashes[name] = sha256_file(out_dir / name)
    found = counts(splits)
    manifest = {"dataset": dataset, "inputs": {k: str(v) for k, v in inputs.items()},
                "splits": {stem: {"rows": found["rows"][stem], "files": list(file_names(stem))}
                           for stem in splits},
                "users": found["users"], "items": found["items"],
                "user_num": found["user_num"], "item_num": found["item_num"],
                "published": published, "notes": list(notes), "sha256": hashes}
    atomic_write(out_dir / "manifest.json", lambda tmp: _write_json(manifest, tmp))
    compare(found, published)
    print(f"wrote {len(hashes)} files and manifest.json to {out_dir}")
    return manifest
