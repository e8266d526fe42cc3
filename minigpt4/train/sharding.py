"""FSDP for backbones larger than one device, and the trained state as full tensors on every rank.

`run.fsdp: True` shards the recommender with PyTorch's own FSDP (`fully_shard`, "FSDP2"): one unit per decoder
layer, plus the root (embeddings, final norm, output layer, CoLLM slot weights). Each process then holds 1/N of
every weight, frozen or not, and gathers a layer's weights only while it computes that layer. It works with the
frozen-backbone + LoRA mix (parameters are sharded one by one) and on CPU with gloo. Use DDP (the default) when
the backbone fits one device: it is simpler and faster; use FSDP when it does not.

`trained_state` returns what a checkpoint holds (LoRA tensors and the slot module) as full tensors on every
rank; with FSDP that is a collective, so every rank calls it. `restore_state` puts such a state back into the
(possibly sharded) model, so the best epoch is restored in memory on every node, without a shared file system.
"""

import torch
from torch.distributed.tensor import DTensor, distribute_tensor


def shard_model(model):
    """Shard `model` (an LLMRecommender) in place over the default process group."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.causal_lm.get_decoder().layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def is_sharded(model):
    """`model` was sharded by `shard_model` (fully_shard makes it an FSDPModule)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _is_trained(model, name):
    """LoRA tensors, and the slot module's tensors except a frozen encoder's (it comes from its own file)."""
    if name.startswith("collab.encoder."):
        return not model.collab.encoder_frozen
    return "lora_" in name or name.startswith("collab.")


def trained_state(model):
    """{name: full CPU tensor} of the LoRA weights and the trained part of the slot module (with buffers)."""
    out = {}
    for name, value in sorted(model.state_dict().items()):  # sorted: the same collective order on every rank
        if _is_trained(model, name):
            full = value.full_tensor() if isinstance(value, DTensor) else value
            out[name] = full.detach().to("cpu", copy=True)
    return out


@torch.no_grad()
def restore_state(model, state):
    current = model.state_dict()
    for name in sorted(state):
        target = current[name]
        if isinstance(target, DTensor):
            mesh = target.device_mesh
            local = distribute_tensor(state[name].to(mesh.device_type), mesh, target.placements)
            target.copy_(local)
        else:
            target.copy_(state[name].to(target.device))
