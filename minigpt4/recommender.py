"""The recommender a run uses, built in one place: `Recommender(cfg, task, derived, device, precision)` loads the
backbone, adds the LoRA adapter (and CoLLM's slot module with its encoder), and loads `model.ckpt`; it holds the
prompt, codes and run mode the rows are written with. The LLM stages' recipe builds its model with it, and
`Recommender.from_run(run_dir)` rebuilds the model a finished run trained (its config.yaml and checkpoint_best/)
to score rows outside any recipe:

    rec = Recommender.from_run("runs/ml1m/binllm")
    scores = rec.score(rec.rows("test"))  # the Yes (- No) logit of each row, as predictions_test.csv holds
    rec.recommend(user_id=42, k=10)  # items the user has not seen, best first, with titles and scores

A stage-0 run's directory (rec_model.pth: MF, LightGCN, SASRec, DIN, BinMF, CTRL) gives an `EncoderRecommender`
with the same `score_groups` and `recommend`. Ranking (`rank`, rank.py) and `recommend` score a user's candidates
together: an LLM run shares their prompt prefix (minigpt4/shared_prefix.py), an encoder scores them as rows.
"""

from functools import cached_property
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from minigpt4 import stages
from minigpt4.config import ConfigError, is_set, load_config
from minigpt4.data.catalogue import TIME_ORDER, candidate_rows, interacted, item_catalogue, latest_history
from minigpt4.encoders.factory import attach_graph, load_pretrained_encoder
from minigpt4.errors import DataError
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.metrics import positive_ranks
from minigpt4.precision import resolve_precision
from minigpt4.recipes.derived import derive_llm, pick_device
from minigpt4.tasks import RecTask
from minigpt4.train.checkpoint import load_start, run_meta
from minigpt4.train.collab import score_rows
from minigpt4.train.scoring import Scorer

POOL = 50  # recommend: how many of the encoder's best unseen items an LLM re-ranks


class Ranking:
    """What ranking and recommending need of any run: the dataset's splits (`self.task`), the item catalogue, who
    interacted with what, and `score_groups(rows, groups)` (each group one user's candidates)."""

    @cached_property
    def frames(self):
        return {name: self.task.rows(name) for name in TIME_ORDER}

    @cached_property
    def catalogue(self):
        """Every item with its title (item_catalogue)."""
        return item_catalogue(self.frames)

    def rank(self, sets):
        """Ranks (1 = first, ties against the positive) of each set's positive among its negatives: `sets` as
        `ranking_candidates` draws them (row: the test row whose history the prompts use, uid, positive,
        negatives). Returns (ranks, scores [sets, 1 + negatives], the positive's column first)."""
        test = self.frames["test"]
        n = len(sets["negatives"].iloc[0]) if len(sets) else 0
        rows, groups = candidate_rows(test.loc[sets["row"].to_numpy()],
                                      [[p, *neg] for p, neg in zip(sets["positive"], sets["negatives"])],
                                      self.catalogue, labels=[[1] + [0] * n] * len(sets))
        scores = self.score_groups(rows, groups).reshape(len(sets), 1 + n)
        return positive_ranks(scores), scores

    def user_row(self, user_id, before=None):
        """A one-row frame (uid, his, his_title) with the user's liked history after their last interaction (before
        split `before`, e.g. "test": as of the end of valid), and the items they interacted with by then."""
        names = TIME_ORDER if before is None else TIME_ORDER[:TIME_ORDER.index(before)]
        frames = {n: self.frames[n] for n in names}
        users = self.users
        first, last = min(users), max(users)
        if not float(user_id).is_integer() or not first <= user_id <= last:
            raise DataError(f"user {user_id!r} is not a user of this dataset: user ids run from {first} to {last}")
        user_id = int(user_id)
        if user_id not in users:
            raise DataError(f"user {user_id} has no rows in {', '.join(self.frames)} (user ids run from {first} to "
                            f"{last})")
        try:
            ids, titles = latest_history(frames, user_id) if frames else ([], [])
        except DataError:
            ids, titles = [], []  # rows only from `before` on: a new user, with no liked history yet
        import pandas as pd

        row = pd.DataFrame({"uid": [user_id], "his": [[0, *ids]], "his_title": [["", *titles]]})
        seen = self.interacted_before(names).get(user_id) if frames else None
        return row, np.zeros(0, dtype=np.int64) if seen is None else seen

    @cached_property
    def users(self):
        """Every user id with a row in any split (a set)."""
        return {int(u) for f in self.frames.values() for u in np.unique(f["uid"].to_numpy())}

    def interacted_before(self, names):
        """`interacted` over the splits `names`, computed once per tuple of names (one recommend call each would
        group every row again)."""
        cache = self.__dict__.setdefault("_interacted", {})
        if names not in cache:
            cache[names] = interacted({n: self.frames[n] for n in names})
        return cache[names]

    def recommend(self, user_id, k=10, candidates=None, before=None, pool=POOL):
        """The k best items for `user_id` among `candidates` (default: items the user has not interacted with, as
        `pool_candidates` narrows them), as a DataFrame (rank, iid, title, score), best first; equal scores in item
        order. `before`: recommend as of the start of that split ("test": from the train and valid history)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise DataError(f"k = {k!r}: ask for a number of items >= 1")
        row, seen = self.user_row(user_id, before)
        if candidates is None:
            unseen = np.setdiff1d(self.catalogue["iid"].to_numpy(), seen)
            candidates = self.pool_candidates(row, unseen, pool)
        candidates = list(dict.fromkeys(int(i) for i in candidates))
        if k > len(candidates):
            raise DataError(f"k = {k}: only {len(candidates)} candidate items to rank; ask for at most that many")
        rows, groups = candidate_rows(row, [candidates], self.catalogue)
        scores = self.score_groups(rows, groups)
        order = np.lexsort((rows["iid"].to_numpy(), -scores))[:k]
        import pandas as pd

        return pd.DataFrame({"rank": np.arange(1, len(order) + 1), "iid": rows["iid"].to_numpy()[order],
                             "title": rows["title"].to_numpy()[order], "score": scores[order]})

    def pool_candidates(self, row, unseen, pool):
        """The candidates `recommend` ranks by default: every unseen item (an encoder ranks them all)."""
        return unseen


class EncoderRecommender(Ranking):
    """A finished stage-0 run (rec_model.pth): the encoder scores (user, item[, history]) rows directly."""

    def __init__(self, cfg, task, model):
        self.cfg, self.task, self.model = cfg, task, model

    @classmethod
    def from_config(cls, cfg, weights):
        """`cfg`'s encoder (model.rec_model, model.rec_config) with the state dict `weights` (a rec_model.pth)."""
        cfg = OmegaConf.merge(cfg, {"model": {"rec_config": {"pretrained_path": str(weights)}}})
        task = RecTask(cfg)
        model = load_pretrained_encoder(cfg.model, task.id_counts())
        attach_graph(model, task.rows("train"))  # LightGCN propagates over the train graph
        return cls(cfg, task, model.eval())

    @classmethod
    def from_run(cls, run_dir, options=()):
        run_dir = Path(run_dir)
        return cls.from_config(load_config(run_dir / "config.yaml", list(options)), run_dir / "rec_model.pth")

    def score_groups(self, rows, groups=None):
        """One score per row (an encoder scores each row on its own; `groups` changes nothing)."""
        return np.asarray(score_rows(self.model, rows), dtype=np.float64)


class Recommender(Ranking):
    """`model`: the LLMRecommender (a torch module: batch -> score); `derived`: the run's `Derived` (counts, mode,
    prompt, codes, LoRA shape); `task`: the dataset's rows; `meta`: what its checkpoints record."""

    def __init__(self, cfg, task, derived, device, precision):
        self.cfg, self.task, self.derived, self.device, self.precision = cfg, task, derived, device, precision
        d = derived
        # model.load_in_8bit / load_in_4bit / low_resource: the frozen backbone is stored in 8 or 4 bits on `device`
        model = LLMRecommender.from_config(cfg.model, dtype=precision.dtype, slots=d.mode == "slots", lora=d.lora,
                                           counts=d.counts, device=device)
        if model.collab is not None and model.collab.encoder is not None:
            attach_graph(model.collab.encoder, task.rows("train"))  # LightGCN propagates over the train graph
        self.model = model.to(device)
        self.meta = run_meta(cfg.model, self.model, d.mode, d.codes)  # beside each checkpoint, checked on loading
        if cfg.model.ckpt:
            load_start(self.model, cfg.model, self.meta, d.evaluate)  # stage 1's adapter for stage 2; eval's

    @classmethod
    def from_config(cls, cfg, device=None):
        """The model `cfg` scores with, as eval.py builds it (model.ckpt loaded), without a run directory."""
        cfg = OmegaConf.create(cfg) if not OmegaConf.is_readonly(cfg) else cfg
        OmegaConf.set_readonly(cfg, True)
        task = RecTask(cfg)
        derived = derive_llm(cfg, stages.SCORING, task, new_run=False)
        device = device or pick_device(cfg, 0)
        return cls(cfg, task, derived, device, resolve_precision(cfg.run, device))

    @classmethod
    def from_run(cls, run_dir, device=None, options=()):
        """The model an LLM run directory's config.yaml describes, with the adapter the run trained
        (`checkpoint_best/`; an eval run's: the checkpoint it scored). `options`: key=value overrides, e.g.
        the run's data moved (`datasets.movie_ood.path=...`) or `run.batch_size_eval=64`. A stage-0 run's
        directory (rec_model.pth) gives its EncoderRecommender."""
        run_dir = Path(run_dir)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"{run_dir}: no config.yaml; not a run directory (a run writes one when it starts)")
        if (run_dir / "rec_model.pth").is_file():
            return EncoderRecommender.from_run(run_dir, options)
        trained = run_dir / "checkpoint_best"
        own = [f"model.ckpt={trained}"] if trained.is_dir() else []
        return cls.from_config(load_config(saved, [*own, *options]), device)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def rows(self, split):
        """The rows of `split` the run uses: all of them, or its run.max_eval_rows / max_train_rows sample."""
        return self.task.sampled_rows(split)

    def token_splits(self, names):
        """{split: TokenizedSplit} of the named splits' rows as prompts (CoLLM's SASRec / DIN: with history ids)."""
        return {name: self.tokenize(self.rows(name), name) for name in dict.fromkeys(names)}

    def tokenize(self, rows, name="rows"):
        d = self.derived
        history_len = self.model.collab.history_len if self.model.collab is not None else 0
        return self.task.tokenize(rows, name, self.tokenizer, d.prompt, d.codes, history_len, d.mode)

    def score_groups(self, rows, groups):
        """The score of each row, each group's rows (one user's candidates) scored with their shared prompt prefix
        run once (Scorer.score_shared): the pointwise scores, in fewer tokens."""
        split = self.tokenize(rows)
        scorer = Scorer(self.model, {split.name: split}, self.device, self.precision, self.cfg.run.batch_size_eval)
        return scorer.score_shared(split.name, groups)[0]

    @cached_property
    def pool_encoder(self):
        """The run's stage-0 encoder (model.rec_config.pretrained_path) as an EncoderRecommender, or None."""
        path = self.cfg.model.rec_config.pretrained_path
        return EncoderRecommender.from_config(self.cfg, path) if is_set(path) else None

    def pool_candidates(self, row, unseen, pool):
        """The `pool` unseen items the run's stage-0 encoder (model.rec_config.pretrained_path: BinLLM's BinMF,
        CoLLM's MF, ...) scores highest; every unseen item when the run has none (TALLRec, ICL)."""
        if self.pool_encoder is None or len(unseen) <= pool:
            return unseen
        rows, groups = candidate_rows(row, [unseen], self.catalogue)
        scores = self.pool_encoder.score_groups(rows, groups)
        return unseen[np.lexsort((unseen, -scores))[:pool]]

    def score(self, rows, batch_size=None):
        """The score of each row (a split's DataFrame: uid, iid, his, his_title, title, label), in row order,
        computed as the run's evaluation computes it (run.batch_size_eval, the run's precision)."""
        split = self.tokenize(rows)
        scorer = Scorer(self.model, {split.name: split}, self.device, self.precision,
                        batch_size or self.cfg.run.batch_size_eval)
        return scorer.score(split.name)[0]
