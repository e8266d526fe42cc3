"""What ranking and a one-user recommendation need besides the rows to score, read from the processed splits:
the item catalogue (every item with its title), the items each user interacted with, a user's liked history after
their last interaction, and negatives sampled among the items a user never interacted with.

`frames` is {split name: rows} of the three disjoint files, train, valid_full and test (valid = valid_small is a
part of valid_full); their rows run forward in time in that order (docs/DATA.md).
"""

import numpy as np

from minigpt4.errors import DataError

TIME_ORDER = ("train", "valid_full", "test")


def item_catalogue(frames):
    """Every item of the rows and histories with its title: a DataFrame (iid, title), sorted by iid. An item
    titled two ways is an error naming both (the prompts would not agree on it)."""
    import pandas as pd

    parts = []
    for name, df in frames.items():
        parts.append(pd.DataFrame({"iid": df["iid"].to_numpy(), "title": df["title"].to_numpy(), "split": name}))
        his = df["his"].explode()
        titles = df["his_title"].explode()
        keep = his.notna() & (his.astype("float64") > 0)  # 0 pads the histories
        parts.append(pd.DataFrame({"iid": his[keep].astype(np.int64).to_numpy(),
                                   "title": titles[keep].to_numpy(), "split": f"{name} histories"}))
    rows = pd.concat(parts, ignore_index=True)
    rows["title"] = rows["title"].astype(str).str.strip()
    unique = rows.drop_duplicates(["iid", "title"])
    clash = unique[unique.duplicated("iid", keep=False)]
    if len(clash):
        iid = int(clash["iid"].iloc[0])
        seen = clash[clash["iid"] == iid]
        raise DataError(f"item {iid} has two titles: " + "; ".join(
            f"{t!r} in {s}" for t, s in zip(seen["title"], seen["split"])))
    return unique[["iid", "title"]].sort_values("iid", ignore_index=True)


def interacted(frames):
    """{uid: sorted array of every item the user has a row for, in any split and with either label}."""
    import pandas as pd

    rows = pd.concat([df[["uid", "iid"]] for df in frames.values()], ignore_index=True)
    return {int(u): np.unique(g.to_numpy()) for u, g in rows.groupby("uid")["iid"]}


def latest_history(frames, uid):
    """(item ids, titles) a user had liked after their last interaction, oldest first: the `his` of their last
    row, plus that row's item when it was liked. A user without rows is an error with the range of user ids."""
    for name in reversed(TIME_ORDER):
        df = frames.get(name)
        if df is None:
            continue
        mine = df[df["uid"] == uid]
        if len(mine):
            last = mine.iloc[-1]
            ids = [int(i) for i in last["his"] if int(i) > 0]
            titles = [str(t) for i, t in zip(last["his"], last["his_title"]) if int(i) > 0]
            if int(last["label"]) == 1:
                ids.append(int(last["iid"]))
                titles.append(str(last["title"]).strip())
            return ids, titles
    users = np.concatenate([df["uid"].to_numpy() for df in frames.values()])
    raise DataError(f"user {uid} has no rows in {', '.join(frames)}; user ids run from {users.min()} to "
                    f"{users.max()}")


def sample_negatives(uids, items, seen, n, seed):
    """[len(uids), n] item ids drawn uniformly, without replacement, from `items` minus the items `seen[uid]` (each
    row's user), in row order from one seeded generator: the same (uids, items, seen, n, seed) give the same
    candidates, whichever method then ranks them."""
    items = np.unique(np.asarray(items, dtype=np.int64))
    rng = np.random.default_rng(seed)
    out = np.empty((len(uids), n), dtype=np.int64)
    pools = {}  # a user's unseen items, computed once for all their positives
    for row, uid in enumerate(np.asarray(uids)):
        pool = pools.get(int(uid))
        if pool is None:
            pool = pools[int(uid)] = np.setdiff1d(items, seen.get(int(uid), ()))
        if len(pool) < n:
            raise DataError(f"user {int(uid)} has {len(pool)} items they never interacted with, fewer than the "
                            f"{n} negatives asked for: ask for fewer")
        out[row] = rng.choice(pool, size=n, replace=False)
    return out


def candidate_rows(users, candidates, catalogue, labels=None):
    """Rows to score for ranking: user row r (a DataFrame row with uid, his, his_title) once with each item of
    `candidates[r]`, titled from `catalogue` (item_catalogue's frame). `labels[r]`: each candidate's label (default
    0). Returns (rows, groups): the rows in user order, and each user's row positions."""
    import pandas as pd

    titles = dict(zip(catalogue["iid"].to_numpy().tolist(), catalogue["title"].tolist()))
    out, groups = [], []
    for r, (user, items) in enumerate(zip(users.itertuples(index=False), candidates)):
        items = [int(i) for i in items]
        unknown = [i for i in items if i not in titles]
        if unknown:
            raise DataError(f"item {unknown[0]} is not in the catalogue (item ids run from {min(titles)} to "
                            f"{max(titles)}; {len(titles)} items have titles)")
        marks = [0] * len(items) if labels is None else [int(x) for x in labels[r]]
        groups.append(np.arange(len(out), len(out) + len(items)))
        for i, label in zip(items, marks):
            out.append({"uid": int(user.uid), "iid": i, "label": label, "his": list(user.his),
                        "his_title": list(user.his_title), "title": titles[i]})
    return pd.DataFrame(out, columns=["uid", "iid", "label", "his", "his_title", "title"]), groups


def ranking_candidates(frames, negatives=19, seed=0, users=0, positives=0):
    """What every method ranks: `users` test users with a positive test row drawn with `seed` (0: all of them), up
    to `positives` of each one's positive test rows drawn with `seed` (0: all), and for each such row `negatives`
    items the user never interacted with in any split, drawn uniformly with `seed` (`sample_negatives`). A
    DataFrame (row: the test row's index, uid, positive, negatives: a list), in test-row order. Users who
    interacted with all but fewer than `negatives` items cannot be ranked so and are left out before the draw;
    `.attrs["left_out_users"]` lists them."""
    import pandas as pd

    for name, value in (("users", users), ("positives", positives)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DataError(f"{name} = {value!r}: ask for a number >= 1, or 0 for all")
    test = frames["test"]
    chosen = test[test["label"].to_numpy() == 1]
    items = item_catalogue(frames)["iid"].to_numpy()
    seen = interacted(frames)
    uids = np.unique(chosen["uid"].to_numpy())
    few = [int(u) for u in uids if len(items) - len(seen.get(int(u), ())) < negatives]
    uids = np.setdiff1d(uids, few)
    if users and users < len(uids):
        uids = np.sort(np.random.default_rng([seed, 0]).choice(uids, size=users, replace=False))
    chosen = chosen[np.isin(chosen["uid"].to_numpy(), uids)]
    if positives:
        rng = np.random.default_rng([seed, 2])
        keep = [np.sort(rng.choice(idx, size=min(positives, len(idx)), replace=False))
                for _, idx in sorted(chosen.groupby("uid").indices.items())]
        chosen = chosen.iloc[np.sort(np.concatenate(keep))] if keep else chosen
    drawn = sample_negatives(chosen["uid"].to_numpy(), items, seen, negatives, [seed, 1])
    sets = pd.DataFrame({"row": chosen.index.to_numpy(), "uid": chosen["uid"].to_numpy().astype(np.int64),
                         "positive": chosen["iid"].to_numpy().astype(np.int64),
                         "negatives": [list(map(int, r)) for r in drawn]})
    sets.attrs["left_out_users"] = few
    return sets
