"""k-bit loading of the frozen backbone (model.load_in_8bit / load_in_4bit): refused with a clear error before
anything loads where it cannot work (no CUDA GPU, no bitsandbytes)."""

import sys

import pytest
import torch

from minigpt4.config import ConfigError
from minigpt4.llm import backbone


def test_no_quantization_by_default():
    assert backbone.quantization(None, torch.bfloat16, "cpu") is None
    assert backbone.quantization(0, torch.bfloat16, "cuda") is None


@pytest.mark.parametrize("bits", [8, 4])
def test_cpu_is_refused_before_loading(bits, monkeypatch):
    monkeypatch.setattr(backbone, "locate", lambda *a: pytest.fail("loaded files before checking the device"))
    with pytest.raises(ConfigError, match=rf"model.load_in_{bits}bit: True .* needs a CUDA GPU; this run is on cpu"):
        backbone.load_backbone("smollm2", load_in_bits=bits, device="cpu")


def test_missing_bitsandbytes_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails whether or not it is installed
    with pytest.raises(ConfigError, match=r"pip install bitsandbytes"):
        backbone.quantization(4, torch.bfloat16, "cuda:1")


def test_other_bit_widths_are_refused():
    with pytest.raises(ConfigError, match="8 or 4 bits"):
        backbone.quantization(2, torch.bfloat16, "cuda")


def test_settings_when_available(monkeypatch):
    pytest.importorskip("transformers").BitsAndBytesConfig  # noqa: B018
    monkeypatch.setitem(sys.modules, "bitsandbytes", type(sys)("bitsandbytes"))  # only its presence is checked here
    eight = backbone.quantization(8, torch.bfloat16, "cuda")
    four = backbone.quantization(4, torch.bfloat16, "cuda")
    assert eight.load_in_8bit and not eight.load_in_4bit
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_compute_dtype == torch.bfloat16
