"""Helpers shared by the tests (plain functions; the fixtures live in conftest.py)."""

from pathlib import Path

import torch

from minigpt4.config import load_config
from minigpt4.llm.recommender import LLMRecommender

ROOT = Path(__file__).resolve().parents[1]


def write_yaml(path, text):
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def model_cfg(tmp_path, llama_dir, r=4, score_type="yes", name="model.yaml", targets=("q_proj", "v_proj"), dropout=0.0):
    path = Path(tmp_path) / name
    path.write_text(f"""\
model:
  llama_model: {llama_dir}
  prompt_path: prompts/tallrec_movie.txt
  score_type: "{score_type}"
  lora_config: {{use_lora: True, r: {r}, alpha: {2 * r}, target_modules: [{", ".join(targets)}], dropout: {dropout}}}
datasets:
  synthetic:
    path: {tmp_path}/unused/
run:
  device: cpu
""")
    return load_config(path)


def make_recommender(tmp_path, llama_dir, r=4, score_type="yes", perturb_seed=None, targets=("q_proj", "v_proj"),
                     layers=None, name=None):
    """The tiny Llama with adapters; `layers`: model.lora_config.layers_to_transform (default: every layer)."""
    cfg = model_cfg(tmp_path, llama_dir, r=r, score_type=score_type, targets=targets,
                    name=name or f"model_r{r}_{score_type}_{'_'.join(targets)}.yaml")
    if layers is not None:
        cfg.model.lora_config.layers_to_transform = list(layers)
    rec = LLMRecommender.from_config(cfg.model)
    if perturb_seed is not None:  # lora_B starts at zero: give the adapters a visible effect
        g = torch.Generator().manual_seed(perturb_seed)
        with torch.no_grad():
            for name, p in rec.llm.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return rec.eval()


def encode(tokenizer, texts):
    """Unpadded id lists, BOS first, as batching.TokenizedSplit builds them."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [[tokenizer.bos_token_id] + x for x in ids]


def left_pad(seqs, pad_id):
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, width - len(s):] = torch.tensor(s)
        mask[row, width - len(s):] = 1
    return ids, mask


def slot_cfg(tmp_path, llama, rec_model="MF", k=1, extra="", name=None, users=9, items=13):
    """A config for CoLLM / prompt-tuning slots on the tiny Llama; `extra`: more `model:` lines (indented 2)."""
    path = Path(tmp_path) / (name or f"{rec_model}_{k}.yaml")
    path.write_text(f"""\
model:
  llama_model: {llama}
  prompt_path: prompts/collm_movie.txt
  rec_model: {rec_model}
  proj_token_num: {k}
  proj_mid_times: 2
  freeze_proj: False
  user_num: {users}
  item_num: {items}
  rec_config: {{embedding_size: 12, embed_size: 12, hidden_units: 12, maxlen: 4, user_num: {users}, item_num: {items}}}
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.0}}
{extra}datasets:
  synthetic:
    path: {tmp_path}/unused/
run:
  device: cpu
""")
    return load_config(path)  # the counts written out, as a run's saved config.yaml carries them


def tiny_llama_config(tokenizer, layers):
    """A tiny random Llama's shape around SmolLM2's tokenizer (hidden 32, 4 heads, MLP 64)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=2048,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)


def train_binmf(folder, data_dir, out):
    """Stage 0 on `data_dir`: a 32-bit binary encoder, one epoch, into `out`/binmf; returns its rec_model.pth."""
    from minigpt4.cli import main

    cfg = write_yaml(Path(folder) / "binmf.yaml", f"""\
model:
  rec_model: hash
  rec_config: {{embedding_size: 32}}
datasets:
  synthetic:
    path: {data_dir}
run:
  max_epoch: 1
  device: cpu
  output_dir: {out}
  job_id: binmf
""")
    main("collab", "stage 0", ["--cfg-path", str(cfg)])
    return Path(out) / "binmf" / "rec_model.pth"

