"""Rebuild the processed splits from the original public files: `python prepare_data.py <dataset> ... --out DIR`.

Each dataset is one class registered under the registry kind `preparer`; `prepare_data.py` offers one
subcommand per registered name. To add a dataset, write a module next to `movielens.py`:

    @register("preparer", "my-data")
    class MyData:
        summary = "one line for --help"
        published = {"train": 1234, "valid": 56, "test": 78, "user_num": 90, "item_num": 120}  # may be {}

        @staticmethod
        def add_arguments(parser):          # its own input options; --out is added for every dataset
            parser.add_argument("--raw", type=Path, required=True, help="...")

        def build(self, args):
            ...  # read the raw files, label, filter, remap ids, cut train / valid / test (frames with
                 # uid, iid, label, timestamp, title), then:
            rows = common.interleave(train, valid, test)
            return common.finish(rows, valid_small_frac=0.5), ["notes for manifest.json"]

and import it below. Optional: `self.tables` ({file name: DataFrame}, written as CSV beside the splits) and
`after_writing(args, manifest)` (run once the data is written). A log that needs no code of its own goes through
the generic `interactions` preparer instead (docs/DATA.md, "Your own dataset"). `build` raises `minigpt4.data.splits.DataError` for bad input (it is printed as
`error: ...`, exit status 2). The result is written by `output.write_prepared`: pickles, Parquet copies and
`manifest.json`; training reads the directory through `datasets.<name>.path`.
"""

import argparse
import inspect
import sys
from pathlib import Path

from minigpt4 import registry
from minigpt4.data.prepare import amazon_book, interactions, movielens, movielens100k  # noqa: F401  (registers the preparers)
from minigpt4.data.prepare.output import write_prepared
from minigpt4.data.splits import DataError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Rebuild train/valid/valid_small/test splits (pickle + Parquet + manifest.json) from the "
                    "original dataset files, as the upstream notebooks did.")
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name in registry.names("preparer"):
        preparer = registry.get("preparer", name)
        p = sub.add_parser(name, help=preparer.summary, description=inspect.cleandoc(preparer.__doc__),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        preparer.add_arguments(p)
        p.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    return parser


def prepare(name, args):
    """Build dataset `name` from the parsed arguments and write it to `args.out`; return the manifest."""
    preparer = registry.get("preparer", name)()
    splits, notes = preparer.build(args)
    inputs = {k: v for k, v in vars(args).items() if k not in ("dataset", "out")}
    manifest = write_prepared(args.out, splits, dataset=name, published=preparer.published, inputs=inputs,
                              notes=notes, tables=getattr(preparer, "tables", None))
    if hasattr(preparer, "after_writing"):  # what names the written data (the generic preparer's dataset config)
        preparer.after_writing(args, manifest)
    return manifest


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        prepare(args.dataset, args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
