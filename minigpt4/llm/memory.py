"""How much memory a run needs per GPU, known before any weight is loaded.

The backbone is built on PyTorch's meta device (shapes only: no weights, no compute, a 7B model in about a second)
and one training forward is traced there with `saved_tensors_hooks`, so the activations autograd would keep are
counted from the real graph of this backbone, LoRA layout, batch and prompt length, not from a rule of thumb.
What it cannot see is added as labelled assumptions: the CUDA context and allocator slack, and the one layer that
gradient checkpointing recomputes at a time.

    est = estimate_memory(AutoConfig.from_pretrained(path), dtype=torch.bfloat16, lora=..., batch=8, seq_len=256)
    print(est.describe(available_gib=80))
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from minigpt4.llm.backbone import peft_model, set_checkpointing

GIB = 2**30
OVERHEAD_GIB = 1.0  # CUDA context + allocator slack: measured as 0.6-1.2 GiB on recent cards, not computable here
KBIT_BYTES = {8: 1.0, 4: 0.5 + 0.0625}  # bitsandbytes int8; NF4 + one fp32 absmax per 64 weights


@dataclass(frozen=True)
class LoraShape:
    r: int = 8
    target_modules: tuple = ("q_proj", "v_proj")
    layers: tuple = ()  # absolute or negative layer indices; empty = every layer
    dropout: float = 0.05  # > 0 keeps each adapted projection's dropped-out input for backward


@dataclass(frozen=True)
class MemoryEstimate:
    """GiB per process. `activations` is what autograd keeps between forward and backward (0 when scoring);
    `transient` the largest short-lived buffers (one layer's activations when scoring or recomputing)."""
    weights: float
    trained: float  # trained parameters + their gradients + AdamW's two moments, all fp32
    activations: float
    transient: float
    overhead: float
    setting: dict

    @property
    def total(self):
        return self.weights + self.trained + self.activations + self.transient + self.overhead

    def describe(self, available_gib=None):
        s = self.setting
        what = (f"{s['params'] / 1e9:.2f} B parameters in {s['weights_format']}, batch {s['batch']} x {s['seq_len']} "
                f"tokens, {'training' if s['train'] else 'scoring'}"
                + (", gradient checkpointing" if s.get("grad_checkpointing") else "")
                + (f", FSDP over {s['processes']} processes" if s.get("fsdp") else ""))
        line = (f"memory estimate: needs ~{self.total:.1f} GiB per GPU ({what}: weights {self.weights:.1f}, "
                f"trained parameters and optimizer {self.trained:.2f}, kept activations {self.activations:.1f}, "
                f"largest transient {self.transient:.1f}, CUDA context and slack {self.overhead:.1f} assumed)")
        if available_gib is not None:
            line += f"; this GPU has {available_gib:.1f} GiB"
        return line

    def fits(self, available_gib, margin=0.95):
        return self.total <= available_gib * margin


def _meta_model(model_config, dtype):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, dtype=dtype, attn_implementation="sdpa")
    model.requires_grad_(False)
    return model


def _lora(model, lora):
    from peft import LoraConfig

    n = model.config.num_hidden_layers
    layers = sorted({i % n for i in lora.layers}) or None
    config = LoraConfig(r=lora.r, lora_alpha=2 * lora.r, target_modules=list(lora.target_modules),
                        lora_dropout=lora.dropout, layers_to_transform=layers, task_type="CAUSAL_LM")
    return peft_model(model, config)


def _storages(tensors):
    return {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}


class _FusedAttentionKeeps(torch.autograd.Function):
    """Keeps for backward what a fused attention kernel keeps (flash, memory-efficient, cuDNN): queries, keys,
    values, the output, each row's logsumexp and the mask, which a boolean mask enters as an additive one in the
    queries' dtype, made anew in every layer. Only traced for its memory, never differentiated."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        kept = [q, k, v, out, q.new_empty(q.shape[:-1], dtype=torch.float32)]
        if mask is not None:
            kept.append(q.new_empty(mask.shape) if mask.dtype == torch.bool else mask)
        ctx.save_for_backward(*kept)
        return out

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("the memory trace's attention has no backward")


class _FusedAttention(TorchFunctionMode):
    """scaled_dot_product_attention as a GPU runs it, for the trace: on meta tensors PyTorch dispatches to its
    math kernel, which keeps every attention matrix for backward, where the GPU's fused kernels keep none (7B
    shape, batch 64: the math kernel's trace came out 60% above the peak measured on an H200)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            return _FusedAttentionKeeps.apply(q, k, v, mask)
        return func(*args, **kwargs)


def saved_activation_bytes(model, batch, seq_len, grad_into_embeddings=False):
    """Bytes of the tensors one training forward saves for backward (each storage counted once, parameters not at
    all). Works on meta and on real tensors alike; a 4-D mask keeps transformers from inspecting mask values,
    which meta tensors do not have."""
    device = next(model.parameters()).device
    params = set(_storages(model.parameters()))
    saved = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in params:
            saved[key] = t.untyped_storage().nbytes()
        return t

    mask = torch.ones(batch, 1, seq_len, seq_len, dtype=torch.bool, device=device).tril()
    positions = torch.arange(seq_len, device=device).expand(batch, seq_len)
    embed = model.get_input_embeddings()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _FusedAttention():
        if grad_into_embeddings:  # CoLLM slots: vectors with gradients enter at the input, so every layer keeps
            inputs = torch.zeros(batch, seq_len, embed.embedding_dim, dtype=embed.weight.dtype, device=device,
                                 requires_grad=True)
            model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, use_cache=False)
        else:
            ids = torch.zeros(batch, seq_len, dtype=torch.long, device=device)
            model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    return sum(saved.values())


def estimate_memory(model_config, *, dtype=torch.bfloat16, lora=LoraShape(), batch=8, seq_len=256, train=True,
                    processes=1, fsdp=False, grad_checkpointing=False, load_in_bits=None, slots=False):
    """MemoryEstimate per process. With FSDP the frozen weights are sharded over `processes`; `batch` is the
    per-process batch. `load_in_bits` (8 or 4): the decoder's linear layers as bitsandbytes stores them."""
    model = _meta_model(model_config, dtype)
    if lora is not None:
        model = _lora(model, lora)
    params = _storages(model.parameters())
    trained = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    trained_storages = _storages(trained)  # once: the generator below would rebuild it per parameter
    frozen_bytes = sum(b for k, b in params.items() if k not in trained_storages)
    if load_in_bits:
        linear = sum(m.weight.numel() for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) and ".layers." in name and "lora_" not in name)
        frozen_bytes -= linear * dtype.itemsize
        frozen_bytes += linear * KBIT_BYTES[load_in_bits]
    weights = frozen_bytes / (processes if fsdp else 1)
    # trained weights are kept in fp32: the weight, its gradient and AdamW's two moments
    trained_bytes = sum(p.numel() for p in trained) * 4 * 4 if train else 0.0
    full = one_layer = 0.0
    if train:
        model.train()
        full = saved_activation_bytes(model, batch, seq_len, grad_into_embeddings=slots)
        layers_with_grad = model_config.num_hidden_layers
        if not slots and lora is not None and lora.layers:
            layers_with_grad -= min(i % model_config.num_hidden_layers for i in lora.layers)
        one_layer = full / max(layers_with_grad, 1)
    activations = full
    transient = one_layer if train else _scoring_transient(model_config, batch, seq_len, dtype)
    if train and grad_checkpointing:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        set_checkpointing(base, True)
        activations = saved_activation_bytes(model, batch, seq_len, grad_into_embeddings=slots)
    fmt = f"{load_in_bits}-bit" if load_in_bits else str(dtype).removeprefix("torch.")
    setting = dict(params=n_params, weights_format=fmt, batch=batch, seq_len=seq_len, train=train,
                   processes=processes, fsdp=fsdp, grad_checkpointing=grad_checkpointing, slots=slots)
    return MemoryEstimate(weights / GIB, trained_bytes / GIB, activations / GIB, transient / GIB, OVERHEAD_GIB, setting)


def _scoring_transient(config, batch, seq_len, dtype):
    """Scoring keeps nothing for backward; its peak is one layer's largest buffers (the MLP's two
    intermediate-width projections and the residual stream), the last position's logits being tiny."""
    return batch * seq_len * (3 * config.intermediate_size + 4 * config.hidden_size) * dtype.itemsize


def advice(model_config, estimate, available_gib, **setting):
    """(key to set, estimate with it) for each single change that makes the run fit, cheapest first."""
    s = dict(setting)
    options = []
    if s.get("train", True) and not s.get("grad_checkpointing"):
        options.append(("run.grad_checkpointing: True", dict(s, grad_checkpointing=True)))
    if s.get("processes", 1) > 1 and not s.get("fsdp"):
        options.append(("run.fsdp: True", dict(s, fsdp=True)))
    if not s.get("load_in_bits"):
        options += [("model.load_in_8bit: True", dict(s, load_in_bits=8)),
                    ("model.load_in_4bit: True", dict(s, load_in_bits=4))]
    batch = s.get("batch", 8)
    while batch > 1:
        batch //= 2
        key = (f"run.batch_size_train: {batch} (run.global_batch_size keeps the optimizer step)" if s.get("train", True)
               else f"run.batch_size_eval: {batch}")
        options.append((key, dict(s, batch=batch)))
    found = []
    for key, changed in options:
        est = estimate_memory(model_config, **changed)
        if est.fits(available_gib):
            found.append((key, est))
    return found



def lora_shape(lora_config):
    """The LoraShape of a `model.lora_config`; None without LoRA."""
    if not lora_config.use_lora:
        return None
    return LoraShape(r=lora_config.r, target_modules=tuple(lora_config.target_modules),
                     layers=tuple(lora_config.layers_to_transform), dropout=lora_config.dropout)


def backbone_config(llama_model):
    """The transformers config of `model.llama_model` (a directory, a .gguf file or an embedded backbone): its shape
    only, no weights."""
    from transformers import AutoConfig

    from minigpt4.llm.backbone import locate

    directory, gguf_file = locate(llama_model)
    return AutoConfig.from_pretrained(directory, **({"gguf_file": gguf_file} if gguf_file else {}))


def report(model_config, available_gib, **setting):
    """The lines a GPU run prints before loading weights: the estimate against this GPU's `available_gib`, and when
    it does not fit, each single setting that would make it fit (`advice`), cheapest first."""
    est = estimate_memory(model_config, **setting)
    lines = [est.describe(available_gib)]
    if est.fits(available_gib):
        return lines
    found = advice(model_config, est, available_gib, **setting)
    if not found:
        return lines + [f"memory estimate: this will not fit in {available_gib:.1f} GiB, and no single setting makes "
                        "it fit: combine run.grad_checkpointing, model.load_in_4bit and a smaller "
                        "run.batch_size_train, or shard the weights with run.fsdp: True over more GPUs"]
    return lines + [f"memory estimate: this will not fit in {available_gib:.1f} GiB; each of these alone makes it fit:",
                    *(f"  {key} (needs ~{e.total:.1f} GiB)" for key, e in found)]
