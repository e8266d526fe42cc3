"""SASRec (`rec_model: sasrec`, spec §3.4): causal self-attention over the row's history of liked items.

Input: the history ids left-padded with 0 to `maxlen` (most recent last). Each block: LayerNorm -> multi-head
attention (query = normalised sequence, keys/values = the sequence, residual on the query) -> LayerNorm ->
point-wise (kernel-1 conv) feed-forward with residual; padded positions are zeroed after every block. The
sequence vector is the final LayerNorm of the last position; score = <sequence vector, item_emb(target)>.
State-dict keys are upstream's (`item_emb`, `pos_emb`, `attention_layernorms.k`, `attention_layers.k`,
`forward_layernorms.k`, `forward_layers.k.conv1/conv2`, `last_layernorm`).

One deliberate difference: padded keys are masked out of the attention (upstream let every position attend to
the padding, whose projected bias still received weight), so the score does not depend on how much padding a
row has. Each position may always attend to itself, so an all-padding row has no empty softmax.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from minigpt4.registry import register


class PointWiseFeedForward(nn.Module):
    def __init__(self, hidden, dropout):
        super().__init__()
        # kernel-1 convolutions = per-position linear layers; Conv1d keeps upstream's key names and weight shapes
        self.conv1 = nn.Conv1d(hidden, hidden, kernel_size=1)
        self.dropout1 = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv1d(hidden, hidden, kernel_size=1)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x):  # x: [B, L, H]
        # a kernel-1 conv is a linear map of each position; applied as one, it skips two transposes and the
        # convolution kernels (about 20% of a CPU training step)
        y = self.relu(self.dropout1(F.linear(x, self.conv1.weight.squeeze(-1), self.conv1.bias)))
        return x + self.dropout2(F.linear(y, self.conv2.weight.squeeze(-1), self.conv2.bias))


@register("rec_model", "sasrec")
class SASRec(nn.Module):
    def __init__(self, item_num, hidden_units=64, maxlen=25, num_blocks=2, num_heads=1, dropout_rate=0.2):
        super().__init__()
        self.history_len = maxlen
        self.hidden_units = hidden_units
        self.item_emb = nn.Embedding(item_num, hidden_units, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, hidden_units)
        self.emb_dropout = nn.Dropout(dropout_rate)
        self.attention_layernorms = nn.ModuleList()
        self.attention_layers = nn.ModuleList()
        self.forward_layernorms = nn.ModuleList()
        self.forward_layers = nn.ModuleList()
        for _ in range(num_blocks):
            self.attention_layernorms.append(nn.LayerNorm(hidden_units, eps=1e-8))
            self.attention_layers.append(nn.MultiheadAttention(hidden_units, num_heads, dropout=dropout_rate,
                                                               batch_first=True))
            self.forward_layernorms.append(nn.LayerNorm(hidden_units, eps=1e-8))
            self.forward_layers.append(PointWiseFeedForward(hidden_units, dropout_rate))
        self.last_layernorm = nn.LayerNorm(hidden_units, eps=1e-8)
        # xavier-normal embeddings (std ~0.02 for ML-1M) as in the original SASRec code, not PyTorch's N(0, 1):
        # with N(0, 1) the first logits are about +-8 and the first epochs are spent shrinking them
        for table in (self.item_emb, self.pos_emb):
            nn.init.xavier_normal_(table.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()  # the padding item stays a zero vector

    @classmethod
    def from_config(cls, rec_config):
        return cls(rec_config.item_num, rec_config.hidden_units, rec_config.maxlen, rec_config.num_blocks,
                   rec_config.num_heads, rec_config.dropout_rate)

    def log_feats(self, his):
        """Per-position outputs [B, L, H] of the left-padded id sequences his [B, L]."""
        length = his.shape[1]
        keep = (his != 0).unsqueeze(-1)  # [B, L, 1]
        x = self.item_emb(his) * math.sqrt(self.hidden_units)
        # positions index the last `length` rows, so a shorter input means the most recent maxlen slots
        x = x + self.pos_emb.weight[self.pos_emb.num_embeddings - length:]
        x = self.emb_dropout(x) * keep
        future = torch.ones(length, length, dtype=torch.bool, device=his.device).triu(1)
        padded_key = (his == 0).unsqueeze(1) & ~torch.eye(length, dtype=torch.bool, device=his.device)
        blocked = future.unsqueeze(0) | padded_key  # [B, L, L]; True = may not attend
        heads = self.attention_layers[0].num_heads if len(self.attention_layers) else 1
        blocked = blocked.repeat_interleave(heads, dim=0)
        for norm_a, attn, norm_f, ffn in zip(self.attention_layernorms, self.attention_layers,
                                             self.forward_layernorms, self.forward_layers):
            q = norm_a(x)
            out, _ = attn(q, x, x, attn_mask=blocked, need_weights=False)
            x = ffn(norm_f(q + out)) * keep
        return self.last_layernorm(x)

    def seq_encoder(self, his):
        return self.log_feats(his)[:, -1]

    def item_encoder(self, items):
        return self.item_emb(items)

    @property
    def collab_dim(self):
        return self.hidden_units

    def collab_vectors(self, users, items, his):
        """(user, item) vectors a CoLLM prompt slot receives: the user is the last state over the history."""
        return self.seq_encoder(his), self.item_encoder(items)

    def forward(self, users, items, his):
        user, item = self.collab_vectors(users, items, his)
        return (user * item).sum(-1)
