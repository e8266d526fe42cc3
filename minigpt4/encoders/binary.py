"""BinLLM's binary encoder ("hashGNN" upstream, BinMF in the paper; spec §3.2).

Matrix factorisation embeddings -> per-side Linear -> tanh -> sign. Training mixes continuous and binary
values bit by bit: with probability `beta` a bit uses sign(z) (straight-through gradient), otherwise tanh(z).
Evaluation scores with the binary codes only: score = <h_u, h_i> with h in {-1, +1}^d.
State-dict keys match the upstream file (`rec_model.user_embedding.weight`, ..., `proj_i.bias`), so upstream
checkpoints load.
"""

import torch
from torch import nn

from minigpt4.registry import register


class _SignSTE(torch.autograd.Function):
    """sign with sign(0) = +1; backward passes the gradient through unchanged (upstream `my_sign`)."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):
        return grad


def sign_ste(x):
    return _SignSTE.apply(x)


class MatrixFactorization(nn.Module):
    def __init__(self, user_num, item_num, dim):
        super().__init__()
        self.user_embedding = nn.Embedding(user_num, dim, padding_idx=0)
        self.item_embedding = nn.Embedding(item_num, dim, padding_idx=0)


@register("rec_model", "hash")
class BinaryEncoder(nn.Module):
    def __init__(self, user_num, item_num, embedding_size=32):
        super().__init__()
        self.rec_model = MatrixFactorization(user_num, item_num, embedding_size)
        self.proj_u = nn.Linear(embedding_size, embedding_size)
        self.proj_i = nn.Linear(embedding_size, embedding_size)
        self.beta = 0.0  # probability that a bit uses its binary value during training

    @classmethod
    def from_config(cls, rec_config):
        return cls(rec_config.user_num, rec_config.item_num, rec_config.embedding_size)

    def continuous(self, users, items):
        z_u = torch.tanh(self.proj_u(self.rec_model.user_embedding(users)))
        z_i = torch.tanh(self.proj_i(self.rec_model.item_embedding(items)))
        return z_u, z_i

    def forward(self, users, items):
        z_u, z_i = self.continuous(users, items)
        h_u, h_i = sign_ste(z_u), sign_ste(z_i)
        if self.training:
            # One element-wise mask shared by the user and the item of a row, as upstream.
            use_binary = torch.rand_like(z_u) < self.beta
            h_u, h_i = torch.where(use_binary, h_u, z_u), torch.where(use_binary, h_i, z_i)
        return (h_u * h_i).sum(-1)

    def update_beta(self, epoch, step):
        """Called after each epoch's evaluation: +step every second epoch, clamped at 1 (fully binary)."""
        if epoch % 2 == 0:
            self.beta = min(self.beta + step, 1.0)

    @torch.no_grad()
    def code_bits(self):
        """0/1 bit tables for every user and item id (row 0 = padding id), computed in fp32."""
        users = torch.tanh(self.proj_u(self.rec_model.user_embedding.weight.float()))
        items = torch.tanh(self.proj_i(self.rec_model.item_embedding.weight.float()))
        return (users >= 0).to(torch.uint8).cpu().numpy(), (items >= 0).to(torch.uint8).cpu().numpy()
