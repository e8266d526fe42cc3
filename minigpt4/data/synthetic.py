"""Deterministic synthetic recommendation dataset in the CoLLM/BinLLM ``*_ood2.pkl`` format.

The tests train on it (``make demo`` runs on MovieLens-100K, fetched at
install and never redistributed).  The output is byte-for-byte reproducible from ``(n_users, n_items, seed,
latent_dim)``.

Output (``out_dir``)
--------------------
``train_ood2.pkl``, ``valid_ood2.pkl``, ``valid_small_ood2.pkl``,
``test_ood2.pkl``, ``test_warm_cold_ood2.pkl`` (pandas ``to_pickle``) and
``README.txt``.  Columns and dtypes, as in the upstream processed pickles::

    uid int64 (1..N)   iid int64 (1..M, 0 = padding)   label int64 0/1
    timestamp int64 (unix s)   his list[int]   his_title list[str]
    title str   flag float64 (-1 train / 0 valid / 1 test)   not_cold int64

The rules below (histories, ``not_cold``, ``valid_small``, warm / cold) are
those of the real datasets' preparers, applied by the same functions
(``data/prepare/common.py``, ``data/rules.py``).

* All interactions are sorted by ``(uid, timestamp)`` and the index is reset to
  ``0..n-1``; the split frames keep those index values.
* ``his = [0] + iids of the user's label==1 interactions strictly before the
  row`` (chronological, across splits), ``his_title = [''] + their titles``.
* Global time split: the time axis ``[0, 1]`` (3 years starting 2000-01-01)
  is cut at ``TRAIN_END = 0.70`` and ``VALID_END = 0.85``: train < 0.70 <= valid
  < 0.85 <= test.
* ``not_cold`` is 1 for train rows; for valid/test rows 1 iff both the uid and
  the iid occur in the train split.
* ``valid_small = valid.sample(frac=0.5, random_state=2023)``.
* ``test_warm_cold`` = test + int64 ``warm`` (user and item each have > 3 train
  rows) and ``cold`` (neither user nor item occurs in train).

Generative model
----------------
1. **Latent factors and themes.** ``d = latent_dim`` (>= 6) dims; dims 0..5
   are the axes of the 6 themes in ``THEMES`` (noir, space, romance, western,
   horror, comedy; 20 title words each), dims 6.. are "fine" taste dims.  Each
   item draws a theme ``t_i`` and ``v_i = THEME_STRENGTH * e_{t_i} + noise``
   with noise std ``ITEM_NOISE`` on the theme dims and ``FINE_STD`` on the fine
   dims.  The item's theme is then the coarse discretisation
   ``argmax(v_i[:6])`` of its factor.  Users: ``u_u ~ N(0, I_d)`` (so each user
   has a continuous preference per theme plus fine tastes).
2. **Biases / popularity.** ``b_u ~ N(0, USER_BIAS_STD^2)``; items have a
   popularity ``z_i ~ N(0, 1)`` and ``b_i = ITEM_BIAS_POP * z_i +
   N(0, ITEM_BIAS_STD^2)`` (popular items are somewhat better liked).
3. **Labels.** ``P(label=1) = sigmoid(K * (u_u . v_i + b_u + b_i) + OFFSET)``
   (``K = 2``, ``OFFSET = 0.4``; positive rate ~0.55-0.6).  At the default size
   the Bayes (true-probability) test AUC is ~0.96, a small logistic MF fit on
   train gets ~0.74 on all test rows (~0.79 on warm rows), and a logistic model
   that only sees title themes (history theme mix x target theme) ~0.63
   (~0.71 warm).
4. **Titles** are MovieLens-like, unique, 2-4 words plus a year, e.g.
   ``"Midnight Harbor Express (1994)"``: at least one word from the vocabulary
   of the item's theme, the others theme words or theme-neutral words
   (``NEUTRAL_WORDS``, ``The``, ``of the``).  ``TITLE_NOISE = 10%`` of items
   get their title words from a random other theme.  So the title reveals the
   coarse position of ``v_i`` (which theme axis dominates): a user who liked
   several space titles tends to like other space titles.  The fine dims, the
   biases and popularity are only visible collaboratively, so a model that
   sees user/item ids/embeddings does clearly better than a text-only one.
   ``title_theme(title)`` recovers the theme index from the words.
5. **Interactions.** Normal users have ``15 + floor(46 * Beta(2, 1))``
   interactions (15..60, mean ~45), active in a window starting uniformly in
   ``[0, 0.3)`` of the time axis and lasting ``U(0.5, 1.2)`` (capped at the
   end).  ``LATE_USER_FRAC = 10%`` of users are new: they become active only
   after ``TRAIN_END`` (cold users) and have 15..35 interactions.  60% of items
   are available from the start, the others released uniformly during the first
   60% of the axis; ``LATE_ITEM_FRAC = 8%`` are released after ``TRAIN_END``
   (cold items; year 2000-2003).  At each interaction time (distinct, uniformly
   drawn in the user's window, so strictly increasing) the item is drawn among
   released, not yet seen items with probability ``~ exp(POP_SKEW * z_i)``
   (``POP_SKEW = 0.5``: mild popularity skew; late releases get a x2 boost).
   Exposure does not depend on preference, only the label does.

Use ``generate_synthetic(out_dir, ...)`` / ``ensure_synthetic(out_dir, ...)`` or
``python -m minigpt4.data.synthetic --out DIR [--users N --items M --seed S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile

import numpy as np
import pandas as pd

from minigpt4.data.prepare.common import finish, warm_cold

__all__ = [
    "THEMES",
    "THEME_WORDS",
    "NEUTRAL_WORDS",
    "SPLIT_FILES",
    "generate_synthetic",
    "ensure_synthetic",
    "build_frames",
    "title_theme",
]

# ----------------------------------------------------------------------------
# constants of the generative model (documented in the module docstring)
# ----------------------------------------------------------------------------
T0 = 946684800  # 2000-01-01 00:00:00 UTC
SPAN = 3 * 365 * 24 * 3600  # time axis [0, 1] <-> [T0, T0 + SPAN)
TRAIN_END = 0.70
VALID_END = 0.85
LATE_USER_FRAC = 0.10
LATE_ITEM_FRAC = 0.08
THEME_STRENGTH = 1.6
ITEM_NOISE = 0.3
FINE_STD = 0.8
USER_BIAS_STD = 1.0
ITEM_BIAS_POP = 0.35
ITEM_BIAS_STD = 1.0
K = 2.0
OFFSET = 0.4
POP_SKEW = 0.5
TITLE_NOISE = 0.10
MIN_INTER, MAX_INTER = 15, 60
START_MAX, DUR_MIN, DUR_MAX = 0.3, 0.5, 1.2
LATE_USER_MAX = 35

THEMES = ("noir", "space", "romance", "western", "horror", "comedy")
THEME_WORDS = {
    "noir": ("Midnight", "Shadow", "Harbor", "Alibi", "Detective", "Smoke", "Rain",
             "Crooked", "Whisper", "Dagger", "Alley", "Neon", "Blackmail", "Verdict",
             "Stranger", "Dame", "Silencer", "Gumshoe", "Racket", "Lamplight"),
    "space": ("Star", "Galaxy", "Orbit", "Nebula", "Rocket", "Comet", "Planet",
              "Voyager", "Eclipse", "Quasar", "Cosmos", "Asteroid", "Lunar", "Solar",
              "Station", "Pulsar", "Gravity", "Nova", "Starship", "Meteor"),
    "romance": ("Love", "Heart", "Kiss", "Paris", "Summer", "Letters", "Wedding",
                "Rose", "Sweetheart", "Honeymoon", "Valentine", "Moonlight", "Darling",
                "Embrace", "Serenade", "Bride", "Forever", "Blossom", "Tender", "Romance"),
    "western": ("Outlaw", "Canyon", "Saddle", "Sheriff", "Prairie", "Rider",
                "Gunslinger", "Dust", "Mesa", "Ranch", "Stagecoach", "Bandit",
                "Rattlesnake", "Lasso", "Bounty", "Sundown", "Mustang", "Territory",
                "Tumbleweed", "Rawhide"),
    "horror": ("Grave", "Haunted", "Blood", "Crypt", "Nightmare", "Ghoul", "Shriek",
               "Coffin", "Curse", "Phantom", "Skull", "Witch", "Fog", "Howling",
               "Cellar", "Creature", "Hollow", "Raven", "Possessed", "Bones"),
    "comedy": ("Crazy", "Wacky", "Party", "Banana", "Nutty", "Holiday", "Pajama",
               "Goofy", "Clown", "Hiccup", "Bachelor", "Jamboree", "Noodle", "Daffy",
               "Pickle", "Circus", "Zany", "Giggle", "Prank", "Caper"),
}
NEUTRAL_WORDS = ("Express", "Story", "Affair", "Return", "Legend", "Secret",
                 "Journey", "Road", "Kingdom", "Game", "Chronicles", "Diary", "House",
                 "Code", "Project", "Dream", "Edge", "Island", "Escape", "Empire")
# patterns: "T" = theme word, "N" = neutral word, other tokens literal
_PATTERNS = (("T", "T"), ("T", "T", "N"), ("The", "T", "T"), ("T", "of", "the", "T"),
             ("N", "of", "the", "T"), ("T", "N"), ("The", "T", "N"), ("T", "T", "T"))

SPLIT_FILES = {
    "train": "train_ood2.pkl",
    "valid": "valid_ood2.pkl",
    "valid_small": "valid_small_ood2.pkl",
    "test": "test_ood2.pkl",
    "test_warm_cold": "test_warm_cold_ood2.pkl",
}
_WORD2THEME = {w: k for k, t in enumerate(THEMES) for w in THEME_WORDS[t]}
assert len(_WORD2THEME) == sum(len(v) for v in THEME_WORDS.values()), "theme vocabularies overlap"
assert not set(NEUTRAL_WORDS) & set(_WORD2THEME)
_YEAR_RE = re.compile(r"\s*\(\d{4}\)\s*$")


def title_theme(title: str) -> int:
    """Theme index (into THEMES) most represented among the words of ``title``; -1 if none."""
    counts = np.zeros(len(THEMES), dtype=np.int64)
    for w in _YEAR_RE.sub("", title).split():
        k = _WORD2THEME.get(w)
        if k is not None:
            counts[k] += 1
    return int(np.argmax(counts)) if counts.any() else -1


def _make_titles(rng: np.random.Generator, title_themes: np.ndarray, late: np.ndarray) -> list:
    titles, seen = [], set()
    for theme, is_late in zip(title_themes, late):
        vocab = THEME_WORDS[THEMES[theme]]
        while True:
            pat = _PATTERNS[rng.integers(len(_PATTERNS))]
            n_t = sum(tok == "T" for tok in pat)
            t_words = iter(rng.choice(vocab, size=n_t, replace=False).tolist())
            words = []
            for tok in pat:
                if tok == "T":
                    words.append(next(t_words))
                elif tok == "N":
                    words.append(NEUTRAL_WORDS[rng.integers(len(NEUTRAL_WORDS))])
                else:
                    words.append(tok)
            year = int(rng.integers(2000, 2004)) if is_late else int(rng.integers(1930, 2001))
            title = f"{' '.join(words)} ({year})"
            if title not in seen:
                seen.add(title)
                titles.append(title)
                break
    return titles


def _simulate(n_users: int, n_items: int, seed: int, latent_dim: int):
    """Draw the latent model and all interactions.

    Returns ``(df, titles)``: df has uid, iid, label, timestamp and the generating
    probability ``true_prob`` (for diagnostics; not written to the pickles).
    """
    n_themes = len(THEMES)
    if latent_dim < n_themes:
        raise ValueError(f"latent_dim must be >= {n_themes} (one axis per theme)")
    if n_users < 2 or n_items < MAX_INTER + 10:
        raise ValueError(f"need n_users >= 2 and n_items >= {MAX_INTER + 10}")
    rng = np.random.default_rng(seed)

    # ---- items ---------------------------------------------------------------
    theme0 = rng.integers(n_themes, size=n_items)
    noise_std = np.full(latent_dim, FINE_STD)
    noise_std[:n_themes] = ITEM_NOISE
    V = noise_std * rng.standard_normal((n_items, latent_dim))
    V[np.arange(n_items), theme0] += THEME_STRENGTH
    item_theme = np.argmax(V[:, :n_themes], axis=1)  # coarse discretisation of v_i
    pop = rng.standard_normal(n_items)
    b_i = ITEM_BIAS_POP * pop + ITEM_BIAS_STD * rng.standard_normal(n_items)
    n_late_items = max(1, int(round(LATE_ITEM_FRAC * n_items)))
    late_item = np.zeros(n_items, dtype=bool)
    late_item[rng.choice(n_items, size=n_late_items, replace=False)] = True
    release = np.where(rng.random(n_items) < 0.6, 0.0, rng.uniform(0.0, 0.6, n_items))
    release[late_item] = rng.uniform(TRAIN_END + 0.005, VALID_END + 0.08, n_late_items)
    weight = np.exp(POP_SKEW * pop)
    weight[late_item] *= 2.0
    noisy = rng.random(n_items) < TITLE_NOISE
    shift = rng.integers(1, n_themes, size=n_items)
    title_th = np.where(noisy, (item_theme + shift) % n_themes, item_theme)
    titles = _make_titles(rng, title_th, late_item)

    # ---- users ---------------------------------------------------------------
    U = rng.standard_normal((n_users, latent_dim))
    b_u = USER_BIAS_STD * rng.standard_normal(n_users)
    n_late_users = max(1, int(round(LATE_USER_FRAC * n_users)))
    late_user = np.zeros(n_users, dtype=bool)
    late_user[rng.choice(n_users, size=n_late_users, replace=False)] = True
    n_inter = MIN_INTER + np.floor((MAX_INTER - MIN_INTER + 1) * rng.beta(2.0, 1.0, n_users)).astype(int)
    n_inter = np.minimum(n_inter, MAX_INTER)
    n_inter[late_user] = MIN_INTER + np.floor(
        (LATE_USER_MAX - MIN_INTER + 1) * rng.random(n_late_users)).astype(int)
    start = rng.uniform(0.0, START_MAX, n_users)
    end = np.minimum(1.0, start + rng.uniform(DUR_MIN, DUR_MAX, n_users))
    start[late_user] = rng.uniform(TRAIN_END + 0.01, VALID_END + 0.05, n_late_users)
    end[late_user] = np.minimum(1.0, start[late_user] + rng.uniform(0.05, 0.3, n_late_users))

    # ---- interactions --------------------------------------------------------
    uids, iids, ts, labels, probs = [], [], [], [], []
    for u in range(n_users):
        n = int(n_inter[u])
        lo = T0 + int(start[u] * SPAN)
        hi = T0 + int(end[u] * SPAN) - 1
        t = np.sort(rng.choice(hi - lo, size=n, replace=False) + lo)  # distinct -> strictly increasing
        used = np.zeros(n_items, dtype=bool)
        for tj in t:
            avail = (release * SPAN + T0 <= tj) & ~used
            if not avail.any():  # practically unreachable with n_items >= MAX_INTER + 10
                avail = ~used & ~late_item if (~used & ~late_item).any() else ~used
            w = weight * avail
            i = int(rng.choice(n_items, p=w / w.sum()))
            used[i] = True
            uids.append(u + 1)
            iids.append(i + 1)
            ts.append(int(tj))
        items = np.asarray(iids[-n:]) - 1
        logit = K * (V[items] @ U[u] + b_u[u] + b_i[items]) + OFFSET
        prob = 1.0 / (1.0 + np.exp(-logit))
        probs.extend(prob.tolist())
        labels.extend((rng.random(n) < prob).astype(np.int64).tolist())

    df = pd.DataFrame({
        "uid": np.asarray(uids, dtype=np.int64),
        "iid": np.asarray(iids, dtype=np.int64),
        "label": np.asarray(labels, dtype=np.int64),
        "timestamp": np.asarray(ts, dtype=np.int64),
        "true_prob": np.asarray(probs, dtype=np.float64),  # dropped by build_frames
    })
    return df, titles


def build_frames(n_users: int = 300, n_items: int = 400, seed: int = 0, latent_dim: int = 8) -> dict:
    """Build the split DataFrames in memory: keys train, valid, valid_small, test, test_warm_cold.

    Histories, the split into train / valid / test with `not_cold`, valid_small and test_warm_cold follow the
    preparers' rules (data/prepare/common.py, data/rules.py), so the demo data is built as the real data is."""
    df, titles = _simulate(n_users, n_items, seed, latent_dim)
    # each user's rows contiguous and in time order (a user's timestamps are distinct): the preparers' walk order
    df = df.sort_values(["uid", "timestamp"], kind="mergesort").reset_index(drop=True)
    # object column (like the upstream pickles; pandas>=3 would otherwise infer "str")
    df["title"] = pd.Series([titles[i - 1] for i in df["iid"].tolist()], index=df.index, dtype=object)
    tr_thr = T0 + int(TRAIN_END * SPAN)
    va_thr = T0 + int(VALID_END * SPAN)
    df["flag"] = np.where(df["timestamp"] < tr_thr, -1.0,
                          np.where(df["timestamp"] < va_thr, 0.0, 1.0)).astype(np.float64)
    splits = finish(df, valid_small_frac=0.5)  # true_prob is dropped here: the processed columns only
    return {"train": splits["train"], "valid": splits["valid"], "valid_small": splits["valid_small"],
            "test": splits["test"], "test_warm_cold": warm_cold(splits["test"], splits["train"])}


def _readme(stats: dict, n_users: int, n_items: int, seed: int, latent_dim: int) -> str:
    return (
        "SYNTHETIC DATASET -- not real user data.\n"
        "Generated by minigpt4.data.synthetic.generate_synthetic "
        f"(n_users={n_users}, n_items={n_items}, seed={seed}, latent_dim={latent_dim}).\n"
        "Format: CoLLM/BinLLM processed pickles (uid, iid, label, timestamp, his, his_title, "
        "title, flag, not_cold).\n"
        "Model: user/item latent factors + biases, label ~ Bernoulli(sigmoid("
        f"{K} * (u.v + b_u + b_i) + {OFFSET})); item title words come from one of "
        f"{len(THEMES)} themed vocabularies ({', '.join(THEMES)}) chosen by the coarse "
        f"discretisation argmax(v[:{len(THEMES)}]) of the item factor ({int(TITLE_NOISE * 100)}% "
        "noisy titles), so titles carry part of the signal.\n"
        f"Global time split at {TRAIN_END:.2f} / {VALID_END:.2f} of a 3-year axis starting "
        f"2000-01-01; {int(LATE_USER_FRAC * 100)}% users / {int(LATE_ITEM_FRAC * 100)}% items "
        "appear only after the train period (cold).\n"
        "valid_small = valid.sample(frac=0.5, random_state=2023); test_warm_cold adds "
        "warm (user and item > 3 train rows) and cold (user and item unseen in train).\n"
        "Regenerate: python -m minigpt4.data.synthetic --out DIR "
        f"--users {n_users} --items {n_items} --seed {seed} --latent-dim {latent_dim}\n"
        f"Sizes: {json.dumps(stats, sort_keys=True)}\n"
    )


def generate_synthetic(out_dir, n_users: int = 300, n_items: int = 400, seed: int = 0,
                       latent_dim: int = 8) -> dict:
    """Generate the dataset into ``out_dir`` (created if needed; files overwritten).

    Returns ``{"train", "valid", "valid_small", "test", "users", "items"}`` counts.
    ``train_ood2.pkl`` is written last, so its presence marks a complete dataset.
    """
    frames = build_frames(n_users=n_users, n_items=n_items, seed=seed, latent_dim=latent_dim)
    stats = {k: int(len(frames[k])) for k in ("train", "valid", "valid_small", "test")}
    stats["users"] = int(n_users)
    stats["items"] = int(n_items)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "README.txt"), "w", encoding="utf-8") as f:
        f.write(_readme(stats, n_users, n_items, seed, latent_dim))
    for key in ("valid", "valid_small", "test", "test_warm_cold", "train"):
        frames[key].to_pickle(os.path.join(out_dir, SPLIT_FILES[key]))
    return stats


def ensure_synthetic(out_dir, **kw) -> str:
    """Generate the dataset into ``out_dir`` only if ``train_ood2.pkl`` is missing.

    The data is written to a temporary sibling directory and moved into place
    (directory rename, or per-file ``os.replace`` with ``train_ood2.pkl`` last if
    ``out_dir`` already exists), so a half-written dataset is never visible.
    """
    out_dir = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(os.path.join(out_dir, SPLIT_FILES["train"])):
        return out_dir
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".synthetic_tmp_", dir=parent)
    try:
        generate_synthetic(tmp, **kw)
        try:
            os.rename(tmp, out_dir)  # atomic when out_dir does not exist (or is an empty dir on POSIX)
            tmp = None
        except OSError:
            os.makedirs(out_dir, exist_ok=True)
            names = [n for n in sorted(os.listdir(tmp)) if n != SPLIT_FILES["train"]]
            for name in names + [SPLIT_FILES["train"]]:
                os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Generate the synthetic CoLLM/BinLLM-format dataset.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--items", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=8)
    p.add_argument("--if-missing", action="store_true",
                   help="only generate if OUT/train_ood2.pkl does not exist (atomic)")
    a = p.parse_args(argv)
    kw = dict(n_users=a.users, n_items=a.items, seed=a.seed, latent_dim=a.latent_dim)
    if a.if_missing:
        print(ensure_synthetic(a.out, **kw))
    else:
        print(json.dumps(generate_synthetic(a.out, **kw)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
