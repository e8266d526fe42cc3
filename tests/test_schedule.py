"""Learning-rate schedule and optimiser groups of the LLM stages (spec §4.3, §4.4)."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from minigpt4 import registry
from minigpt4.train.optim import param_groups

RUN = OmegaConf.create({"init_lr": 1e-3, "min_lr": 1e-4, "warmup_lr": 1e-5, "warmup_steps": 10,
                        "max_epoch": 4, "iters_per_epoch": 25})


def test_linear_warmup_cosine():
    lr = registry.get("lr_scheduler", "linear_warmup_cosine_lr")
    assert lr(0, RUN) == pytest.approx(1e-5)
    assert lr(5, RUN) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    warm = [lr(s, RUN) for s in range(10)]
    assert warm == sorted(warm) and max(warm) <= 1e-3
    total = 4 * 25
    assert lr(total, RUN) == pytest.approx(1e-4)
    assert lr(total + 50, RUN) == pytest.approx(1e-4)  # stays at min_lr after the end
    assert lr(total // 2, RUN) == pytest.approx(1e-4 + (1e-3 - 1e-4) * 0.5 * (1 + math.cos(math.pi / 2)))
    after = [lr(s, RUN) for s in range(10, total + 1)]
    assert all(a >= b for a, b in zip(after, after[1:]))  # global step: no restart every epoch


def test_param_groups_decay_only_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    model[2].weight.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                   id(model[2].bias)}
