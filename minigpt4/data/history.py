"""A split's `his` column as one [rows, maxlen] id tensor, for the sequence encoders (SASRec, DIN).

Each row keeps its last `maxlen` ids, left-padded with 0 (the padding item) so the most recent item is always
in the last column. `his` already starts with a 0 in the processed files (spec §1.1); that 0 is padding too.
"""

import numpy as np
import torch


def padded_history(his, maxlen):
    out = np.zeros((len(his), maxlen), dtype=np.int64)
    for row, ids in enumerate(his):
        tail = np.asarray(ids[-maxlen:] if len(ids) else [], dtype=np.int64)
        if len(tail):
            out[row, maxlen - len(tail):] = tail
    return torch.from_numpy(out)
