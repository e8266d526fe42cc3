"""Token batch -> score: the LLM's answer logit at the last prompt position (spec §2.6).

Only the last position's hidden state is multiplied with the Yes (and No) rows of the output layer; the
full-vocabulary logits of every position, which the upstream computed and threw away, are never formed.
`score_type: yes` is the upstream score (raw Yes logit); `yes_minus_no` subtracts the No logit.

With `collab` (CoLLM, soft prompt, PersonPrompt) the prompt's slot positions get vectors instead of token
embeddings and the backbone runs on `inputs_embeds`; otherwise it runs on the token ids.
"""

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.llm.backbone import add_lora, answer_token_ids, load_backbone
from minigpt4.llm.collab_tokens import CollabTokens, place_slots
from minigpt4.registry import register


@register("model", "mini_gpt4rec_v2")
class LLMRecommender(nn.Module):
    def __init__(self, causal_lm, tokenizer, score_type="yes", collab=None):
        super().__init__()
        self.llm = causal_lm  # a peft model when LoRA is used, else the bare backbone
        self.tokenizer = tokenizer
        self.score_type = score_type
        self.yes_id, self.no_id = answer_token_ids(tokenizer)
        self.collab = collab  # CollabTokens filling the prompt's ID slots, or None

    @classmethod
    def from_config(cls, model_cfg, dtype=torch.float32, slots=False):
        """slots: the prompt has CoLLM ID slots, so build the module that fills them (`model.rec_model`)."""
        backbone, tokenizer = load_backbone(model_cfg.llama_model, dtype=dtype)
        if model_cfg.lora_config.use_lora:
            backbone = add_lora(backbone, model_cfg.lora_config)
            if model_cfg.freeze_lora:
                backbone.requires_grad_(False)
        collab = None
        if slots:
            embed = backbone.get_input_embeddings()
            # The scale tokens enter the decoder at: Gemma multiplies its table by sqrt(hidden) (embed_scale).
            init_std = float(embed.weight.float().std()) * float(getattr(embed, "embed_scale", 1.0))
            collab = CollabTokens.from_config(model_cfg, embed.weight.shape[1], init_std=init_std)
            collab.freeze(encoder=model_cfg.freeze_rec, mapping=model_cfg.freeze_proj)
        return cls(backbone, tokenizer, model_cfg.score_type, collab)

    @property
    def causal_lm(self):
        """The transformers model (LoRA layers injected in place when peft wraps it)."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def backbone_signature(self):
        """What identifies the backbone an adapter was trained on, independent of where its files are."""
        c = self.causal_lm.config
        return f"{c.model_type}-L{c.num_hidden_layers}-H{c.hidden_size}-V{c.vocab_size}"

    def input_embeddings(self, input_ids, users, items, his=None):
        """Token embeddings with the slot positions (negative ids) replaced by the collaborative vectors."""
        words = self.causal_lm.get_input_embeddings()(input_ids.clamp(min=0))
        return place_slots(words, input_ids, self.collab(users, items, his))

    def forward(self, input_ids, attention_mask, users=None, items=None, his=None):
        """Left-padded batch -> scores [B] in fp32. users/items (and his) feed the slots when there are any."""
        lm = self.causal_lm
        # Positions count real tokens only, so a prompt scores the same whatever padding its batch needs.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if self.collab is not None:
            tokens = {"inputs_embeds": self.input_embeddings(input_ids, users, items, his)}
        else:
            tokens = {"input_ids": input_ids}
        hidden = lm.get_decoder()(**tokens, attention_mask=attention_mask, position_ids=position_ids,
                                  use_cache=False).last_hidden_state[:, -1]
        head = lm.get_output_embeddings()
        # In fp32 even for a bf16 backbone: Yes/No logits sit near +-13, where bf16 steps by 1/16, so a bf16
        # head would round most Yes-minus-No scores into ties. Two rows of the head cost nothing in fp32.
        rows = head.weight[[self.yes_id, self.no_id]].float()  # [2, H]
        logits = hidden.float() @ rows.T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[[self.yes_id, self.no_id]].float()
        return logits[:, 0] - logits[:, 1] if self.score_type == "yes_minus_no" else logits[:, 0]

    def loss(self, scores, labels):
        return F.binary_cross_entropy_with_logits(scores, labels.float())
