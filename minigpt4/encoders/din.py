"""DIN (`rec_model: DIN`, spec §3.5): attention of the target item over the row's history, then a CTR head.

emb_dim = embedding_size // 3; user, item and history-item tables (the history has its own table), xavier-normal
init. Attention unit per history position: [q, k, q-k, q*k] -> Linear(4e, 64) -> Dice -> Linear(64, 16) ->
Linear(16, 1), with q = target item, k = history item. The weights are not softmax-normalised (DIN's point: the
sum keeps the intensity of the user's interest) and padded positions (id 0) get weight 0. The fused feature
[item, attended history, user] (3 * emb_dim) is what the LLM stage consumes (`all_encode`); the CTR head
(Linear 200 -> Dice -> Dropout -> Linear 80 -> Dice -> Dropout -> Linear 1) is only for pretraining. It returns
a logit (upstream ended with a Sigmoid, which has no parameters; BCE on logits is the stabler equivalent).

State-dict prefixes are upstream's: `embed_layers.{0,1}`, `sequence_embed_layers.0`, `attn.local_att.fc1.fc`,
`attn.local_att.fc2`, `fc_layer.fc` (Dice layers hold `alpha` and BatchNorm buffers).
"""

import torch
from torch import nn

from minigpt4.registry import register


class Dice(nn.Module):
    """Data-adaptive activation: p * x + (1 - p) * alpha * x with p = sigmoid(batch-normalised x)."""

    def __init__(self, dim):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, eps=1e-8, affine=False)
        self.alpha = nn.Parameter(torch.zeros(dim))

    def forward(self, x):  # [B, dim] or [B, L, dim]; statistics per feature over all other axes
        normed = self.bn(x.transpose(1, 2)).transpose(1, 2) if x.dim() == 3 else self.bn(x)
        p = torch.sigmoid(normed)
        return p * x + (1 - p) * self.alpha * x


class FullyConnected(nn.Module):
    """A Sequential under the name `fc`, as upstream's key names (`....fc.N.*`) expect."""

    def __init__(self, *layers):
        super().__init__()
        self.fc = nn.Sequential(*layers)

    def forward(self, x):
        return self.fc(x)


class LocalActivationUnit(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.fc1 = FullyConnected(nn.Linear(4 * emb_dim, 64), Dice(64), nn.Linear(64, 16))
        self.fc2 = nn.Linear(16, 1)

    def forward(self, query, keys):  # query [B, e], keys [B, L, e] -> [B, L]
        q = query.unsqueeze(1).expand_as(keys)
        return self.fc2(self.fc1(torch.cat([q, keys, q - keys, q * keys], dim=-1))).squeeze(-1)


class AttentionPooling(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.local_att = LocalActivationUnit(emb_dim)

    def weights(self, query, keys, his):
        return self.local_att(query, keys) * (his != 0)  # padding gets exactly 0

    def forward(self, query, keys, his):
        return (self.weights(query, keys, his).unsqueeze(-1) * keys).sum(1)


@register("rec_model", "DIN")
class DIN(nn.Module):
    def __init__(self, user_num, item_num, embedding_size=192, maxlen=10, drop=0.2):
        super().__init__()
        self.history_len = maxlen
        e = self.emb_dim = embedding_size // 3
        self.embed_layers = nn.ModuleList([nn.Embedding(user_num, e), nn.Embedding(item_num, e)])
        self.sequence_embed_layers = nn.ModuleList([nn.Embedding(item_num, e)])
        for table in (*self.embed_layers, *self.sequence_embed_layers):
            nn.init.xavier_normal_(table.weight)
        self.attn = AttentionPooling(e)
        self.fc_layer = FullyConnected(nn.Linear(3 * e, 200), Dice(200), nn.Dropout(drop),
                                       nn.Linear(200, 80), Dice(80), nn.Dropout(drop), nn.Linear(80, 1))

    @classmethod
    def from_config(cls, rec_config):
        return cls(rec_config.user_num, rec_config.item_num, rec_config.embedding_size, rec_config.maxlen,
                   rec_config.drop)

    def all_encode(self, users, items, his):
        """Fused [item, attended history, user] feature, [B, 3 * emb_dim]."""
        item = self.embed_layers[1](items)
        history = self.attn(item, self.sequence_embed_layers[0](his), his)
        return torch.cat([item, history, self.embed_layers[0](users)], dim=-1)

    def item_encoder(self, items):
        return self.embed_layers[1](items).repeat(1, 3)

    @property
    def collab_dim(self):
        return 3 * self.emb_dim

    def collab_vectors(self, users, items, his):
        """(user, item) vectors a CoLLM prompt slot receives (upstream: the user slot gets the fused feature)."""
        return self.all_encode(users, items, his), self.item_encoder(items)

    def forward(self, users, items, his):
        return self.fc_layer(self.all_encode(users, items, his)).squeeze(-1)
