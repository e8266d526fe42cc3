"""Stage 0's pieces (the loop is `minigpt4/recipes/pretrain_encoder.py`): a split as row tensors, batches, and
scoring with AUC / UAUC.

A split becomes a dict of row tensors built once: `users`, `items`, and `his` (padded history ids) only for
models with `history_len > 0`; a batch is that dict indexed by row and passed as keyword arguments.
"""

import numpy as np
import torch

from minigpt4.data.history import padded_history
from minigpt4.metrics import evaluate_scores


def model_inputs(model, df):
    """The keyword arguments of `model` for every row of df (row tensors), and the labels."""
    inputs = {"users": torch.tensor(df["uid"].to_numpy(), dtype=torch.long),
              "items": torch.tensor(df["iid"].to_numpy(), dtype=torch.long)}
    if getattr(model, "history_len", 0):
        inputs["his"] = padded_history(df["his"].to_numpy(), model.history_len)
    return inputs, torch.tensor(df["label"].to_numpy(), dtype=torch.float32)


def take(inputs, idx):
    """The rows `idx` of every input tensor: one batch."""
    return {k: v[idx] for k, v in inputs.items()}


def batch_bounds(n, batch_size):
    """Start/end rows of the batches of an epoch; a last batch of one row joins the previous one (BatchNorm in
    DIN's Dice needs two rows)."""
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:]))


@torch.no_grad()
def score_rows(model, df, inputs=None, batch_size=None):
    """One score per row of df; `inputs` = model_inputs(model, df)[0] when the caller already built them."""
    model.eval()
    inputs = inputs if inputs is not None else model_inputs(model, df)[0]
    # history models hold [batch, maxlen, dim] activations: smaller chunks keep the memory bounded
    batch_size = batch_size or (4096 if "his" in inputs else 65536)
    n = len(df)
    if n == 0:  # a split with no rows (e.g. no cold rows in a small dataset) has no scores, and metrics of NaN
        return np.zeros(0, dtype=np.float32)
    return torch.cat([model(**take(inputs, slice(s, s + batch_size))) for s in range(0, n, batch_size)]).numpy()


def evaluate(model, df, inputs=None):
    return evaluate_scores(df["uid"].to_numpy(), df["label"].to_numpy(), score_rows(model, df, inputs))
