"""Shared-prefix scoring (minigpt4/shared_prefix.py, LLMRecommender.forward_shared) gives the pointwise scores:
text prompts with and without LoRA, BinLLM's code prompts, CoLLM slot prompts (MF: the user slot shared; DIN: its
user vector reads the target item, so the prefix stops before it), a user's candidates cut across batches, and
prompts of different lengths under left padding. fp32, within 1e-4."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import make_recommender, slot_cfg
from minigpt4.batching import TokenizedSplit
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.prompting import build_prompts, load_prompt
from minigpt4.shared_prefix import SharedPrefixBatches, common_prefix, suffix_runs
from minigpt4.text_codes import CodeTable

TITLES = ["Heat (1995)", "Casino (1995)", "Toy Story (1995)", "Star Trek: The Motion Picture (1979)",
          "Patriot, The (2000)", "Superman II (1980)", "American Beauty (1999)", "Fargo (1996)", "Alien (1979)"]


def candidate_rows(users=3, k=6, seed=0):
    """`users` users, each with a liked history and k candidate items (one positive first)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, users + 1):
        his = rng.choice(np.arange(1, 10), size=u + 1, replace=False)
        items = rng.choice(np.arange(1, 10), size=k, replace=False)
        for n, i in enumerate(items):
            rows.append({"uid": u, "iid": int(i), "label": int(n == 0), "his": [int(h) for h in his],
                         "his_title": [TITLES[h - 1] for h in his], "title": TITLES[i - 1]})
    return pd.DataFrame(rows)


def groups_of(rows):
    return [np.flatnonzero(rows["uid"].to_numpy() == u) for u in rows["uid"].unique()]


def pointwise(rec, split):
    with torch.no_grad():
        out = np.zeros(len(split))
        for pos, batch in split.eval_batches(len(split)):
            batch.pop("labels")
            out[pos] = rec(**batch).numpy()
    return out


def shared(rec, split, groups, batch_size):
    batches = SharedPrefixBatches(split, groups, rec.shared_slots())
    out = np.full(len(split), np.nan)
    runs = 0
    with torch.no_grad():
        for pos, batch in batches.batches(batch_size):
            batch.pop("labels")
            runs = max(runs, len(batch["runs"]) - 1)
            out[pos] = rec.forward_shared(**batch).numpy()
    batches.most_runs = runs
    batches.split_groups = len(list(batches.pieces(batch_size))) > len(batches.groups)
    return out, batches


def test_common_prefix_stops_before_the_shortest_end_and_unshared_slots():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6]]) == 3
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # the shorter keeps one token to score
    assert common_prefix([[7], [7, 8]]) == 0
    assert common_prefix([[1, -1, 2, 5], [1, -1, 2, 6]]) == 1  # slot -1 not shared
    assert common_prefix([[1, -1, 2, 5], [1, -1, 2, 6]], shared_slots=(-1,)) == 3
    assert common_prefix([[1, -2, 5], [1, -2, 6]], shared_slots=(-1,)) == 1  # an item slot never is


def test_a_batch_holds_the_tokens_of_batch_size_prompts():
    from types import SimpleNamespace

    lengths = np.array([100, 102, 101, 103] * 3)  # 3 users x 4 candidates, prefix 95: suffixes of 5-8 tokens
    ids = [list(range(95)) + [1000 + i] * (n - 95) for i, n in enumerate(lengths)]
    n = len(lengths)
    split = SimpleNamespace(input_ids=ids, lengths=lengths, pad_id=0, labels=np.zeros(n, int), uids=np.zeros(n, int),
                            iids=np.arange(n), his=None)
    batches = SharedPrefixBatches(split, [np.arange(4), np.arange(4, 8), np.arange(8, 12)])
    assert batches.prefix_len.tolist() == [95, 95, 95]
    assert batches.budget(2) == pytest.approx(2 * lengths.mean())
    # a group costs 95 + 5 + 7 + 6 + 8 = 121 tokens: whole within the tokens of 2 prompts (203)
    assert [len(p) for _, p, _ in batches.pieces(2)] == [4, 4, 4]
    assert [c for *_, c in batches.pieces(2)] == [121, 121, 121]
    assert [len(pos) for pos, _ in batches.batches(2)] == [4, 4, 4]  # 242 > 203: a group a batch
    assert [len(pos) for pos, _ in batches.batches(3)] == [8, 4]  # 242 <= 304.5: two groups a batch
    cut = [len(p) for _, p, _ in batches.pieces(1)]  # 121 > 101.5: each group in pieces, each with its prefix
    assert sum(cut) == 12 and len(cut) > 3


def test_suffix_runs_bound_the_padding():
    assert suffix_runs([5, 5, 5, 5]) == [0, 4]
    assert suffix_runs([2, 2, 10]) == [0, 2, 3]
    lengths = [3, 4, 4, 5, 9, 9, 10, 20]
    for waste in (0.05, 0.1, 0.5):
        bounds = suffix_runs(lengths, waste)
        assert bounds[0] == 0 and bounds[-1] == len(lengths)
        for a, b in zip(bounds[:-1], bounds[1:]):
            part = lengths[a:b]
            assert max(part) * len(part) <= (1 + waste) * sum(part)
    assert len(suffix_runs(lengths, 10.0)) == 2  # a large allowance: one pass


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("batch_size", [64, 1])  # the tokens of 1 prompt: a user's candidates span batches
def test_text_prompts_score_as_pointwise(tmp_path, tiny_llama, lora, batch_size):
    rec = make_recommender(tmp_path, tiny_llama, perturb_seed=1 if lora else None)
    if not lora:
        rec.llm.disable_adapter_layers()
    rows = candidate_rows()
    split = TokenizedSplit(rec.tokenizer, build_prompts(rows, load_prompt("prompts/tallrec_movie.txt"), None), rows,
                           10**4)
    want = pointwise(rec, split)
    got, batches = shared(rec, split, groups_of(rows), batch_size)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert len(np.unique(np.round(want, 3))) > len(want) // 2  # the prompts really score differently
    if batch_size > 1:  # whole groups a batch: suffixes of several lengths, several passes over one prefix
        assert batches.most_runs > 1
    assert batches.split_groups == (batch_size == 1)
    ran, full = batches.token_counts()
    assert ran < full and (batches.prefix_len > 10).all()


def test_code_prompts_score_as_pointwise(tmp_path, tiny_llama):
    rec = make_recommender(tmp_path, tiny_llama, perturb_seed=2)
    rows = candidate_rows(users=2, k=5, seed=3)
    rng = np.random.default_rng(0)
    table = CodeTable(rng.integers(0, 2, (4, 32)), rng.integers(0, 2, (10, 32)), mode="binary")
    split = TokenizedSplit(rec.tokenizer, build_prompts(rows, load_prompt("prompts/collm_movie.txt"), table), rows,
                           10**4)
    want = pointwise(rec, split)
    got, batches = shared(rec, split, groups_of(rows), 1)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert batches.split_groups


@pytest.mark.parametrize("rec_model,shares_user_slot", [("MF", True), ("DIN", False)])
def test_slot_prompts_score_as_pointwise(tmp_path, tiny_llama, rec_model, shares_user_slot):
    cfg = slot_cfg(tmp_path, tiny_llama, rec_model, k=2, users=4, items=10)
    torch.manual_seed(0)
    rec = LLMRecommender.from_config(cfg.model, slots=True).eval()
    rows = candidate_rows(users=3, k=5, seed=4)
    prompts = build_prompts(rows, load_prompt("prompts/collm_movie.txt"), None, True)
    split = TokenizedSplit(rec.tokenizer, prompts, rows, 10**4, slot_tokens=2, history_len=4)
    want = pointwise(rec, split)
    got, batches = shared(rec, split, groups_of(rows), 1)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert batches.split_groups
    user_slot = [int(np.flatnonzero(np.asarray(split.input_ids[g[0]]) == -1)[0]) for g in batches.groups]
    assert ((batches.prefix_len > user_slot) == shares_user_slot).all()


def _gemma3(tokenizer, sliding_window):
    """A tiny random Gemma-3 (the embedded gemma3-270m's architecture: q/k norms, sliding-window layers, its own
    attention scale)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, intermediate_size=64, max_position_embeddings=512,
                              sliding_window=sliding_window, layer_types=["sliding_attention", "full_attention"],
                              query_pre_attn_scalar=8, bos_token_id=tokenizer.bos_token_id,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("path", ["cascade", "cache"])
def test_both_suffix_attention_paths_score_as_pointwise(tmp_path, tiny_llama, monkeypatch, path):
    """Cascade attention (one copy of each prefix, two softmaxes merged) where it runs, the key/value cache where
    it does not (a GPU, a sliding window shorter than the prompts); both with a user's candidates spread over
    several passes and several users a pass."""
    from minigpt4.llm import cascade_attention

    used = []
    real = cascade_attention.cascade_attention

    def spy(*args, **kwargs):
        used.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cascade_attention, "cascade_attention", spy)
    if path == "cache":
        monkeypatch.setattr(cascade_attention, "available", lambda *a: False)
    rec = make_recommender(tmp_path, tiny_llama, perturb_seed=5)
    rows = candidate_rows(users=4, k=6, seed=7)
    split = TokenizedSplit(rec.tokenizer, build_prompts(rows, load_prompt("prompts/tallrec_movie.txt"), None), rows,
                           10**4)
    want = pointwise(rec, split)
    got, batches = shared(rec, split, groups_of(rows), 64)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert batches.most_runs > 1 and bool(used) == (path == "cascade")
    assert rec.causal_lm.config._attn_implementation == "sdpa"  # switched back after the suffix passes


@pytest.mark.parametrize("window, cascade", [(4096, True), (16, False)])
def test_gemma3_scores_as_pointwise_with_its_sliding_window(tmp_path, tiny_llama, monkeypatch, window, cascade):
    from transformers import AutoTokenizer

    from minigpt4.llm import cascade_attention

    used = []
    real = cascade_attention.cascade_attention
    monkeypatch.setattr(cascade_attention, "cascade_attention", lambda *a, **k: used.append(1) or real(*a, **k))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama))
    rec = LLMRecommender(_gemma3(tokenizer, window), tokenizer).eval()
    rows = candidate_rows(users=3, k=5, seed=8)
    split = TokenizedSplit(tokenizer, build_prompts(rows, load_prompt("prompts/tallrec_movie.txt"), None), rows,
                           10**4)
    want = pointwise(rec, split)
    got, _ = shared(rec, split, groups_of(rows), 64)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert bool(used) == cascade  # a window shorter than the prompts: each candidate's whole prompt, pointwise


def test_a_failing_suffix_pass_restores_the_attention(tmp_path, tiny_llama, monkeypatch):
    from minigpt4.llm import cascade_attention

    def broken(*args, **kwargs):
        raise RuntimeError("broken kernel")

    monkeypatch.setattr(cascade_attention, "cascade_attention", broken)
    rec = make_recommender(tmp_path, tiny_llama)
    rows = candidate_rows(users=2, k=3)
    split = TokenizedSplit(rec.tokenizer, build_prompts(rows, load_prompt("prompts/tallrec_movie.txt"), None), rows,
                           10**4)
    with pytest.raises(RuntimeError, match="broken kernel"):
        shared(rec, split, groups_of(rows), 64)
    assert rec.causal_lm.config._attn_implementation == "sdpa"
    pointwise(rec, split)  # the model still scores as before
