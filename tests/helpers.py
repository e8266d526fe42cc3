"""Helpers shared by the tests that need the tiny Llama."""

from pathlib import Path

import torch

from minigpt4.config import load_config
from minigpt4.llm.recommender import LLMRecommender


def model_cfg(tmp_path, llama_dir, r=4, score_type="yes", name="model.yaml", targets=("q_proj", "v_proj")):
    path = Path(tmp_path) / name
    path.write_text(f"""\
model:
  llama_model: {llama_dir}
  prompt_path: prompts/tallrec_movie.txt
  score_type: "{score_type}"
  lora_config: {{use_lora: True, r: {r}, alpha: {2 * r}, target_modules: [{", ".join(targets)}], dropout: 0.0}}
datasets:
  synthetic:
    path: {tmp_path}/unused/
run:
  device: cpu
""")
    return load_config(path)


def make_recommender(tmp_path, llama_dir, r=4, score_type="yes", perturb_seed=None, targets=("q_proj", "v_proj")):
    cfg = model_cfg(tmp_path, llama_dir, r=r, score_type=score_type, targets=targets,
                    name=f"model_r{r}_{score_type}_{'_'.join(targets)}.yaml")
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
