"""DIN (`rec_model: DIN`, spec §3.5): attention of the target item over the row's history, then a CTR head.

Module tree, parameter names/shapes, init and forward math follow upstream CoLLM's `RecEncoder_DIN`
(zyang1580/CoLLM `minigpt4/models/rec_base_models.py`, `Dice` .. `RecEncoder_DIN`), so its saved state dict
loads here with strict=True.

emb_dim = embedding_size // 3; user, item and history-item tables (the history has its own table, no
padding_idx). Attention unit per history position: [q, k, q-k, q*k] -> Linear(4e, 64) -> Dice -> Linear(64, 16)
-> Linear(16, 1), with q = target item, k = history item. The weights are not softmax-normalised (DIN's point:
the sum keeps the intensity of the user's interest) and padded positions (id 0) get weight 0. The fused feature
[item, attended history, user] (3 * emb_dim) is what the LLM stage consumes (`all_encode`); the CTR head
(Linear 200 -> Dice -> Dropout -> Linear 80 -> Dice -> Dropout -> Linear 1) is only for pretraining. It returns
a logit (upstream ended with a Sigmoid, which has no parameters; BCE on logits is the stabler equivalent).

Dice = BatchNorm1d(eps 1e-8, affine, running stats) + a per-feature `alpha`, stored as [dim] in the CTR head
and [dim, 1] in the attention unit (upstream's 2-d and 3-d variants). Init as upstream's `_init_weights`:
every Linear and Embedding weight xavier-normal, Linear biases zero; `alpha` stays zero and BatchNorm keeps
PyTorch's (weight 1, bias 0).
"""

import torch
from torch import nn

from minigpt4.registry import register


class Dice(nn.Module):
    """Data-adaptive activation: p * x + (1 - p) * alpha * x with p = sigmoid(batch-normalised x).

    ndim=2 takes [B, dim]; ndim=3 takes [B, L, dim] (statistics per feature over B and L) and keeps alpha as
    [dim, 1], the shape upstream's 3-d variant stores because it works on the transposed [B, dim, L] tensor.
    """

    def __init__(self, dim, ndim=2, eps=1e-8):
        super().__init__()
        if ndim not in (2, 3):
            raise ValueError(f"Dice ndim must be 2 or 3, got {ndim}")
        self.ndim = ndim
        self.bn = nn.BatchNorm1d(dim, eps=eps)
        self.alpha = nn.Parameter(torch.zeros(dim) if ndim == 2 else torch.zeros(dim, 1))

    def forward(self, x):
        if x.dim() != self.ndim:
            raise ValueError(f"Dice(ndim={self.ndim}) got a {x.dim()}-d input")
        if self.ndim == 2:
            p = torch.sigmoid(self.bn(x))
            return self.alpha * (1 - p) * x + p * x
        xt = x.transpose(1, 2)  # [B, dim, L]: BatchNorm1d's channel axis, where alpha [dim, 1] broadcasts
        p = torch.sigmoid(self.bn(xt))
        return (self.alpha * (1 - p) * xt + p * xt).transpose(1, 2)


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
        self.fc1 = FullyConnected(nn.Linear(4 * emb_dim, 64), Dice(64, ndim=3), nn.Linear(64, 16))
        self.fc2 = nn.Linear(16, 1)

    def forward(self, query, keys):  # query [B, e], keys [B, L, e] -> [B, L]
        q = query.unsqueeze(1).expand_as(keys)
        return self.fc2(self.fc1(torch.cat([q, keys, q - keys, q * keys], dim=-1))).squeeze(-1)


class AttentionPooling(nn.Module):
    def __init__(self, emb_dim):
        super().__init__()
        self.local_att = LocalActivationUnit(emb_dim)

    def weights(self, query, keys, his):
        # masked_fill as upstream: padding gets exactly 0 whatever its raw score (a product would keep a NaN)
        return self.local_att(query, keys).masked_fill(his == 0, 0.0)

    def forward(self, query, keys, his):
        return (self.weights(query, keys, his).unsqueeze(-1) * keys).sum(1)


@register("rec_model", "DIN")
class DIN(nn.Module):
    target_aware = True  # its user vector attends over the history with the target item (a slot prompt's user slot)

    def __init__(self, user_num, item_num, embedding_size=192, maxlen=10, drop=0.2):
        super().__init__()
        self.history_len = maxlen
        e = self.emb_dim = embedding_size // 3
        self.embed_layers = nn.ModuleList([nn.Embedding(user_num, e), nn.Embedding(item_num, e)])
        self.sequence_embed_layers = nn.ModuleList([nn.Embedding(item_num, e)])
        self.attn = AttentionPooling(e)
        self.fc_layer = FullyConnected(nn.Linear(3 * e, 200), Dice(200), nn.Dropout(drop),
                                       nn.Linear(200, 80), Dice(80), nn.Dropout(drop), nn.Linear(80, 1))
        self._init_weights()

    def _init_weights(self):
        # upstream's glorot-normal scheme; Dice alpha and BatchNorm keep their construction values
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.xavier_normal_(m.weight)

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

    @property
    def hidden_dim(self):
        """Width of `hidden` (read from the output layer: a probe forward in training mode would move Dice's
        BatchNorm statistics and draw dropout noise)."""
        return self.fc_layer.fc[-1].in_features

    def hidden(self, users, items, his):
        """The CTR head's last hidden layer (80 wide, under its output Linear): the representation CTRL aligns
        with the text's (its stage 2 puts an output layer on top of it, as this model's own is)."""
        return self.fc_layer.fc[:-1](self.all_encode(users, items, his))

    def forward(self, users, items, his):
        return self.fc_layer.fc[-1](self.hidden(users, items, his)).squeeze(-1)
