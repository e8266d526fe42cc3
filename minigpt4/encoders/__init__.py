"""The collaborative encoders, one module each: BinLLM's binary encoder (`binary.py`, spec §3.2) and CoLLM's
(spec §3.1, §3.3-3.5). Importing this package registers them as `model.rec_model` names; `factory.py` builds and
loads them.

Interface used by the stage-0 recipe (`minigpt4/recipes/pretrain_encoder.py`): `forward(users, items[, his])`
returns one logit per row; `history_len` (> 0 only for models that read the row's history) says how many history
ids a row needs; a model with `set_graph` is given the bipartite graph of the positive train rows before training.
For the CoLLM LLM stage (`minigpt4/llm/collab_tokens.py`): `collab_vectors(users, items[, his])` returns the
(user, item) vectors a prompt's slots receive, each `collab_dim` wide.
"""

from minigpt4.encoders import binary, din, lightgcn, mf, sasrec  # noqa: F401
