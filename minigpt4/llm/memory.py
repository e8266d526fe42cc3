"""How much memory a run needs per GPU, known before any weight is loaded.

The backbone is built on PyTorch's meta device (shapes only: no weights, no compute, a 7B model in about a second)
and one training step (forward and backward) is traced there: `saved_tensors_hooks` count what autograd keeps
between forward and backward, and a dispatch mode follows every tensor the step makes until it dies, so both the
kept activations and the peak come from the real graph of this backbone, LoRA layout, batch and prompt length, not
from a rule of thumb. Where a GPU's kernels keep less than the meta device's reference ones (attention, dropout)
the trace substitutes what the GPU's keep. What it cannot see is added as a labelled assumption: the CUDA context
and allocator slack.

    est = estimate_memory(AutoConfig.from_pretrained(path), dtype=torch.bfloat16, lora=..., batch=8, seq_len=256)
    print(est.describe(available_gib=80))
"""

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from minigpt4.llm.backbone import base_model, peft_model, set_checkpointing

GIB = 2**30
OVERHEAD_GIB = 1.0  # CUDA context + allocator slack: measured as 0.6-1.2 GiB on recent cards, not computable here
KBIT_BYTES = {8: 1.0, 4: 0.5 + 0.0625}  # bitsandbytes int8; NF4 + one fp32 absmax per 64 weights


@dataclass(frozen=True)
class LoraShape:
    r: int = 8
    target_modules: tuple = ("q_proj", "v_proj")
    layers: tuple = ()  # absolute or negative layer indices; empty = every layer
    dropout: float = 0.05  # > 0 keeps each adapted projection's dropped-out input for backward
    trained: bool = True  # False: frozen (model.freeze_lora, CoLLM's stage 2): stored, not trained


@dataclass(frozen=True)
class MemoryEstimate:
    """GiB per process. `activations` is what autograd keeps between forward and backward (0 when scoring);
    `transient` what the step holds at its peak beyond that: backward's gradients, with checkpointing the layer it
    recomputes, with FSDP the full weights it gathers; when scoring, the forward's peak."""
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
    model = peft_model(model, config)
    if not lora.trained:  # as LLMRecommender.from_config freezes it
        model.requires_grad_(False)
    return model


def _storages(tensors):
    return {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}


class _FusedAttentionKeeps(torch.autograd.Function):
    """Keeps for backward what a fused attention kernel keeps (flash, memory-efficient, cuDNN): queries, keys,
    values, the output, each row's logsumexp and the mask, which a boolean mask enters as an additive one in the
    queries' dtype, made anew in every layer. Its backward makes the three gradients, as the kernels' do. Only
    traced for its memory: no value is computed."""

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
        q, k, v = ctx.saved_tensors[:3]
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), None


class _FusedDropoutKeeps(torch.autograd.Function):
    """Keeps for backward what CUDA's fused dropout kernel keeps: a one-byte mask. On the CPU, and so on the meta
    device, PyTorch's dropout keeps its noise in the input's dtype instead (four bytes for LoRA's fp32 input). Only
    traced for its memory: no value is computed."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.new_empty(x.shape, dtype=torch.bool))
        return x.new_empty(x.shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.new_empty(grad.shape)


class _AsARunComputes(TorchFunctionMode):
    """The forward as a training run on `device_type` computes it, for the trace.
    - scaled_dot_product_attention keeps what a fused kernel keeps: on meta tensors PyTorch dispatches to its math
      kernel, which keeps every attention matrix for backward, where the GPU's fused kernels keep none (7B shape,
      batch 64: the math kernel's trace came out 60% above the peak measured on an H200).
    - With bf16 weights a run computes under bf16 autocast (precision.py), so a linear layer with an fp32 operand
      (LoRA's, after peft casts its input up) keeps bf16 copies, as autocast does; autocast does nothing on meta.
    - On a GPU, dropout (LoRA's) keeps a one-byte mask (`_FusedDropoutKeeps`)."""

    def __init__(self, autocast_bf16, device_type):
        super().__init__()
        self.autocast_bf16 = autocast_bf16
        self.device_type = device_type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            return _FusedAttentionKeeps.apply(q, k, v, mask)
        if func is F.dropout and self.device_type == "cuda":
            p = args[1] if len(args) > 1 else kwargs.get("p", 0.5)
            training = args[2] if len(args) > 2 else kwargs.get("training", True)
            if training and 0 < p < 1 and args[0].requires_grad:
                return _FusedDropoutKeeps.apply(args[0])
        if func is F.linear and self.autocast_bf16:
            args, kwargs = [_to_bf16(a) for a in args], {k: _to_bf16(a) for k, a in kwargs.items()}
        return func(*args, **kwargs)


def _to_bf16(a):
    return a.to(torch.bfloat16) if isinstance(a, torch.Tensor) and a.dtype == torch.float32 else a


class _LiveBytes(TorchDispatchMode):
    """The bytes of the storages that ops make while it is active, now and at their peak: a storage counts once
    however many views share it, and until its last view dies; storages made before (`known`: weights, inputs) do
    not count. On real CPU tensors it agrees with the allocator's own events (tests/test_memory.py); on meta
    tensors, which have no allocator, it is the only measure."""

    def __init__(self, known):
        super().__init__()
        self.known, self.live, self.now, self.peak = set(known), {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):  # what aten ops return
            if isinstance(t, torch.Tensor):
                self._follow(t)
        return out

    def _follow(self, t):
        key = t.untyped_storage()._cdata
        if key in self.known:
            return
        if key not in self.live:
            self.live[key] = [t.untyped_storage().nbytes(), 0]
            self.now += self.live[key][0]
            self.peak = max(self.peak, self.now)
        self.live[key][1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key):
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[key]


@dataclass(frozen=True)
class StepTrace:
    kept: int  # bytes autograd keeps between forward and backward
    peak: int  # the most bytes the step's tensors held at once, the kept ones included


def trace_step(model, batch, seq_len, grad=True, backward=True, grad_into_embeddings=False, device_type="cuda"):
    """StepTrace of one step on `device_type` as LLMRecommender runs it (the decoder, its last position through
    two rows of the output head in fp32): a forward with gradients and its backward, the forward alone
    (`backward=False`), or a scoring forward (`grad=False`). Works on meta and on real tensors alike; a 4-D mask
    keeps transformers from inspecting mask values, which meta tensors do not have. Not with gradient
    checkpointing's backward: its recomputation runs outside the trace's substitutions (`_AsARunComputes`)."""
    device = next(model.parameters()).device
    base = base_model(model)
    decoder, head = base.get_decoder(), base.get_output_embeddings().weight[:2]
    embed = base.get_input_embeddings()
    mask = torch.ones(batch, 1, seq_len, seq_len, dtype=torch.bool, device=device).tril()
    positions = torch.arange(seq_len, device=device).expand(batch, seq_len)
    if grad_into_embeddings:  # CoLLM slots: vectors with gradients enter at the input, so every layer keeps
        tokens = {"inputs_embeds": torch.zeros(batch, seq_len, embed.embedding_dim, dtype=embed.weight.dtype,
                                               device=device, requires_grad=grad)}
    else:
        tokens = {"input_ids": torch.zeros(batch, seq_len, dtype=torch.long, device=device)}
    known = _storages([*model.parameters(), *model.buffers(), head, mask, positions, *tokens.values()])
    kept = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in known:
            kept[key] = t.untyped_storage().nbytes()
        return t

    autocast = embed.weight.dtype == torch.bfloat16
    with _LiveBytes(known) as live, _AsARunComputes(autocast, device_type), torch.set_grad_enabled(grad):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            hidden = decoder(**tokens, attention_mask=mask, position_ids=positions, use_cache=False)
            score = hidden.last_hidden_state[:, -1].float() @ head.float().T
            del hidden
        if grad and backward:
            score.sum().backward()
        del score
    return StepTrace(sum(kept.values()), live.peak)


def estimate_memory(model_config, *, dtype=torch.bfloat16, lora=LoraShape(), batch=8, seq_len=256, train=True,
                    processes=1, fsdp=False, grad_checkpointing=False, load_in_bits=None, slots=False,
                    device_type="cuda"):
    """MemoryEstimate per process. With FSDP the frozen weights are sharded over `processes`; `batch` is the
    per-process batch. `load_in_bits` (8 or 4): the decoder's linear layers as bitsandbytes stores them.
    `device_type`: whose kernels the trace follows where they keep different tensors (dropout; "cpu" to compare
    with a CPU run)."""
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
    if train:
        model.train()
        step = trace_step(model, batch, seq_len, grad_into_embeddings=slots, device_type=device_type)
        activations, transient = step.kept, step.peak - step.kept  # transient: backward's working set
        if grad_checkpointing:
            set_checkpointing(base_model(model), True)
            activations = trace_step(model, batch, seq_len, backward=False, grad_into_embeddings=slots,
                                     device_type=device_type).kept
            # backward recomputes one layer at a time, which then keeps what it kept in the plain step
            layers_with_grad = model_config.num_hidden_layers
            if not slots and lora is not None and lora.layers:
                layers_with_grad -= min(i % model_config.num_hidden_layers for i in lora.layers)
            transient += step.kept / max(layers_with_grad, 1)
    else:
        model.eval()
        activations, transient = 0, trace_step(model, batch, seq_len, grad=False, device_type=device_type).peak
    if fsdp and processes > 1:
        root, layer = _fsdp_unit_bytes(model)
        # FSDP gathers a unit's full weights while it computes. During the step: the root's, and a layer's with the
        # next one's gathered meanwhile (with checkpointing one more, the recomputed layer's), beside the
        # activations. At its start, before any activation exists: the root's gather, which briefly holds them
        # twice (the all-gather's output and the weights copied out of it), and the first layers'. Measured with 2
        # CPU processes (gloo; tests/test_memory.py); a GPU, whose gathers overlap compute, may hold one more layer.
        during = root + (3 if grad_checkpointing and train else 2) * layer
        transient += max(during, 2 * root + 2 * layer - activations - transient)
    fmt = f"{load_in_bits}-bit" if load_in_bits else str(dtype).removeprefix("torch.")
    setting = dict(params=n_params, weights_format=fmt, batch=batch, seq_len=seq_len, train=train,
                   processes=processes, fsdp=fsdp, grad_checkpointing=grad_checkpointing, slots=slots)
    return MemoryEstimate(weights / GIB, trained_bytes / GIB, activations / GIB, transient / GIB, OVERHEAD_GIB, setting)


def _fsdp_unit_bytes(model):
    """(root, largest layer): bytes of the full weights of FSDP's units (minigpt4/train/sharding.py: one per decoder
    layer, and the root: embeddings, final norm, output head)."""
    layer, root = {}, {}
    for name, p in model.named_parameters():
        if ".layers." in name:
            key = name.split(".layers.")[1].split(".")[0]
            layer[key] = layer.get(key, 0) + p.untyped_storage().nbytes()
        else:
            root[p.untyped_storage()._cdata] = p.untyped_storage().nbytes()
    return sum(root.values()), max(layer.values(), default=0)


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



def lora_shape(lora_config, trained=True):
    """The LoraShape of a `model.lora_config`; None without LoRA. trained: False under `model.freeze_lora`."""
    if not lora_config.use_lora:
        return None
    return LoraShape(r=lora_config.r, target_modules=tuple(lora_config.target_modules),
                     layers=tuple(lora_config.layers_to_transform), dropout=lora_config.dropout, trained=trained)


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
