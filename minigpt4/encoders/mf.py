"""Matrix factorisation (`rec_model: MF`, spec §3.1): score = <e_u, e_i>, no biases.

The embedding tables are the ones the binary encoder already wraps (padding row 0 kept at zero), so the
state-dict keys are upstream's `user_embedding.weight` and `item_embedding.weight`.
"""

from minigpt4.encoders.binary import MatrixFactorization
from minigpt4.registry import register


@register("rec_model", "MF")
class MF(MatrixFactorization):
    history_len = 0

    @classmethod
    def from_config(cls, rec_config):
        return cls(rec_config.user_num, rec_config.item_num, rec_config.embedding_size)

    def user_encoder(self, users):
        return self.user_embedding(users)

    def item_encoder(self, items):
        return self.item_embedding(items)

    @property
    def collab_dim(self):
        return self.user_embedding.embedding_dim

    def collab_vectors(self, users, items, his=None):
        """(user, item) vectors a CoLLM prompt slot receives."""
        return self.user_encoder(users), self.item_encoder(items)

    def forward(self, users, items):
        return (self.user_encoder(users) * self.item_encoder(items)).sum(-1)
