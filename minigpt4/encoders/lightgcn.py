"""LightGCN (`rec_model: lightgcn`, spec §3.3).

Nodes are all user ids followed by all item ids (user u -> row u, item i -> row user_num + i). Embeddings are
propagated over the normalised bipartite graph A_hat = D^-1/2 A D^-1/2 of the positive train rows, and the
representation is the mean of the layer outputs E_0..E_K. Score = dot product of the user and item rows.

The graph is built in memory from the rows it is given (`bipartite_graph`): upstream cached it in a file next to
the data and reused that file blindly, so a changed split silently kept the old graph. It is a non-persistent
buffer, so the state dict holds only upstream's `embedding_user.weight` and `embedding_item.weight`.
"""

import numpy as np
import torch
from torch import nn

from minigpt4.registry import register


def bipartite_graph(users, items, labels, user_num, item_num):
    """Sparse (user_num + item_num)^2 matrix D^-1/2 A D^-1/2, A symmetric with A[u, U+i] = number of positive
    (u, i) rows (duplicates summed), no self-loops. Negative rows add no edge; isolated nodes get zero rows."""
    users, items, labels = (np.asarray(x) for x in (users, items, labels))
    pos = labels > 0
    u = torch.as_tensor(users[pos], dtype=torch.long)
    i = torch.as_tensor(items[pos], dtype=torch.long) + user_num
    n = user_num + item_num
    rows, cols = torch.cat([u, i]), torch.cat([i, u])
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), torch.ones(len(rows)), (n, n),
                                  check_invariants=True).coalesce()  # coalesce sums duplicates
    degree = torch.zeros(n).index_add_(0, adj.indices()[0], adj.values())
    inv_sqrt = torch.where(degree > 0, degree.clamp(min=1e-12).rsqrt(), torch.zeros_like(degree))
    r, c = adj.indices()
    return torch.sparse_coo_tensor(adj.indices(), inv_sqrt[r] * adj.values() * inv_sqrt[c], (n, n),
                                   check_invariants=True).coalesce()


@register("rec_model", "lightgcn")
class LightGCN(nn.Module):
    history_len = 0

    def __init__(self, user_num, item_num, embed_size=64, gcn_layers=2, init_emb=0.1):
        super().__init__()
        self.user_num, self.item_num, self.gcn_layers = user_num, item_num, gcn_layers
        self.embedding_user = nn.Embedding(user_num, embed_size)
        self.embedding_item = nn.Embedding(item_num, embed_size)
        nn.init.normal_(self.embedding_user.weight, std=init_emb)
        nn.init.normal_(self.embedding_item.weight, std=init_emb)
        self.register_buffer("graph", None, persistent=False)

    @classmethod
    def from_config(cls, rec_config):
        return cls(rec_config.user_num, rec_config.item_num, rec_config.embed_size, rec_config.gcn_layers,
                   rec_config.init_emb)

    def set_graph(self, graph):
        n = self.user_num + self.item_num
        if tuple(graph.shape) != (n, n):
            raise ValueError(f"graph is {tuple(graph.shape)}, expected ({n}, {n}) for {self.user_num} users + "
                             f"{self.item_num} items")
        self.graph = graph.to(self.embedding_user.weight.device)

    def computer(self):
        """Propagated (all_users, all_items): the mean of E_0 .. E_K."""
        if self.graph is None:
            raise RuntimeError("LightGCN has no graph: call set_graph(bipartite_graph(...train rows...)) first")
        layer = torch.cat([self.embedding_user.weight, self.embedding_item.weight])
        total = layer
        for _ in range(self.gcn_layers):
            layer = torch.sparse.mm(self.graph, layer)
            total = total + layer
        out = total / (self.gcn_layers + 1)
        return out[:self.user_num], out[self.user_num:]

    @property
    def collab_dim(self):
        return self.embedding_user.embedding_dim

    def collab_vectors(self, users, items, his=None):
        """(user, item) vectors a CoLLM prompt slot receives: the propagated rows."""
        all_users, all_items = self.computer()
        return all_users[users], all_items[items]

    def forward(self, users, items):
        user, item = self.collab_vectors(users, items)
        return (user * item).sum(-1)
