"""Scoring the token splits of an LLM run: rows sharded over the processes (each scored exactly once, gathered on
every rank), prompts already scored with the same adapter taken from a memo, the forward compiled when
`run.compile` asks for it, AUC / UAUC, and the final test's predictions files."""

import time

import numpy as np
import torch
from tqdm import tqdm

from minigpt4.metrics import evaluate_scores
from minigpt4.precision import COMPILE_PAD_MULTIPLE
from minigpt4.shared_prefix import SharedPrefixBatches
from minigpt4.train import distributed as dist
from minigpt4.train.eta import duration, rows_to_score
from minigpt4.train.sharding import is_sharded


def log(*args, sep=" ", end="\n", file=None):
    """print on rank 0 only, through tqdm.write: a line never lands inside a progress bar (the bar is cleared,
    the line written, the bar drawn again below it)."""
    if dist.is_main():
        tqdm.write(sep.join(map(str, args)), file=file, end=end)


def on_device(batch, device):
    """The model's keyword arguments of a batch (everything but the labels), on the device."""
    return {k: v.to(device) for k, v in batch.items() if k != "labels"}


class Scorer:
    def __init__(self, model, splits, device, precision, batch_size):
        self.model, self.splits, self.device, self.batch_size = model, splits, device, batch_size
        self.autocast = precision.autocast
        self.precision = precision
        self.compiled = None  # the compiled scoring forward, built on first use when run.compile asks for it
        self.compiled_info = {"compiled": False}
        self.rows_per_s = None  # the last measured scoring speed (for the time the final test will take)

    @property
    def sharded(self):
        """FSDP has sharded the model (run.fsdp, in training): every rank must then run every forward."""
        return is_sharded(self.model)

    @torch.inference_mode()
    def score(self, split, memo=None):
        """Scores of every row of a split; rows are sharded over ranks, each scored exactly once.

        `memo` ((user, item, prompt ids) -> score) lets the final test skip prompts it has already scored with the
        same adapter: test_warm and test_cold are subsets of test, so scoring all three costs one pass."""
        self.model.eval()
        data = self.splits[split]
        memo = {} if memo is None else memo
        # the ids and the (user, item) pair: CoLLM slots make equal ids of different pairs score differently
        keys = [(u, i, tuple(ids)) for u, i, ids in zip(data.uids.tolist(), data.iids.tolist(), data.input_ids)]
        need = np.array([i for i, k in enumerate(keys) if k not in memo], dtype=int)
        mine = need[dist.rank()::dist.world_size()]
        pos_out, score_out = [], []
        start = time.time()
        forward = self._scoring_forward(len(need))
        pad = COMPILE_PAD_MULTIPLE if forward is not self.model else 1
        batches = data.eval_batches(self.batch_size, mine, pad_multiple=pad)
        total = -(-len(mine) // self.batch_size)
        for pos, batch in tqdm(batches, total=total, desc=f"scoring {split}", leave=False, mininterval=10,
                               disable=not dist.is_main()):
            first = time.time()
            with self.autocast():
                s = forward(**on_device(batch, self.device))
            if forward is not self.model and "compile_s" not in self.compiled_info:
                self.compiled_info["compile_s"] = time.time() - first  # the first batch waits for the compiler
                log(f"compiled the scoring forward in {self.compiled_info['compile_s']:.0f} s (first batch included)")
            pos_out.append(pos)
            score_out.append(s.float().cpu().numpy())
        if self.sharded:  # sharded forwards are collectives: a rank with fewer batches runs throw-away ones
            for _ in range(dist.max_over_ranks(total) - total):
                with self.autocast():
                    self.model(**on_device(data.batch(np.array([0])), self.device))
        local = (np.concatenate(pos_out) if pos_out else np.zeros(0, int),
                 np.concatenate(score_out) if score_out else np.zeros(0, np.float32))
        scores = np.zeros(len(data), dtype=np.float64)
        for pos, s in dist.gather_objects(local):
            scores[pos] = s
        for i in np.setdiff1d(np.arange(len(data)), need):
            scores[i] = memo[keys[i]]
        memo.update((keys[i], scores[i]) for i in need)
        # no speed when every prompt came from the memo: nothing was scored here
        speed = len(need) / max(time.time() - start, 1e-9) if len(need) else None
        self.rows_per_s = speed or self.rows_per_s
        return scores, speed

    @torch.inference_mode()
    def score_shared(self, split, groups):
        """Scores of the rows of `groups` (arrays of row positions, each one user's candidates), each group's common
        prompt prefix run once (minigpt4/shared_prefix.py): the pointwise scores, for P + K.S tokens a group
        instead of K.(P + S). Groups are sharded over ranks; rows in no group get NaN. Returns (scores, rows/s)."""
        self.model.eval()
        data = self.splits[split]
        batches = SharedPrefixBatches(data, groups[dist.rank()::dist.world_size()], self.model.shared_slots())
        start = time.time()
        pos_out, score_out = [], []
        total = sum(len(g) for g in batches.groups)
        with tqdm(total=total, desc=f"ranking {split}", leave=False, mininterval=10,
                  disable=not dist.is_main()) as bar:
            for pos, batch in batches.batches(self.batch_size):
                with self.autocast():
                    s = self.model.forward_shared(**on_device(batch, self.device))
                pos_out.append(pos)
                score_out.append(s.float().cpu().numpy())
                bar.update(len(pos))
        local = (np.concatenate(pos_out) if pos_out else np.zeros(0, int),
                 np.concatenate(score_out) if score_out else np.zeros(0, np.float32))
        scores = np.full(len(data), np.nan)
        for pos, s in dist.gather_objects(local):
            scores[pos] = s
        rows = sum(len(g) for g in groups)
        return scores, rows / max(time.time() - start, 1e-9) if rows else None

    def _scoring_forward(self, rows):
        """The model, or its compiled forward when run.compile asks for it for `rows` rows to score. Compiled once
        with dynamic shapes; batches are padded to a multiple of COMPILE_PAD_MULTIPLE tokens, which keeps the
        shapes few (left padding changes no score: positions count real tokens only)."""
        if self.compiled is not None:
            return self.compiled
        wanted, why = self.precision.compile_scoring(rows)
        if not wanted or self.sharded:
            if "compile_why" not in self.compiled_info:
                self.compiled_info["compile_why"] = why if not self.sharded else "FSDP-sharded model: not compiled"
            return self.model
        log(f"compiling the scoring forward ({why})")
        self.compiled = torch.compile(self.model, dynamic=True)
        self.compiled_info = {"compiled": True, "compile_why": why}
        return self.compiled

    def evaluate(self, split, memo=None):
        """(metrics, scores) of a split; metrics["samples_per_s"]: scoring speed (None: all from the memo)."""
        data = self.splits[split]
        scores, speed = self.score(split, memo)
        metrics = evaluate_scores(data.uids, data.labels, scores)
        metrics["samples_per_s"] = speed
        return metrics, scores

    def test(self, splits, run_dir):
        """Score each split with the model as it is, write predictions_<split>.csv; {split: metrics}."""
        results, memo = {}, {}
        if not splits:  # run.test_splits: [] (the demo's training stages): nothing to score, nothing to say
            return results
        rows = rows_to_score(self.splits, splits)
        speed = f" (~{duration(rows / self.rows_per_s)} at {self.rows_per_s:.1f} rows/s)" if self.rows_per_s else ""
        log(f"scoring {rows:,} test rows{speed}: {', '.join(splits)}, each prompt once")
        for split in splits:
            metrics, scores = self.evaluate(split, memo)
            data = self.splits[split]
            run_dir.write_predictions(f"predictions_{split}.csv", data.uids, data.iids, data.labels, scores)
            results[split] = metrics
            log(f"{split}: auc {metrics['auc']:.4f} uauc {metrics['uauc']:.4f} over {metrics['rows']} rows "
                f"({metrics['users']} users in UAUC; skipped {metrics['one_sample_users']} with one row, "
                f"{metrics['one_class_users']} with one class)")
        return results
