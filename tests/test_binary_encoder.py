"""BinLLM's binary encoder (hashGNN upstream; spec §3.2)."""

import numpy as np
import torch

from minigpt4 import registry
from minigpt4.encoders.binary import BinaryEncoder, sign_ste

UPSTREAM_KEYS = {"rec_model.user_embedding.weight", "rec_model.item_embedding.weight", "proj_u.weight",
                 "proj_u.bias", "proj_i.weight", "proj_i.bias"}


def _encoder(d=32, seed=0):
    torch.manual_seed(seed)
    return BinaryEncoder(user_num=9, item_num=13, embedding_size=d)


def test_registered_and_state_dict_keys():
    assert registry.get("rec_model", "hash") is BinaryEncoder
    enc = _encoder(16)
    sd = enc.state_dict()
    assert set(sd) == UPSTREAM_KEYS
    assert sd["rec_model.user_embedding.weight"].shape == (9, 16)
    assert sd["rec_model.item_embedding.weight"].shape == (13, 16)
    assert sd["proj_u.weight"].shape == (16, 16) and sd["proj_i.bias"].shape == (16,)
    # padding rows are zero, as upstream (padding_idx=0)
    assert torch.all(sd["rec_model.user_embedding.weight"][0] == 0)
    # an upstream-format state dict loads strictly
    _encoder(16, seed=1).load_state_dict(sd)


def test_sign_of_zero_is_plus_one():
    x = torch.tensor([-2.0, -1e-30, 0.0, -0.0, 1e-30, 3.0])
    assert sign_ste(x).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


def test_straight_through_gradient_is_identity():
    x = torch.randn(5, 7, requires_grad=True)
    w = torch.randn(5, 7)
    (sign_ste(x) * w).sum().backward()
    # upstream my_sign.backward returns grad_output unchanged (no clipping, also for |x| > 1)
    torch.testing.assert_close(x.grad, w)
    y = (torch.randn(5, 7) * 10).requires_grad_()
    sign_ste(y).sum().backward()
    torch.testing.assert_close(y.grad, torch.ones_like(y))


def test_eval_score_is_dot_of_pm1_codes_from_code_bits():
    enc = _encoder()
    enc.eval()
    users = torch.tensor([0, 1, 2, 3, 8, 8])
    items = torch.tensor([0, 5, 12, 3, 1, 2])
    score = enc(users, items)
    ub, ib = enc.code_bits()
    assert ub.shape == (9, 32) and ib.shape == (13, 32) and ub.dtype == np.uint8
    pm_u, pm_i = 2 * ub.astype(np.int64) - 1, 2 * ib.astype(np.int64) - 1
    expect = (pm_u[users.numpy()] * pm_i[items.numpy()]).sum(-1)
    np.testing.assert_array_equal(score.detach().numpy(), expect.astype(np.float32))
    assert set(np.unique(score.detach().numpy() % 2)) <= {0.0}  # d even -> even integer scores
    # bits are sign(tanh(W e + b)) >= 0
    with torch.no_grad():
        z = torch.tanh(enc.proj_u(enc.rec_model.user_embedding.weight))
    np.testing.assert_array_equal(ub, (z >= 0).numpy().astype(np.uint8))


def test_zero_projection_gives_all_ones_codes():
    enc = _encoder(8)
    with torch.no_grad():
        for p in (enc.proj_u.weight, enc.proj_u.bias, enc.proj_i.weight, enc.proj_i.bias):
            p.zero_()
    ub, ib = enc.code_bits()
    assert (ub == 1).all() and (ib == 1).all()  # sign(0) = +1 -> bit 1
    enc.eval()
    assert enc(torch.tensor([1]), torch.tensor([2])).item() == 8.0


def test_beta_schedule():
    enc = _encoder()
    assert enc.beta == 0.0
    betas = []
    for epoch in range(6):
        enc.update_beta(epoch, 0.25)
        betas.append(enc.beta)
    assert betas == [0.25, 0.25, 0.5, 0.5, 0.75, 0.75]  # + step after even epochs only
    for epoch in range(6, 20):
        enc.update_beta(epoch, 0.25)
    assert enc.beta == 1.0  # clamped, never reset to 0 (upstream Amazon-trainer bug not copied)


def test_training_beta_zero_is_continuous_and_beta_one_is_binary():
    enc = _encoder()
    users, items = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    z_u, z_i = enc.continuous(users, items)
    enc.train()
    enc.beta = 0.0
    torch.testing.assert_close(enc(users, items), (z_u * z_i).sum(-1))
    enc.beta = 1.0
    binary = enc(users, items)
    enc.eval()
    torch.testing.assert_close(binary, enc(users, items))
    # intermediate beta: a random mix of tanh and sign values per bit
    enc.train()
    enc.beta = 0.5
    torch.manual_seed(0)
    mixed = enc(users, items)
    assert not torch.allclose(mixed, (z_u * z_i).sum(-1)) and not torch.allclose(mixed, binary)


def test_gradient_flows_through_binary_bits():
    enc = _encoder()
    enc.train()
    enc.beta = 1.0  # fully binary: only the straight-through estimator carries a gradient
    enc(torch.tensor([1, 2]), torch.tensor([3, 4])).sum().backward()
    assert enc.proj_u.weight.grad.abs().sum() > 0
    assert enc.rec_model.item_embedding.weight.grad[3].abs().sum() > 0


def test_from_config():
    from omegaconf import OmegaConf

    enc = BinaryEncoder.from_config(OmegaConf.create({"user_num": 4, "item_num": 6, "embedding_size": 64}))
    assert enc.proj_u.weight.shape == (64, 64) and enc.rec_model.item_embedding.num_embeddings == 6
