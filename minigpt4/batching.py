"""Prompt strings -> token batches.

A split is tokenised once (`TokenizedSplit`); batches are left-padded to their own longest prompt, because
the score is read at the last position. Evaluation visits rows sorted by length, so padding stays small.

CoLLM slots: with `slot_tokens` k > 0, each `<UserID>` in a prompt becomes k positions with ids -1..-k and each
`<TargetItemID>` k positions with ids -(k+1)..-2k; the model fills them with vectors (`place_slots`). The text
around a slot is tokenised on its own, as the upstream's `<unk>` stand-in split it.

Slot layout (`model.slot_layout`, spec §2.4): the upstream wrote a slot as `".".join(["<unk>"] * k)`, so with k > 1
the k positions are separated by the tokens of "." (`upstream`); its slow LLaMA tokenizer encoded each piece between
special tokens on its own, so that "." became "▁." there, and here it is "." tokenised on its own by the backbone's
tokenizer, like every other piece around a slot. `contiguous` writes the k positions side by side. With k = 1 both
are the same.
"""

import itertools
import re

import numpy as np
import torch

from minigpt4.data.history import padded_history
from minigpt4.errors import ConfigError
from minigpt4.prompting import EMPTY_HISTORY, history_text

SLOT_PATTERN = re.compile(r"(<UserID>|<TargetItemID>)")


def tokenize(tokenizer, prompts, slot_tokens=0, slot_layout="upstream", add_bos=True):
    """Prompt strings -> lists of token ids, slots marked by negative ids. add_bos: BOS first (spec §2.3, upstream
    `"<s>" + prompt`) when the tokenizer has one (`model.add_bos`)."""
    prompts = list(prompts)
    if not prompts:  # an empty split (a test subsample with no warm user): tokenizers reject an empty batch
        return []
    bos = [tokenizer.bos_token_id] if add_bos and tokenizer.bos_token_id is not None else []
    if not slot_tokens:
        return [bos + x for x in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    if slot_layout not in ("upstream", "contiguous"):
        raise ConfigError(f"model.slot_layout must be upstream or contiguous, got {slot_layout!r}")
    k = slot_tokens
    # between two positions of a slot: nothing (contiguous) or "." tokenised as a piece of its own (upstream)
    sep = tokenizer(".", add_special_tokens=False)["input_ids"] if slot_layout == "upstream" else []

    def slot(first):  # positions first..first+k-1 as ids -(first+1)..., joined by `sep`
        out = []
        for j in range(first, first + k):
            out += ([] if j == first else sep) + [-(j + 1)]
        return out

    marks = {"<UserID>": slot(0), "<TargetItemID>": slot(k)}
    pieces = [SLOT_PATTERN.split(p) for p in prompts]  # text, slot, text, slot, text
    texts = [t for parts in pieces for t in parts[::2] if t]
    encoded = iter(tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else [])
    out = []
    for parts in pieces:
        seq = list(bos)
        for n, part in enumerate(parts):
            if n % 2:
                seq += marks[part]
            elif part:
                seq += next(encoded)
        out.append(seq)
    return out


def decode(tokenizer, ids):
    """Readable text of one id list; each slot position shows as `[slot j]`."""
    out, run = [], []
    for x in list(ids) + [None]:
        if x is not None and x >= 0:
            run.append(x)
            continue
        if run:
            out.append(tokenizer.decode(run))
            run = []
        if x is not None:
            out.append(f"[slot {-x - 1}]")
    return "".join(out)


class TokenizedSplit:
    def __init__(self, tokenizer, prompts, rows, max_len, name="split", slot_tokens=0, history_len=0,
                 slot_layout="upstream", add_bos=True):
        self.input_ids = tokenize(tokenizer, prompts, slot_tokens, slot_layout, add_bos)
        self.lengths = np.array([len(x) for x in self.input_ids])
        too_long = np.flatnonzero(self.lengths > max_len)
        if too_long.size:
            i = int(too_long[0])
            label = rows.index[i].item() if isinstance(rows.index[i], np.generic) else rows.index[i]
            raise ConfigError(f"{name}: prompt of row {label!r} has {self.lengths[i]} tokens > "
                              f"model.max_txt_len={max_len}; raise max_txt_len (the upstream silently cut off "
                              "the #Answer: cue)")
        self.pad_id = tokenizer.pad_token_id
        # every prompt's ids end to end, and where each ends: a batch is then gathered in a few array operations
        # (a Python loop over rows cost 20 ms for 512 prompts, a real share of a small model's GPU step)
        self._flat = np.fromiter(itertools.chain.from_iterable(self.input_ids), dtype=np.int64,
                                 count=int(self.lengths.sum()))
        self._ends = np.cumsum(self.lengths, dtype=np.int64)
        self.labels = rows["label"].to_numpy().astype(np.int64)
        self.uids = rows["uid"].to_numpy().astype(np.int64)
        self.iids = rows["iid"].to_numpy().astype(np.int64)
        # the row's history ids, only for slot encoders that read it (SASRec, DIN)
        self.his = padded_history(rows["his"].to_numpy(), history_len) if history_len else None
        self._histories = (rows["his"], rows["his_title"]) if {"his", "his_title"} <= set(rows.columns) else ((), ())
        self.name = name

    def example_row(self):
        """The first row whose prompt lists liked titles (row 0 may read `movies: unknown`), else 0: the row a run
        prints as its example. Scans only up to that row."""
        return next((i for i, (h, t) in enumerate(zip(*self._histories)) if history_text(h, t) != EMPTY_HISTORY), 0)

    def __len__(self):
        return len(self.input_ids)

    def batch(self, indices, pad_multiple=1):
        """Left-padded `input_ids` and `attention_mask`, plus `labels`, `users`, `items` (and `his` when the
        split has histories) for the given row positions. The width is the longest prompt rounded up to a
        multiple of `pad_multiple` (a compiled forward then sees few shapes)."""
        indices = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[indices]
        width = -(-int(lengths.max()) // pad_multiple) * pad_multiple
        back = np.arange(-width, 0)  # column c holds the token `width - c` places before the prompt's end
        real = back >= -lengths[:, None]
        ids = np.where(real, self._flat[np.where(real, self._ends[indices, None] + back, 0)], self.pad_id)
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(real.astype(np.int64)),
               "labels": torch.from_numpy(self.labels[indices]),
               "users": torch.from_numpy(self.uids[indices]), "items": torch.from_numpy(self.iids[indices])}
        if self.his is not None:
            out["his"] = self.his[indices]
        return out

    def eval_batches(self, batch_size, positions=None, pad_multiple=1):
        """Yields (positions, batch) over the given positions (default: all), shortest prompts first."""
        positions = np.arange(len(self)) if positions is None else np.asarray(positions)
        order = positions[np.argsort(self.lengths[positions], kind="stable")]
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            yield chunk, self.batch(chunk, pad_multiple)


class TrainBatches:
    """Endless training micro-batches for one process, built from global batches.

    A pass over the rows is one permutation seeded by (seed, pass), the same on every process. It is cut into
    global batches of `batch_size x world x accum` rows; with `bucket` > 0, each window of `bucket` global batches
    is first sorted by prompt length, so a batch holds prompts of similar length and pads little, and the batches
    are then visited in a random order. Process r's micro-batch m of a global batch is its rows
    [(m * world + r) * batch_size, ...). The rows of an optimizer step therefore depend only on the global batch
    size: 2 processes x batch b train exactly like 1 process x batch 2b, or like 1 process x b with 2 accumulation
    steps. Rows that do not fill a last global batch wait for the next pass (drop_last). Each micro-batch is padded
    to a multiple of `pad_multiple` tokens (a compiled training forward then sees few shapes)."""

    def __init__(self, split, batch_size, seed, world=1, rank=0, accum=1, bucket=0, pad_multiple=1):
        self.global_batch = batch_size * world * accum
        if len(split) < self.global_batch:
            raise ConfigError(f"the global batch (run.batch_size_train={batch_size} x {world} processes x {accum} "
                              f"accumulation) is larger than the {len(split)} training rows")
        self.split, self.batch_size, self.world, self.rank = split, batch_size, world, rank
        self.seed, self.bucket, self.passes, self.pad_multiple = seed, bucket, 0, pad_multiple
        self.lengths = np.asarray(split.lengths)
        self._new_pass()

    def _new_pass(self):
        rng = np.random.default_rng([self.seed, self.passes])
        order = rng.permutation(len(self.split))
        n = len(order) // self.global_batch
        order = order[:n * self.global_batch]
        if self.bucket:
            window = self.global_batch * self.bucket
            for start in range(0, len(order), window):
                part = order[start:start + window]
                order[start:start + window] = part[np.argsort(self.lengths[part], kind="stable")]
        self.batches = order.reshape(n, self.global_batch)[rng.permutation(n)]
        self.step, self.micro, self.passes = 0, 0, self.passes + 1

    def state(self):
        """Where the batches stand (for resuming): the pass, the global batch within it, the micro-batch."""
        return {"passes": self.passes, "step": self.step, "micro": self.micro}

    def load_state(self, state):
        self.passes = state["passes"] - 1
        self._new_pass()  # the same permutation again: it depends only on (seed, pass)
        self.step, self.micro = state["step"], state["micro"]

    def __next__(self):
        if self.step == len(self.batches):
            self._new_pass()
        start = (self.micro * self.world + self.rank) * self.batch_size
        chunk = self.batches[self.step][start:start + self.batch_size]
        self.micro += 1
        if (self.micro * self.world) * self.batch_size >= self.global_batch:
            self.step, self.micro = self.step + 1, 0
        return self.split.batch(chunk, self.pad_multiple)

    def __iter__(self):
        return self
