"""Token batch -> score: the LLM's answer logit at the last prompt position (spec §2.6).

Only the last position's hidden state is multiplied with the Yes (and No) rows of the output layer; the
full-vocabulary logits of every position, which the upstream computed and threw away, are never formed.
`score_type: yes` is the upstream score (raw Yes logit); `yes_minus_no` subtracts the No logit.
"""

import torch
import torch.nn.functional as F
from torch import nn

from minigpt4.llm.backbone import add_lora, answer_token_ids, load_backbone
from minigpt4.registry import register


@register("model", "mini_gpt4rec_v2")
class LLMRecommender(nn.Module):
    def __init__(self, causal_lm, tokenizer, score_type="yes"):
        super().__init__()
        self.llm = causal_lm  # a peft model when LoRA is used, else the bare backbone
        self.tokenizer = tokenizer
        self.score_type = score_type
        self.yes_id, self.no_id = answer_token_ids(tokenizer)

    @classmethod
    def from_config(cls, model_cfg, dtype=torch.float32):
        backbone, tokenizer = load_backbone(model_cfg.llama_model, dtype=dtype)
        if model_cfg.lora_config.use_lora:
            backbone = add_lora(backbone, model_cfg.lora_config)
            if model_cfg.freeze_lora:
                backbone.requires_grad_(False)
        return cls(backbone, tokenizer, model_cfg.score_type)

    @property
    def causal_lm(self):
        """The transformers model (LoRA layers injected in place when peft wraps it)."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def backbone_signature(self):
        """What identifies the backbone an adapter was trained on, independent of where its files are."""
        c = self.causal_lm.config
        return f"{c.model_type}-L{c.num_hidden_layers}-H{c.hidden_size}-V{c.vocab_size}"

    def forward(self, input_ids, attention_mask):
        """Left-padded batch -> scores [B] in fp32."""
        lm = self.causal_lm
        # Positions count real tokens only, so a prompt scores the same whatever padding its batch needs.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        hidden = lm.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                  position_ids=position_ids, use_cache=False).last_hidden_state[:, -1]
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
