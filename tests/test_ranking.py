"""Ranking's pieces: HR@K / NDCG@K / MRR against hand computations (ties included), their spread over user
redraws, the item catalogue and users' interactions from the processed splits, and sampled negatives."""

import math

import numpy as np
import pandas as pd
import pytest

from minigpt4.data.catalogue import interacted, item_catalogue, latest_history, sample_negatives
from minigpt4.data.splits import FILES, read_split
from minigpt4.errors import DataError
from minigpt4.metrics import positive_ranks, ranking_metrics, ranking_spread


def test_ranks_and_metrics_equal_a_hand_computation_with_ties():
    scores = np.array([
        [0.9, 0.1, 0.2, 0.3],   # above every negative: rank 1
        [0.5, 0.7, 0.1, 0.6],   # two negatives above: rank 3
        [0.4, 0.4, 0.1, 0.0],   # one negative ties: the tie counts against the positive, rank 2
        [0.0, 0.0, 0.0, 0.0],   # a constant scorer: every negative ties, rank 4 (no credit)
    ])
    ranks = positive_ranks(scores)
    assert ranks.tolist() == [1, 3, 2, 4]
    m = ranking_metrics(ranks)
    assert m["positives"] == 4
    assert m["hr@1"] == pytest.approx(1 / 4) and m["hr@5"] == 1.0 and m["hr@10"] == 1.0
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 4) / 4)
    ndcg = (1 / math.log2(2) + 1 / math.log2(4) + 1 / math.log2(3) + 1 / math.log2(5)) / 4
    assert m["ndcg@5"] == pytest.approx(ndcg) and m["ndcg@10"] == pytest.approx(ndcg)
    # a rank beyond K gains nothing at K
    far = ranking_metrics([7, 1])
    assert far["hr@5"] == 0.5 and far["ndcg@5"] == pytest.approx(0.5) and far["hr@10"] == 1.0
    assert far["ndcg@10"] == pytest.approx((1 / math.log2(8) + 1) / 2)
    assert np.isnan(ranking_metrics([])["mrr"]) and ranking_metrics([])["positives"] == 0


def test_ranks_need_a_negative():
    with pytest.raises(ValueError, match="at least one negative"):
        positive_ranks(np.zeros((3, 1)))


def test_spread_over_user_redraws():
    users = np.repeat(np.arange(50), 2)
    assert all(v == 0 for v in ranking_spread(users, np.full(100, 3)).values())  # every user alike: nothing moves
    ranks = np.random.default_rng(0).integers(1, 21, 100)
    spread = ranking_spread(users, ranks, seed=1)
    assert set(spread) == {"hr@1", "hr@5", "hr@10", "ndcg@5", "ndcg@10", "mrr"}
    assert 0 < spread["hr@10"] < 0.2 and spread == ranking_spread(users, ranks, seed=1)


@pytest.fixture(scope="module")
def frames(synthetic_dir):
    return {name: read_split(synthetic_dir / FILES[name]) for name in ("train", "valid_full", "test")}


def test_catalogue_holds_every_item_of_the_rows_and_histories_once(frames):
    cat = item_catalogue(frames)
    assert cat["iid"].is_unique and cat["iid"].is_monotonic_increasing
    in_rows = set(np.concatenate([f["iid"].to_numpy() for f in frames.values()]))
    in_histories = {int(i) for f in frames.values() for h in f["his"] for i in h if int(i) > 0}
    assert set(cat["iid"]) == in_rows | in_histories
    title = dict(zip(cat["iid"], cat["title"]))
    row = frames["test"].iloc[0]
    assert title[int(row["iid"])] == str(row["title"]).strip()
    assert (cat["title"].str.len() > 0).all()


def test_an_item_with_two_titles_is_an_error_naming_both(frames):
    bad = {k: v.copy() for k, v in frames.items()}
    iid = int(bad["test"]["iid"].iloc[0])
    bad["test"].loc[bad["test"].index[0], "title"] = "Another Title (1999)"
    with pytest.raises(DataError, match=rf"item {iid} has two titles: .*'Another Title \(1999\)' in test"):
        item_catalogue(bad)


def test_negatives_are_unseen_and_the_same_for_one_seed(frames):
    seen = interacted(frames)
    items = item_catalogue(frames)["iid"].to_numpy()
    positives = frames["test"][frames["test"]["label"] == 1]
    uids = positives["uid"].to_numpy()
    neg = sample_negatives(uids, items, seen, 5, seed=7)
    assert neg.shape == (len(uids), 5)
    for u, row in zip(uids, neg):
        assert len(set(row)) == 5 and not set(row) & set(seen[int(u)])
        assert set(row) <= set(items)
    assert np.array_equal(neg, sample_negatives(uids, items, seen, 5, seed=7))  # every method ranks these
    assert not np.array_equal(neg, sample_negatives(uids, items, seen, 5, seed=8))
    u = int(uids[0])
    with pytest.raises(DataError, match=rf"user {u} has \d+ items they never interacted with, fewer than"):
        sample_negatives([u], items, seen, len(items), seed=0)


def test_latest_history_is_the_last_rows_history_and_its_liked_item(frames):
    test = frames["test"]
    uid = int(test["uid"].iloc[-1])
    last = test[test["uid"] == uid].iloc[-1]
    ids, titles = latest_history(frames, uid)
    expect = [int(i) for i in last["his"] if int(i) > 0] + ([int(last["iid"])] if last["label"] == 1 else [])
    assert ids == expect and len(titles) == len(ids)
    # a user seen only in train takes the history after their train rows
    only_train = sorted(set(frames["train"]["uid"]) - set(test["uid"]) - set(frames["valid_full"]["uid"]))
    if only_train:
        assert latest_history(frames, int(only_train[0]))[0]
    with pytest.raises(DataError, match=r"user 999999 has no rows in train, valid_full, test; user ids run from"):
        latest_history(frames, 999999)


def test_catalogue_from_frames_without_histories():
    frames = {"train": pd.DataFrame({"uid": [1, 2], "iid": [3, 4], "label": [1, 0], "title": ["A", "B "],
                                     "his": [[0], [0]], "his_title": [[""], [""]]})}
    cat = item_catalogue(frames)
    assert cat.to_dict("list") == {"iid": [3, 4], "title": ["A", "B"]}


def test_ranking_candidates_draw_users_positives_and_unseen_negatives(frames):
    from minigpt4.data.catalogue import ranking_candidates

    sets = ranking_candidates(frames, negatives=4, seed=3, users=5, positives=2)
    test = frames["test"]
    assert sets["uid"].nunique() == 5 and sets.groupby("uid").size().max() <= 2
    assert (test.loc[sets["row"], "label"] == 1).all() and (test.loc[sets["row"], "iid"].to_numpy()
                                                              == sets["positive"].to_numpy()).all()
    seen = interacted(frames)
    for uid, negs in zip(sets["uid"], sets["negatives"]):
        assert len(set(negs)) == 4 and not set(negs) & set(seen[uid].tolist())
    assert sets.equals(ranking_candidates(frames, negatives=4, seed=3, users=5, positives=2))
    assert not sets.equals(ranking_candidates(frames, negatives=4, seed=4, users=5, positives=2))
    every = ranking_candidates(frames, negatives=4, seed=3)
    assert len(every) == int((test["label"] == 1).sum()) and every.attrs["left_out_users"] == []
    with pytest.raises(DataError, match="users = -1"):
        ranking_candidates(frames, users=-1)


def test_a_user_who_saw_almost_every_item_is_left_out_and_named(frames):
    """Fewer unseen items than negatives: the user cannot be ranked so; they are left out before the draw."""
    from minigpt4.data.catalogue import ranking_candidates

    items = item_catalogue(frames)["iid"].to_numpy()
    test = frames["test"]
    uid = int(test.loc[test["label"] == 1, "uid"].iloc[0])
    extra = pd.DataFrame({"uid": uid, "iid": items[:-2], "label": 0, "title": "x", "his": [[0]] * (len(items) - 2),
                          "his_title": [[""]] * (len(items) - 2)})
    titles = dict(zip(item_catalogue(frames)["iid"], item_catalogue(frames)["title"]))
    extra["title"] = [titles[int(i)] for i in extra["iid"]]
    crowded = {**frames, "train": pd.concat([frames["train"], extra], ignore_index=True)}
    sets = ranking_candidates(crowded, negatives=3, seed=0)
    assert sets.attrs["left_out_users"] == [uid] and uid not in set(sets["uid"])
