"""CTRL's alignment (Li et al., "CTRL: Connect Collaborative and Language Model for CTR Prediction", arXiv
2306.02841 v4, section 4): the two views of a sample, the collaborative model's representation and the language
model's representation of the sample written as text, are projected and aligned by a contrastive loss.

- Projection (the paper's Eq. 2-3): one linear map per view to `proj_dim` (128 in the paper).
- Fine-grained alignment (Eq. 7-8): each projected vector is mapped by `subspaces` more linear maps into
  sub-representations, and the similarity of a pair is the sum, over the first vector's sub-representations, of
  its largest dot product with the second vector's ("maxsim"; raw dot products, so sim(a, b) != sim(b, a)).
- Loss: InfoNCE with in-batch negatives in both directions, text to tabular (sim(text_k, tab_j)) and tabular to
  text (sim(tab_k, text_j)), at temperature `tau` (0.7 in the paper), averaged.

What the paper leaves open (the number and size of the sub-spaces) is set in the config; docs/DIFFERENCES.md
says what we chose and why.
"""

import torch
import torch.nn.functional as F
from torch import nn


class AlignmentHeads(nn.Module):
    """Projection and sub-space maps of both views: (collaborative [B, d_col], text [B, d_text]) ->
    two [B, subspaces, sub_dim] tensors."""

    def __init__(self, collab_dim, text_dim, proj_dim=128, subspaces=4, sub_dim=32):
        super().__init__()
        self.subspaces, self.sub_dim = subspaces, sub_dim
        self.project_collab = nn.Linear(collab_dim, proj_dim)
        self.project_text = nn.Linear(text_dim, proj_dim)
        # the M linear maps of Eq. 7, one per sub-space, as one Linear whose output is cut into M parts
        self.split_collab = nn.Linear(proj_dim, subspaces * sub_dim)
        self.split_text = nn.Linear(proj_dim, subspaces * sub_dim)

    def forward(self, collab, text):
        c = self.split_collab(self.project_collab(collab)).view(-1, self.subspaces, self.sub_dim)
        t = self.split_text(self.project_text(text)).view(-1, self.subspaces, self.sub_dim)
        return c, t


def maxsim(a, b):
    """[A, B] similarities: sim(a_i, b_j) = sum over a_i's sub-representations m of max over b_j's n of
    a_{i,m} . b_{j,n}. a: [A, M, d], b: [B, M, d]."""
    dots = torch.einsum("imd,jnd->ijmn", a, b)
    return dots.max(dim=3).values.sum(dim=2)


def contrastive_loss(collab, text, tau):
    """(loss, text-to-tabular loss, tabular-to-text loss) of a batch whose row k of each view is one sample: the
    mean over rows of -log softmax over the batch's other view, at temperature tau, averaged over both ways."""
    targets = torch.arange(collab.shape[0], device=collab.device)
    text_to_tab = F.cross_entropy(maxsim(text, collab) / tau, targets)
    tab_to_text = F.cross_entropy(maxsim(collab, text) / tau, targets)
    return (text_to_tab + tab_to_text) / 2, text_to_tab, tab_to_text
