"""Cascade attention: candidates' suffixes attend to their user's shared prefix without a copy of it per candidate.

Scoring K candidates of a user runs the prefix once (`LLMRecommender.forward_shared`). Through a key/value cache,
each suffix row then needs its own copy of the prefix's keys and values, appended to and, for grouped-query heads,
repeated: on BinLLM prompts those copies were 18% of the time (results/speed/ranking.md). Here a suffix's attention
is split in two, as in Hydragen (arXiv 2402.05099) and FlashInfer's cascade inference: all of a user's suffix
queries against the one prefix (the candidates folded into the query length, the query heads of each key/value
head side by side), and each suffix against its own keys (causal); the two softmaxes are merged by their
log-sum-exp. The result is the same attention, up to float rounding.

The log-sum-exp comes from PyTorch's CPU flash-attention kernel (`aten::_scaled_dot_product_flash_attention_for_cpu`,
which returns it; the public `scaled_dot_product_attention` does not), so this runs on the CPU only;
`available` says when, and otherwise the cache path is used. It is registered as a transformers attention
implementation and switched on only for a suffix pass (`suffix_pass`); other forwards never see it.
"""

import contextlib
from dataclasses import dataclass

import torch

NAME = "minigpt4_cascade"
_FLASH_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


@dataclass
class Prefix:
    """The prefix pass's keys and values ([G, kv heads, P, d] per layer, left-padded), how many real tokens end
    each row (`lengths` [G]), and which rows of the suffix pass belong to which prefix row: `spans`, a list of
    (prefix row, first suffix row, end), the pass's rows ordered so that each prefix row's are contiguous."""

    keys: list
    values: list
    lengths: list
    spans: list


def available(config, device):
    """Whether cascade attention computes this model's attention: a CPU, PyTorch's flash kernel and no logit
    soft-capping (a sliding window shorter than the prompts never gets here: forward_shared scores whole prompts)."""
    return device.type == "cpu" and _FLASH_CPU is not None and not getattr(config, "attn_logit_softcapping", None)


def cascade_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, cascade=None,
                      **kwargs):
    """A transformers attention function. query [R, H, S, d]; key, value [R, kv heads, S, d]: the suffix pass's
    own, right-padded (a padded position is never before a real one, so plain causal attention is exact for the
    real ones); `cascade`: the Prefix. Returns ([R, S, H, d], None), as transformers' sdpa does."""
    rows, heads, width, dim = query.shape
    groups = heads // key.shape[1]
    if groups > 1:  # the suffix's own keys: S positions per row, a small copy
        key, value = (x.repeat_interleave(groups, dim=1) for x in (key, value))
    own, own_lse = _FLASH_CPU(query, key, value, 0.0, True, scale=scaling)  # [R, H, S, d], [R, H, S]
    layer = module.layer_idx
    keys, values = cascade.keys[layer], cascade.values[layer]
    out = torch.empty_like(own)
    for g, a, b in cascade.spans:
        n, real = b - a, int(cascade.lengths[g])
        if real == 0:  # nothing before the suffix
            out[a:b] = own[a:b]
            continue
        kv_heads = keys.shape[1]
        # [n, H, S, d] -> [1, kv heads, n * groups * S, d]: one query sequence per key/value head
        q = query[a:b].view(n, kv_heads, groups, width, dim).transpose(0, 1).reshape(1, kv_heads, -1, dim)
        k, v = (x[g:g + 1, :, x.shape[2] - real:] for x in (keys, values))  # its real prefix tokens, a view
        pre, pre_lse = _FLASH_CPU(q, k, v, 0.0, False, scale=scaling)
        pre = pre.view(kv_heads, n, groups, width, dim).transpose(0, 1).reshape(n, heads, width, dim)
        pre_lse = pre_lse.view(kv_heads, n, groups, width).transpose(0, 1).reshape(n, heads, width)
        top = torch.maximum(pre_lse, own_lse[a:b])
        w_pre, w_own = torch.exp(pre_lse - top), torch.exp(own_lse[a:b] - top)
        merged = (pre.float() * w_pre[..., None] + own[a:b].float() * w_own[..., None]) / (w_pre + w_own)[..., None]
        out[a:b] = merged.to(out.dtype)
    return out.transpose(1, 2).contiguous(), None


def _register():
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, cascade_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the mask is built, then left unread


@contextlib.contextmanager
def suffix_pass(config):
    """The model computes its attention with `cascade_attention` inside the block (the config object is shared by
    its layers), and as before after it, also when the block fails."""
    _register()
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before
