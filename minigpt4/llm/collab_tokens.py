"""Collaborative tokens: the vectors CoLLM and the prompt-tuning baselines put into a prompt's ID slots.

A prompt's `<UserID>` and `<TargetItemID>` each become `proj_token_num` positions in the token batch (marked by
negative ids, see `minigpt4/batching.py`); `place_slots` writes one vector per position into the input
embeddings. No vocabulary token stands in for a slot, so it works with any tokenizer (the upstream wrote
`<unk>` into the text and replaced every `<unk>` embedding, which breaks when a tokenizer has no `<unk>`).

Where the vectors come from (spec §3.6, §3.7), chosen by `model.rec_model`:
- a collaborative encoder (`MF`, `lightgcn`, `sasrec`, `DIN`): its (user, item) vectors through the mapping MLP
  Linear(d, d * proj_mid_times) -> ReLU -> Linear(., H * proj_token_num), one MLP shared by users and items (CoLLM);
- `soft_prompt`: two learned blocks of tokens, one for every user slot and one for every item slot (Prompt4NR);
- `personlized_prompt` (upstream spelling; `personalized_prompt` too): learned tokens per user and per item
  (PersonPrompt). The upstream's one-hot input times a bias-free Linear is an embedding table; it is one here.

A table's initial values (`model.slot_init`): `upstream` = those of the upstream's bias-free nn.Linear(rows, H * k)
(PyTorch's default, uniform within +-1/sqrt(rows): std 0.41 for the soft prompt's 2 rows, 1/sqrt(3 (U + I)) per
user/item), drawn the same way, so a seed gives the upstream's numbers; `token_scale` = normal with the backbone's
token-embedding std (as the backbone's own tokens enter the decoder).
"""

import math

import torch
from torch import nn

from minigpt4 import registry
from minigpt4.config import ConfigError, is_set
from minigpt4.encoders.factory import PROMPT_TABLES, build_encoder, load_pretrained_encoder, sized_rec_config


def place_slots(embeds, input_ids, slot_vectors):
    """embeds [B, T, H] of the text tokens; input_ids [B, T] with slot j of a row marked as id -(j + 1);
    slot_vectors [B, S, H]. Returns embeds with row b, position t replaced by slot_vectors[b, -id - 1]."""
    is_slot = input_ids < 0
    index = (-input_ids - 1).clamp(min=0)  # text positions read slot 0 and are then discarded by `where`
    # the check reads a device value (a host sync) and would split a compiled graph: eager forwards only
    if not torch.compiler.is_compiling() and int(index.max()) >= slot_vectors.shape[1]:
        raise ValueError(f"a batch marks slot {int(index.max())} but only {slot_vectors.shape[1]} slot vectors "
                         "were given")
    picked = slot_vectors.to(embeds.dtype).gather(1, index.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
    return torch.where(is_slot.unsqueeze(-1), picked, embeds)


class CollabTokens(nn.Module):
    """(users, items[, his]) -> slot vectors [B, 2 * proj_token_num, H]: the user's tokens, then the item's."""

    def __init__(self, hidden_size, token_num, encoder=None, mid_times=10, table_rows=None, user_offset=0,
                 item_offset=0, init_std=0.02, init="upstream"):
        super().__init__()
        self.hidden_size, self.token_num = hidden_size, token_num
        self.encoder = encoder
        self.history_len = getattr(encoder, "history_len", 0)
        if encoder is not None:
            d = encoder.collab_dim
            self.proj = nn.Sequential(nn.Linear(d, d * mid_times), nn.ReLU(),
                                      nn.Linear(d * mid_times, hidden_size * token_num))
        elif init == "upstream":
            # The upstream's Linear(rows, H * k, bias=False) weight [H * k, rows], initialised as nn.Linear does
            # (kaiming_uniform_ with a = sqrt(5)), transposed into the table: row r = the Linear's column r.
            weight = torch.empty(hidden_size * token_num, table_rows)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            self.table = nn.Embedding.from_pretrained(weight.T.contiguous(), freeze=False)
        elif init == "token_scale":
            # At the scale of the backbone's word embeddings, so the learned tokens start out looking like tokens.
            self.table = nn.Embedding(table_rows, hidden_size * token_num)
            nn.init.normal_(self.table.weight, std=init_std)
        else:
            raise ConfigError(f"model.slot_init must be upstream or token_scale, got {init!r}")
        if encoder is None:
            self.user_offset, self.item_offset = user_offset, item_offset
        self.encoder_frozen = False

    @classmethod
    def from_config(cls, model_cfg, hidden_size, init_std=0.02, counts=None):
        """counts: (user_num, item_num) derived from the data; None: those `model_cfg.rec_config` carries."""
        name, k = model_cfg.rec_model, model_cfg.proj_token_num
        rc = sized_rec_config(model_cfg.rec_config, counts)
        init = {"init_std": init_std, "init": model_cfg.slot_init}  # init_std: only read by slot_init token_scale
        if name == "soft_prompt":  # one block for all users (row 0), one for all items (row 1)
            return cls(hidden_size, k, table_rows=2, user_offset=None, item_offset=None, **init)
        if name in PROMPT_TABLES:  # user u -> row u, item i -> row user_num + i
            return cls(hidden_size, k, table_rows=rc.user_num + rc.item_num, item_offset=rc.user_num, **init)
        if name == "hash":
            raise ConfigError("model.rec_model = hash writes codes as text (run.mode v3); CoLLM slots (run.mode v2 "
                              "with <UserID>/<TargetItemID>) need MF, lightgcn, sasrec, DIN, soft_prompt or "
                              "personlized_prompt")
        if is_set(rc.pretrained_path):
            encoder = load_pretrained_encoder(model_cfg, counts)
        else:
            encoder = build_encoder(model_cfg, counts)
            if model_cfg.freeze_rec:
                print(f"warning: model.rec_config.pretrained_path is {rc.pretrained_path!r}: the frozen {name} "
                      "encoder keeps its random initialisation (upstream's random-encoder baseline)")
        return cls(hidden_size, k, encoder=encoder, mid_times=model_cfg.proj_mid_times)

    def freeze(self, encoder=False, mapping=False):
        """Freeze the encoder (kept in eval mode: no dropout, fixed BatchNorm) and/or the mapping/table."""
        if encoder and self.encoder is not None:
            self.encoder.requires_grad_(False)
            self.encoder_frozen = True
        if mapping:
            (self.proj if self.encoder is not None else self.table).requires_grad_(False)
        self.train(self.training)
        return self

    def train(self, mode=True):
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, users, items, his=None):
        if self.encoder is None:
            u = torch.zeros_like(users) if self.user_offset is None else users + self.user_offset
            i = torch.ones_like(items) if self.item_offset is None else items + self.item_offset
            vectors = self.table(torch.stack([u, i], dim=1))  # [B, 2, H * k]
        else:
            args = (users, items, his) if self.history_len else (users, items)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.encoder_frozen):
                user, item = self.encoder.collab_vectors(*args)
            vectors = self.proj(torch.stack([user, item], dim=1).float())  # [B, 2, H * k]
        return vectors.reshape(len(users), 2 * self.token_num, self.hidden_size)


def is_slot_model(rec_model):
    """Whether `model.rec_model` can fill CoLLM slots (every registered encoder except BinLLM's hash, and the
    prompt tables)."""
    return rec_model in PROMPT_TABLES or (rec_model in registry.names("rec_model") and rec_model != "hash")
