"""A finished run's top-k items for one user, with titles and scores (minigpt4/recommender.py, `recommend`).

An LLM run re-ranks the best unseen items of its stage-0 encoder (every unseen item when it has none); a stage-0
run ranks every unseen item.

Usage: python recommend.py --run runs/demo/binllm --user 42 [--k 10] [--candidates 1,2,3] [--before test]"""

import argparse
import os
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished run's directory (its config.yaml and checkpoint)")
    p.add_argument("--user", required=True, type=int, help="the user id")
    p.add_argument("--k", type=int, default=10, help="how many items to print")
    p.add_argument("--candidates", type=lambda v: [int(x) for x in v.split(",") if x],
                   help="comma-separated item ids to rank instead of the unseen items")
    p.add_argument("--before", choices=("valid_full", "test"), help="recommend as of the start of this split (its "
                   "history and seen items from the splits before it), e.g. to compare with what the user liked in "
                   "test")
    p.add_argument("--options", nargs="+", default=[], help="key=value overrides of the run's config")
    args = p.parse_args(argv)
    from minigpt4.config import ConfigError
    from minigpt4.errors import DataError

    try:
        from transformers.utils import logging as hf_logging

        from minigpt4.recommender import Recommender

        hf_logging.disable_progress_bar()  # the weights' loading bar is noise above a table

        rec = Recommender.from_run(args.run, options=args.options)
        top = rec.recommend(args.user, k=args.k, candidates=args.candidates, before=args.before)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"user {args.user}: top {len(top)} of {args.run}" + (f" as of the start of {args.before}" if args.before
                                                                   else ""))
    print(top.to_string(index=False, formatters={"score": "{:.4f}".format}))
    if args.before:  # what the user went on to like, to compare with
        rows = rec.frames[args.before]
        liked = rows[(rows["uid"] == args.user) & (rows["label"] == 1)]
        hits = int(top["iid"].isin(liked["iid"]).sum())
        shown = "; ".join(liked["title"].astype(str).str.strip().head(10))
        print(f"liked next ({args.before}, {len(liked)} items{', first 10' if len(liked) > 10 else ''}): "
              f"{shown or 'nothing'}")
        print(f"{hits} of the top {len(top)} are among them")
    return top


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
