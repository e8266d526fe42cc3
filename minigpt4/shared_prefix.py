"""Token batches for scoring a user's candidates with their shared prompt prefix computed once.

A user's K candidate prompts are the same up to the target item. Each candidate is tokenised whole, as pointwise
scoring tokenises it (`TokenizedSplit`), and the prefix is the longest run of leading token ids all of them share,
so no tokenisation boundary can change a score. The backbone then runs over the prefix once and over the K
suffixes with its keys and values (`LLMRecommender.forward_shared`): P + K.S tokens instead of K.(P + S).

The prefix stops:
- one token before the shortest candidate ends, so every candidate keeps a suffix whose last position is scored;
- at the first slot position (CoLLM, soft prompt) whose vector may differ between the candidates: item slots
  always do, and so do user slots when the encoder's user vector reads the target item (DIN). `shared_slots`
  names the slot ids that are the same for every candidate of a user.

A batch holds about the tokens `batch_size` whole prompts would (run.batch_size_eval, the pointwise batch): a prefix
and K suffixes cost P + K.S, so a batch holds several users' candidates, and each forward does as much work as a
pointwise one. A group larger than that is cut into pieces, each with the group's prefix (run once per piece).

Suffixes differ in length (titles, codes), and padding them all to a batch's longest wasted about a third of the
suffix tokens on ML-100K's text-only prompts (results/speed/ranking.md). A batch's candidates
are therefore sorted by suffix length and cut into runs (`suffix_runs`) whose padding stays under `SUFFIX_WASTE`;
the model runs one suffix pass per run over the same prefix keys and values.
"""

import numpy as np
import torch

# A run of suffixes is closed before its padding exceeds this share of its real tokens: more, shorter passes cost
# less than padding on a CPU (results/speed/ranking.md compares allowances from 5% to one pass).
SUFFIX_WASTE = 0.05


def common_prefix(seqs, shared_slots=()):
    """Length of the leading ids every sequence shares, at most min(len) - 1, ending before the first slot id
    (negative) not in `shared_slots`."""
    seqs = [np.asarray(s) for s in seqs]
    limit = min(len(s) for s in seqs) - 1
    if limit <= 0:
        return 0
    block = np.stack([s[:limit] for s in seqs])
    same = (block == block[0]).all(0)
    first = block[0]
    same &= (first >= 0) | np.isin(first, np.asarray(list(shared_slots), dtype=np.int64))
    differ = np.flatnonzero(~same)
    return int(differ[0]) if differ.size else limit


def suffix_runs(lengths, waste=SUFFIX_WASTE):
    """Bounds [0, ..., n] cutting suffixes sorted by length (ascending) into runs, each padded to its longest with at
    most `waste` of its real tokens as padding."""
    bounds, start, total = [0], 0, 0
    for n, length in enumerate(lengths):
        if n > start and length * (n + 1 - start) > (1 + waste) * (total + length):
            bounds.append(n)
            start, total = n, 0
        total += length
    bounds.append(len(lengths))
    return bounds


def pad_rows(rows, pad_id, left):
    """Rows of ids -> (ids, mask) [len(rows), longest], padded on the left or the right."""
    width = max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for n, r in enumerate(rows):
        if len(r):
            cols = slice(width - len(r), width) if left else slice(0, len(r))
            ids[n, cols] = r
            mask[n, cols] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


class SharedPrefixBatches:
    """`split`: a TokenizedSplit; `groups`: arrays of row positions, each one user's candidates (their prompts share
    a prefix). `batches(batch_size)` yields (positions, batch), each batch about the tokens of `batch_size` whole
    prompts."""

    def __init__(self, split, groups, shared_slots=()):
        self.split = split
        self.groups = [np.asarray(g, dtype=np.int64) for g in groups if len(g)]
        self.prefix_len = np.array([common_prefix([split.input_ids[i] for i in g], shared_slots)
                                    for g in self.groups], dtype=np.int64)

    def token_counts(self):
        """(tokens the shared path runs, tokens the pointwise path runs) over every group, each group whole."""
        lengths = self.split.lengths
        pointwise = sum(int(lengths[g].sum()) for g in self.groups)
        shared = sum(int(lengths[g].sum()) - (len(g) - 1) * int(p) for g, p in zip(self.groups, self.prefix_len))
        return shared, pointwise

    def budget(self, batch_size):
        """Tokens a batch may run: those of `batch_size` whole prompts of these groups (their mean length)."""
        lengths = self.split.lengths[np.concatenate(self.groups)] if self.groups else np.ones(1)
        return batch_size * float(np.mean(lengths))

    def pieces(self, batch_size):
        """(group index, row positions, tokens): a group whole, or cut into pieces of at most a batch's tokens (one
        row at least), in group order."""
        budget, lengths = self.budget(batch_size), self.split.lengths
        for n, g in enumerate(self.groups):
            p = int(self.prefix_len[n])
            start, cost = 0, p
            for i in range(len(g)):
                step = int(lengths[g[i]]) - p
                if i > start and cost + step > budget:
                    yield n, g[start:i], cost
                    start, cost = i, p
                cost += step
            yield n, g[start:], cost

    def batches(self, batch_size):
        chunk, tokens = [], 0
        budget = self.budget(batch_size)
        for n, piece, cost in self.pieces(batch_size):
            if chunk and tokens + cost > budget:
                yield self._batch(chunk)
                chunk, tokens = [], 0
            chunk.append((n, piece))
            tokens += cost
        if chunk:
            yield self._batch(chunk)

    def _batch(self, chunk):
        """prefix_ids / prefix_mask [G, P] left-padded; suffix_ids / suffix_mask [N, S] right-padded; owner [N]: the
        prefix row of each candidate; leaders [G]: each prefix's first candidate (whose slots fill the prefix's);
        users, items, labels (and his) [N] of the candidates; runs [R + 1]: bounds of the suffix passes (the
        candidates come sorted by suffix length)."""
        s = self.split
        ids = s.input_ids
        prefixes, suffixes, owner, positions = [], [], [], []
        for g, (n, piece) in enumerate(chunk):
            p = int(self.prefix_len[n])
            prefixes.append(ids[piece[0]][:p])
            for i in piece:
                suffixes.append(ids[i][p:])
                owner.append(g)
                positions.append(i)
        order = np.argsort([len(x) for x in suffixes], kind="stable")
        suffixes = [suffixes[i] for i in order]
        owner = np.asarray(owner)[order]
        leaders = [int(np.flatnonzero(owner == g)[0]) for g in range(len(chunk))]
        positions = np.asarray(positions, dtype=np.int64)[order]
        prefix_ids, prefix_mask = pad_rows(prefixes, s.pad_id, left=True)
        suffix_ids, suffix_mask = pad_rows(suffixes, s.pad_id, left=False)
        batch = {"prefix_ids": prefix_ids, "prefix_mask": prefix_mask, "suffix_ids": suffix_ids,
                 "suffix_mask": suffix_mask, "owner": torch.from_numpy(owner), "leaders": torch.tensor(leaders),
                 "runs": torch.tensor(suffix_runs([len(x) for x in suffixes])),
                 "labels": torch.from_numpy(s.labels[positions]), "users": torch.from_numpy(s.uids[positions]),
                 "items": torch.from_numpy(s.iids[positions])}
        if s.his is not None:
            batch["his"] = s.his[positions]
        return positions, batch
