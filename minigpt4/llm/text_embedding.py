"""A language model's representation of a text: the mean of its last hidden states over the text's tokens (CTRL's
"mean pooling results of the last hidden states", arXiv 2306.02841 v4 section 5.1.3), computed once per text."""

import numpy as np
import torch
from tqdm import tqdm


@torch.no_grad()
def mean_pooled(causal_lm, tokenizer, texts, batch_size=16, autocast=None, desc="text embeddings"):
    """[len(texts), hidden] float32: each text's last hidden states (the decoder's output, under the LM head)
    averaged over its own tokens, padding left out. Texts are batched by length, so little padding is computed;
    `autocast`: the run's precision context (Precision.autocast()), or none."""
    import contextlib

    decoder = causal_lm.get_decoder()
    device = next(causal_lm.parameters()).device
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    order = np.argsort([len(x) for x in ids], kind="stable")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = torch.empty(len(ids), decoder.config.hidden_size, dtype=torch.float32)
    for first in tqdm(range(0, len(ids), batch_size), desc=desc, leave=False):
        rows = order[first:first + batch_size]
        width = max(len(ids[r]) for r in rows)
        batch = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):  # left padding, as the recommender's batches
            batch[k, width - len(ids[r]):] = torch.tensor(ids[r])
            mask[k, width - len(ids[r]):] = 1
        with autocast or contextlib.nullcontext():
            hidden = decoder(input_ids=batch.to(device), attention_mask=mask.to(device)).last_hidden_state
        hidden, m = hidden.float().cpu(), mask.unsqueeze(-1).float()
        out[torch.as_tensor(rows)] = (hidden * m).sum(1) / m.sum(1)
    return out
