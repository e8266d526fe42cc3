"""DIN against upstream CoLLM's `RecEncoder_DIN` (spec §3.5): its state dict loads strictly, its init, its math.

The reference below is written from upstream's source (zyang1580/CoLLM `minigpt4/models/rec_base_models.py`,
`Dice` L723-759, `FullyConnectedLayer` L761-797, `LocalActivationUnit` L799-826,
`AttentionSequencePoolingLayer` L828-851, `RecEncoder_DIN` L854-945), not from our module, so a drift in names,
shapes, init or math shows up here.
"""

import math

import pytest
import torch
from omegaconf import OmegaConf

from minigpt4.encoders.din import DIN
from minigpt4.encoders.factory import load_pretrained_encoder

EPS = 1e-8  # upstream Dice's BatchNorm1d epsilon


def _bn(prefix, n):
    # nn.BatchNorm1d(n) with upstream's defaults: affine and running statistics
    return {f"{prefix}.bn.weight": (n,), f"{prefix}.bn.bias": (n,), f"{prefix}.bn.running_mean": (n,),
            f"{prefix}.bn.running_var": (n,), f"{prefix}.bn.num_batches_tracked": ()}


def upstream_shapes(user_num, item_num, embedding_size):
    """Key -> shape of upstream's `RecEncoder_DIN(args).state_dict()` (hidden_units [200, 80, 1])."""
    e = embedding_size // 3
    return {
        "embed_layers.0.weight": (user_num, e), "embed_layers.1.weight": (item_num, e),
        "sequence_embed_layers.0.weight": (item_num, e),
        # LocalActivationUnit: fc1 = FullyConnectedLayer(4e, [64, 16], dice, dice_dim=3, no dropout); fc2 Linear(16, 1)
        "attn.local_att.fc1.fc.0.weight": (64, 4 * e), "attn.local_att.fc1.fc.0.bias": (64,),
        "attn.local_att.fc1.fc.1.alpha": (64, 1), **_bn("attn.local_att.fc1.fc.1", 64),  # 3-d Dice: alpha [n, 1]
        "attn.local_att.fc1.fc.2.weight": (16, 64), "attn.local_att.fc1.fc.2.bias": (16,),
        "attn.local_att.fc2.weight": (1, 16), "attn.local_att.fc2.bias": (1,),
        # fc_layer = FullyConnectedLayer(3e, [200, 80, 1], dice, dropout, dice_dim=2): Linear, Dice, Dropout, ...
        "fc_layer.fc.0.weight": (200, 3 * e), "fc_layer.fc.0.bias": (200,),
        "fc_layer.fc.1.alpha": (200,), **_bn("fc_layer.fc.1", 200),
        "fc_layer.fc.3.weight": (80, 200), "fc_layer.fc.3.bias": (80,),
        "fc_layer.fc.4.alpha": (80,), **_bn("fc_layer.fc.4", 80),
        "fc_layer.fc.6.weight": (1, 80), "fc_layer.fc.6.bias": (1,),
    }


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.5
    return state


def test_ml1m_sized_upstream_state_dict_loads_strictly(tmp_path):
    # ML-1M: user_num 839, item_num 3256, embedding_size 192 (64 per table), maxlen 10 (spec §2, §3.5)
    shapes = upstream_shapes(839, 3256, 192)
    state = random_state(shapes)
    model = DIN(839, 3256, embedding_size=192, maxlen=10, drop=0.2)
    model.load_state_dict(state, strict=True)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    # the path a CoLLM run takes: rec_config.pretrained_path holding the raw upstream file
    torch.save(state, tmp_path / "din.pt")
    cfg = OmegaConf.create({"rec_model": "DIN", "rec_config": {
        "user_num": 839, "item_num": 3256, "embedding_size": 192, "maxlen": 10, "drop": 0.2,
        "pretrained_path": str(tmp_path / "din.pt")}})
    loaded = load_pretrained_encoder(cfg)
    assert torch.equal(loaded.state_dict()["attn.local_att.fc1.fc.1.alpha"], state["attn.local_att.fc1.fc.1.alpha"])


def test_init_is_upstreams_xavier_normal_with_zero_bias():
    torch.manual_seed(0)
    model = DIN(839, 3256, embedding_size=192, maxlen=10)
    sd = model.state_dict()
    linears = [k[:-len(".weight")] for k, s in upstream_shapes(839, 3256, 192).items()
               if k.endswith(".weight") and len(s) == 2 and not k.startswith(("embed", "sequence"))]
    assert len(linears) == 6
    z = []
    for name in linears:
        w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
        assert torch.all(b == 0), name
        fan_out, fan_in = w.shape
        z.append((w / math.sqrt(2.0 / (fan_in + fan_out))).flatten())  # xavier-normal std, gain 1
    z = torch.cat(z)
    # pooled over ~72k weights: unit std and normal tails (PyTorch's default uniform init has none beyond 1.73 sd
    # and a std of 1/sqrt(3 fan_in), far from xavier's for these shapes)
    assert abs(z.std().item() - 1) < 0.03
    assert 0.035 < (z.abs() > 2).float().mean().item() < 0.056
    for name in ("embed_layers.0", "embed_layers.1", "sequence_embed_layers.0"):
        w = sd[f"{name}.weight"]
        assert abs(w.std().item() / math.sqrt(2.0 / sum(w.shape)) - 1) < 0.05, name
    # upstream's `isinstance(m, nn.Parameter)` branch never fires: Dice alpha stays zero, BatchNorm is PyTorch's
    for prefix in ("attn.local_att.fc1.fc.1", "fc_layer.fc.1", "fc_layer.fc.4"):
        assert torch.all(sd[f"{prefix}.alpha"] == 0)
        assert torch.all(sd[f"{prefix}.bn.weight"] == 1) and torch.all(sd[f"{prefix}.bn.bias"] == 0)
        assert torch.all(sd[f"{prefix}.bn.running_mean"] == 0) and torch.all(sd[f"{prefix}.bn.running_var"] == 1)


def _reference_logit(s, users, items, his, training):
    """Upstream's RecEncoder_DIN.forward by hand from a state dict, before its final Sigmoid; dropout off."""

    def bn(x, p):  # x [N, C]: BatchNorm1d over rows, batch statistics (biased variance) when training
        if training:
            mean, var = x.mean(0), x.var(0, unbiased=False)
        else:
            mean, var = s[f"{p}.bn.running_mean"], s[f"{p}.bn.running_var"]
        return (x - mean) / torch.sqrt(var + EPS) * s[f"{p}.bn.weight"] + s[f"{p}.bn.bias"]

    def dice(x, p):  # alpha * (1 - sigmoid(bn(x))) * x + sigmoid(bn(x)) * x, alpha per feature
        flat = x.reshape(-1, x.shape[-1])  # 3-d Dice: BN over batch and time per feature
        prob = torch.sigmoid(bn(flat, p)).reshape(x.shape)
        return s[f"{p}.alpha"].reshape(-1) * (1 - prob) * x + prob * x

    def linear(x, p):
        return x @ s[f"{p}.weight"].T + s[f"{p}.bias"]

    user, item = s["embed_layers.0.weight"][users], s["embed_layers.1.weight"][items]
    keys = s["sequence_embed_layers.0.weight"][his]  # [B, T, e]
    q = item[:, None, :].expand_as(keys)
    h = linear(torch.cat([q, keys, q - keys, q * keys], -1), "attn.local_att.fc1.fc.0")
    h = linear(dice(h, "attn.local_att.fc1.fc.1"), "attn.local_att.fc1.fc.2")
    score = linear(h, "attn.local_att.fc2")[..., 0].masked_fill(his == 0, 0.0)  # no softmax
    pooled = (score[..., None] * keys).sum(1)
    x = torch.cat([item, pooled, user], -1)
    x = dice(linear(x, "fc_layer.fc.0"), "fc_layer.fc.1")
    x = dice(linear(x, "fc_layer.fc.3"), "fc_layer.fc.4")
    return linear(x, "fc_layer.fc.6")[:, 0]


@pytest.mark.parametrize("training", [False, True])
def test_forward_matches_upstream_math(training):
    state = random_state(upstream_shapes(5, 9, 6), seed=1)  # emb_dim 2
    model = DIN(5, 9, embedding_size=6, maxlen=4, drop=0.0)
    model.load_state_dict(state, strict=True)
    model.train(training)
    users = torch.tensor([1, 2, 3, 4])
    items = torch.tensor([3, 1, 8, 5])
    his = torch.tensor([[0, 0, 2, 7], [4, 5, 6, 8], [0, 0, 0, 0], [0, 1, 1, 3]])
    expect = _reference_logit(state, users, items, his, training)
    with torch.no_grad():
        got = model(users, items, his)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
    # the fused feature the CoLLM user slot gets is [item, attended history, user]
    fused = model.all_encode(users, items, his).detach()
    torch.testing.assert_close(fused[:, :2], state["embed_layers.1.weight"][items])
    torch.testing.assert_close(fused[:, 4:], state["embed_layers.0.weight"][users])
    assert torch.all(fused[2, 2:4] == 0)  # an all-padding history attends to nothing
