"""Token batch -> score: the LLM's answer logit at the last prompt position (spec §2.6).

Only the last position's hidden state is multiplied with the Yes (and No) rows of the output layer; the
full-vocabulary logits of every position, which the upstream computed and threw away, are never formed.
`score_type: yes` is the upstream score (raw Yes logit); `yes_minus_no` subtracts the No logit.
Backbones whose forward scales or soft-caps the output layer's logits (Cohere, Granite, Gemma 2) get the same
transform on each of the two logits (`final_logit_transform`), so a score is what `model(...).logits` holds.

With `collab` (CoLLM, soft prompt, PersonPrompt) the prompt's slot positions get vectors instead of token
embeddings and the backbone runs on `inputs_embeds`; otherwise it runs on the token ids.
"""

import contextlib
import inspect

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import DynamicCache

from minigpt4.config import ConfigError, load_in_bits
from minigpt4.llm import cascade_attention
from minigpt4.llm.backbone import add_lora, answer_token_ids, base_model, load_backbone
from minigpt4.llm.collab_tokens import CollabTokens, place_slots
from minigpt4.shared_prefix import pad_rows

# Families whose transformers forward scales lm_head's output by a config value (read in transformers 5.24's
# modeling files): model_type prefix -> (config key, "multiply" | "divide").
LOGIT_SCALING = {"cohere": ("logit_scale", "multiply"),  # cohere, cohere2, cohere2_moe, cohere_compass
                 "granite": ("logits_scaling", "divide"),  # granite, granitemoe*, granite_swa
                 "hyperclovax": ("logits_scaling", "multiply")}
SCALE_KEYS = ("logit_scale", "logits_scaling")
# Every attention kernel but cuDNN's. PyTorch (>= 2.11) picks cuDNN's first on H100/H200 when a mask is passed, and
# its backward returns NaN query gradients when a masked batch is 64 tokens past a multiple of 128 wide and a row
# is fully masked, as a left-padded row's pad positions are (pytorch/pytorch#196678; the GPU check's padding probe
# hit it: results/gpu/nvidia-h200). It also builds a graph for each new batch shape. The other kernels have neither.
ATTENTION_KERNELS = [b for name, b in SDPBackend.__members__.items() if name not in ("ERROR", "CUDNN_ATTENTION")]
# keys of transforms not reproduced here: such a backbone is refused
UNSUPPORTED_LOGIT_KEYS = {"output_multiplier": "multiplies the logits before soft-capping them (Muse)",
                          "logits_soft_cap": "soft-caps the logits under its own key (RecurrentGemma)"}


def _refuse(config, why):
    raise ConfigError(f"backbone {config.model_type}: {why}; the Yes/No score reads two rows of the output layer "
                      "and would not equal the logits of the model's forward: use another backbone")


def final_logit_transform(config):
    """(multiply, divide, cap), each None when absent: what the transformers forward does to lm_head's output, in
    this order: logits * multiply, logits / divide, then cap * tanh(logits / cap). Cohere multiplies by
    `logit_scale`, Granite divides by `logits_scaling`; Gemma 2 (30), Gemma 3 (null in the checkpoints we use)
    and other Gemma-family causal LMs soft-cap with `final_logit_softcapping`. Anything else that may touch the
    logits is refused rather than scored wrong."""
    for key, what in UNSUPPORTED_LOGIT_KEYS.items():
        if getattr(config, key, None) is not None:
            _refuse(config, f"config.{key}: it {what}")
    text = config.get_text_config()
    if text is not config:  # multimodal wrappers differ: PaliGemma applies text_config's cap, Gemma 3's ignores it
        for key in ("final_logit_softcapping", *SCALE_KEYS, *UNSUPPORTED_LOGIT_KEYS):
            if getattr(text, key, None) is not None:
                _refuse(config, f"text_config.{key} is set and whether this wrapper's forward applies it is unknown")
    multiply = divide = None
    family = next((f for f in LOGIT_SCALING if config.model_type.startswith(f)), None)
    if family is not None:
        key, how = LOGIT_SCALING[family]
        value = float(getattr(config, key))
        multiply, divide = (value, None) if how == "multiply" else (None, value)
    else:
        for key in SCALE_KEYS:
            if getattr(config, key, None) is not None:  # MPT: the HF forward ignores logit_scale, the original used it
                _refuse(config, f"config.{key} = {getattr(config, key)!r}, and whether its forward applies it is "
                                "unknown")
    cap = getattr(config, "final_logit_softcapping", None)
    return multiply, divide, (float(cap) if cap is not None else None)


def cache_keyword(decoder):
    """The decoder forward's keyword for a key/value cache: `cache` since transformers 5.25 (`past_key_values`
    still works there, with a deprecation warning), `past_key_values` before."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def cache_pairs(cache):
    """(keys, values) of every layer of a DynamicCache."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache))  # transformers before the layered caches (< 4.54)


def select_rows(cache, rows):
    """A new DynamicCache holding rows `rows` (repeats allowed) of every layer of `cache`, which stays as it is."""
    out = DynamicCache()
    for i, (keys, values) in enumerate(cache_pairs(cache)):
        out.update(keys[rows], values[rows], i)
    return out


class LLMRecommender(nn.Module):
    def __init__(self, causal_lm, tokenizer, score_type="yes", collab=None):
        super().__init__()
        self.llm = causal_lm  # a peft model when LoRA is used, else the bare backbone
        self.tokenizer = tokenizer
        self.score_type = score_type
        self.yes_id, self.no_id = answer_token_ids(tokenizer)
        self.collab = collab  # CollabTokens filling the prompt's ID slots, or None
        self.logit_transform = final_logit_transform(self.causal_lm.config)  # the forward's scaling / soft-cap

    @classmethod
    def from_config(cls, model_cfg, dtype=torch.float32, slots=False, lora=None, counts=None, device="cpu"):
        """slots: the prompt has CoLLM ID slots, so build the module that fills them (`model.rec_model`).
        lora: the LoRA settings to use instead of `model_cfg.lora_config` (eval.py: the checkpoint's shape).
        counts: (user_num, item_num) of the data, for the slot module; None: those `model_cfg.rec_config` carries.
        device: where the run computes; a backbone stored in 8 or 4 bits (`model.load_in_8bit` / `load_in_4bit` /
        `low_resource`) is loaded straight onto it, and needs a CUDA GPU."""
        backbone, tokenizer = load_backbone(model_cfg.llama_model, dtype=dtype, load_in_bits=load_in_bits(model_cfg),
                                            device=device)
        lora = model_cfg.lora_config if lora is None else lora
        if lora.use_lora:
            backbone = add_lora(backbone, lora)
            if model_cfg.freeze_lora:
                backbone.requires_grad_(False)
        collab = None
        if slots:
            embed = backbone.get_input_embeddings()
            # The scale tokens enter the decoder at: Gemma multiplies its table by sqrt(hidden) (embed_scale).
            init_std = float(embed.weight.float().std()) * float(getattr(embed, "embed_scale", 1.0))
            collab = CollabTokens.from_config(model_cfg, embed.weight.shape[1], init_std=init_std, counts=counts)
            collab.freeze(encoder=model_cfg.freeze_rec, mapping=model_cfg.freeze_proj)
        return cls(backbone, tokenizer, model_cfg.score_type, collab)

    @property
    def causal_lm(self):
        """The transformers model (LoRA layers injected in place when peft wraps it)."""
        return base_model(self.llm)

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
        tokens = self._tokens(input_ids, users, items, his)
        with sdpa_kernel(ATTENTION_KERNELS):
            hidden = lm.get_decoder()(**tokens, attention_mask=attention_mask, position_ids=position_ids,
                                      use_cache=False).last_hidden_state[:, -1]
        return self.scores_at(hidden)

    def forward_shared(self, prefix_ids, prefix_mask, suffix_ids, suffix_mask, owner, leaders, runs=None, users=None,
                       items=None, his=None):
        """Scores [N] of N candidates whose prompts are a shared prefix (row owner[n] of the left-padded prefix batch)
        followed by their own suffix (right-padded), as `forward` scores the whole prompts: the prefix runs once
        and its keys and values serve every candidate of its group (minigpt4/shared_prefix.py). leaders [G]: the
        candidate whose user / item / history fill the prefix's slots (the batching keeps candidate-dependent
        slots out of the prefix). runs: bounds of the suffix passes, each padded to its own longest suffix
        (default: one pass)."""
        decoder = self.causal_lm.get_decoder()
        window = getattr(decoder.config, "sliding_window", None)
        if window and prefix_mask.shape[1] + suffix_mask.shape[1] > window:
            # a sliding window shorter than the prompts: a suffix's window would reach back across the cut
            return self._whole_prompts(prefix_ids, prefix_mask, suffix_ids, suffix_mask, owner, users, items, his)
        key = cache_keyword(decoder)
        prefix = None
        if prefix_ids.shape[1]:
            position_ids = (prefix_mask.long().cumsum(-1) - 1).clamp(min=0)
            tokens = self._tokens(prefix_ids, *(None if x is None else x[leaders] for x in (users, items, his)))
            prefix = DynamicCache(config=self.causal_lm.config)  # filled in place by the forward
            with sdpa_kernel(ATTENTION_KERNELS):
                decoder(**tokens, attention_mask=prefix_mask, position_ids=position_ids, use_cache=True,
                        **{key: prefix})
        start = prefix_mask.sum(-1)  # real prefix tokens before each suffix
        lengths = suffix_mask.sum(-1)
        runs = [0, len(owner)] if runs is None else runs.tolist()
        cascade = prefix is not None and cascade_attention.available(decoder.config, suffix_ids.device)
        if cascade:
            pairs = cache_pairs(prefix)
            keys, values, real = [k for k, _ in pairs], [v for _, v in pairs], start.tolist()
        out = []
        for a, b in zip(runs[:-1], runs[1:]):
            width = int(lengths[a:b].max())
            # the pass's rows, each prefix row's together (cascade attention reads one prefix at a time)
            order = a + torch.argsort(owner[a:b], stable=True) if cascade else torch.arange(a, b)
            mine = owner[order]
            cache, mask, extra = None, suffix_mask[order, :width], {}
            if cascade:
                g, counts = torch.unique_consecutive(mine, return_counts=True)
                ends = counts.cumsum(0).tolist()
                spans = [(int(k), e - int(c), e) for k, c, e in zip(g, counts, ends)]
                extra["cascade"] = cascade_attention.Prefix(keys, values, real, spans)
            elif prefix is not None:
                cache = select_rows(prefix, mine)  # a copy of its prefix per candidate
                mask = torch.cat([prefix_mask[mine], mask], 1)
            position_ids = start[mine, None] + torch.arange(width, device=suffix_ids.device)
            rows = (None if x is None else x[order] for x in (users, items, his))
            tokens = self._tokens(suffix_ids[order, :width], *rows)
            switch = cascade_attention.suffix_pass(decoder.config) if cascade else contextlib.nullcontext()
            with sdpa_kernel(ATTENTION_KERNELS), switch:
                hidden = decoder(**tokens, attention_mask=mask, position_ids=position_ids,
                                 use_cache=cache is not None, **{key: cache}, **extra).last_hidden_state
            picked = torch.empty(b - a, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
            picked[order - a] = hidden[torch.arange(b - a, device=hidden.device), lengths[order] - 1]
            out.append(picked)
        return self.scores_at(torch.cat(out))

    def _whole_prompts(self, prefix_ids, prefix_mask, suffix_ids, suffix_mask, owner, users, items, his):
        """forward_shared's scores the pointwise way: each candidate's prefix and suffix joined again, left-padded,
        in pieces of no more tokens than the shared batch held."""
        prompts = [torch.cat([prefix_ids[g][prefix_mask[g].bool()], suffix_ids[r][suffix_mask[r].bool()]]).tolist()
                   for r, g in enumerate(owner.tolist())]
        step = max(1, int(prefix_mask.sum() + suffix_mask.sum()) // max(len(x) for x in prompts))
        out = []
        for a in range(0, len(prompts), step):
            ids, mask = pad_rows(prompts[a:a + step], self.tokenizer.pad_token_id, left=True)
            rows = (None if x is None else x[a:a + step] for x in (users, items, his))
            out.append(self(ids.to(prefix_ids.device), mask.to(prefix_mask.device), *rows))
        return torch.cat(out)

    def shared_slots(self):
        """Slot ids (negative) whose vectors are the same for every candidate item of a user, so a shared prefix may
        hold them: the user's slots, unless the encoder's user vector reads the target item (DIN)."""
        if self.collab is None or getattr(self.collab.encoder, "target_aware", False):
            return ()
        return tuple(range(-1, -self.collab.token_num - 1, -1))

    def _tokens(self, input_ids, users, items, his):
        """The decoder's input: token ids, or embeddings with the slots filled when the model has slots."""
        if self.collab is not None:
            return {"inputs_embeds": self.input_embeddings(input_ids, users, items, his)}
        return {"input_ids": input_ids}

    def scores_at(self, hidden):
        """Scores [B] from the last prompt position's hidden states [B, H]."""
        head = self.causal_lm.get_output_embeddings()
        # In fp32 even for a bf16 backbone: Yes/No logits sit near +-13, where bf16 steps by 1/16, so a bf16
        # head would round most Yes-minus-No scores into ties. Two rows of the head cost nothing in fp32. Autocast
        # is switched off here: under it (every bf16 run) the matmul would be cast back to bf16 (ICL on ML-100K
        # scored 4,000 rows with 44 distinct values that way).
        with torch.autocast(hidden.device.type, enabled=False):
            rows = head.weight[[self.yes_id, self.no_id]].float()  # [2, H]
            logits = hidden.float() @ rows.T
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[[self.yes_id, self.no_id]].float()
            logits = self.finish_logits(logits)
        return logits[:, 0] - logits[:, 1] if self.score_type == "yes_minus_no" else logits[:, 0]

    def finish_logits(self, logits):
        """The backbone forward's scaling and soft-capping of lm_head's output, per logit (before Yes - No)."""
        multiply, divide, cap = self.logit_transform
        if multiply is not None:
            logits = logits * multiply
        if divide is not None:
            logits = logits / divide
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def loss(self, scores, labels):
        return F.binary_cross_entropy_with_logits(scores, labels.float())
