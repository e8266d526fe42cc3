"""k-bit loading of the frozen backbone (model.load_in_8bit / load_in_4bit, upstream's model.low_resource): refused
with a clear error before anything loads where it cannot work (no CUDA GPU, no bitsandbytes, both widths asked for)."""

import sys

import pytest
import torch

from helpers import write_yaml
from minigpt4.config import ConfigError, load_config, load_in_bits
from minigpt4.llm import backbone
from minigpt4.llm.recommender import LLMRecommender


def test_no_quantization_by_default():
    assert backbone.quantization(None, torch.bfloat16, "cpu") is None
    assert backbone.quantization(0, torch.bfloat16, "cuda") is None


@pytest.mark.parametrize("bits", [8, 4])
def test_cpu_is_refused_before_loading(bits, monkeypatch):
    monkeypatch.setattr(backbone, "locate", lambda *a: pytest.fail("loaded files before checking the device"))
    with pytest.raises(ConfigError, match=rf"model.load_in_{bits}bit[^:]*: True .* needs a CUDA GPU; this run is on "
                                          "cpu"):
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


def _config(tmp_path, llama, options=()):
    path = write_yaml(tmp_path / "kbit.yaml", f"""\
model:
  llama_model: {llama}
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.0}}
datasets:
  synthetic:
    path: {tmp_path}/unused/
run:
  device: cpu
""")
    return load_config(path, list(options))


@pytest.mark.parametrize(("options", "bits"), [((), None), (["model.load_in_8bit=True"], 8),
                                               (["model.load_in_4bit=True"], 4), (["model.low_resource=True"], 8),
                                               (["model.low_resource=True", "model.load_in_8bit=True"], 8)])
def test_bits_from_the_config(tmp_path, tiny_llama, options, bits):
    assert load_in_bits(_config(tmp_path, tiny_llama, options).model) == bits


@pytest.mark.parametrize("eight", ["load_in_8bit", "low_resource"])
def test_eight_and_four_bits_together_are_refused_when_the_config_loads(tmp_path, tiny_llama, eight):
    with pytest.raises(ConfigError, match=rf"model.{eight} and model.load_in_4bit are both True"):
        _config(tmp_path, tiny_llama, [f"model.{eight}=True", "model.load_in_4bit=True"])


@pytest.mark.parametrize(("option", "bits"), [("model.load_in_8bit", 8), ("model.load_in_4bit", 4),
                                              ("model.low_resource", 8)])
def test_the_model_built_from_a_config_on_cpu_is_refused_before_loading(tmp_path, tiny_llama, monkeypatch, option,
                                                                        bits):
    cfg = _config(tmp_path, tiny_llama, [f"{option}=True"])
    monkeypatch.setattr(backbone, "locate", lambda *a: pytest.fail("loaded files before checking the device"))
    with pytest.raises(ConfigError, match=rf"model.load_in_{bits}bit[^:]*: True .* needs a CUDA GPU; this run is on "
                                          "cpu"):
        LLMRecommender.from_config(cfg.model)
    with pytest.raises(ConfigError, match="needs a CUDA GPU; this run is on cpu"):
        LLMRecommender.from_config(cfg.model, device=torch.device("cpu"))


def test_low_resource_error_names_the_upstream_key(tmp_path, tiny_llama):
    cfg = _config(tmp_path, tiny_llama, ["model.low_resource=True"])
    with pytest.raises(ConfigError, match=r"model.load_in_8bit \(or model.low_resource\): True"):
        LLMRecommender.from_config(cfg.model)
