"""Adapter checkpoints: save, reload, peft compatibility, refusal of mismatches (spec §4.6)."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from helpers import encode, left_pad, make_recommender
from minigpt4.config import ConfigError
from minigpt4.train.checkpoint import ADAPTER, META, find_checkpoint, load_checkpoint, read_meta, save_checkpoint

TEXTS = ['#Question: liked "A (1990)", "B (1991)". Enjoy "C (1992)"? \\n#Answer:',
         '#Question: liked unknown. Enjoy "Heat (1995)"? \\n#Answer:']


def _lora(rec):
    return {n: p.detach().clone() for n, p in rec.llm.named_parameters() if "lora_" in n}


@torch.no_grad()
def _scores(rec):
    ids, mask = left_pad(encode(rec.tokenizer, TEXTS), rec.tokenizer.pad_token_id)
    return rec(ids, mask)


@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    rec = make_recommender(tmp, tiny_llama, r=4, perturb_seed=3)
    path = tmp / "run" / "checkpoint_best"
    path.parent.mkdir()
    meta = {"llama_model": str(tiny_llama), "mode": "codes", "code_bits": 32, "epoch": 1}
    save_checkpoint(rec, path, meta)
    return rec, path, meta


def test_reload_restores_weights_and_scores(saved, tiny_llama, tmp_path):
    rec, path, meta = saved
    assert (path / ADAPTER).is_file() and (path / "adapter_config.json").is_file()
    assert read_meta(path) == meta
    fresh = make_recommender(tmp_path, tiny_llama, r=4)
    before = _lora(fresh)
    assert not torch.allclose(_scores(fresh), _scores(rec))
    loaded = load_checkpoint(fresh, path, {"llama_model": str(tiny_llama), "code_bits": 32})
    assert loaded == meta
    after, want = _lora(fresh), _lora(rec)
    assert set(after) == set(want) and len(want) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    for name in want:
        assert torch.equal(after[name], want[name]), name
    assert any(not torch.equal(before[n], after[n]) for n in before)
    torch.testing.assert_close(_scores(fresh), _scores(rec), atol=0, rtol=0)
    # a run directory holding checkpoint_best/ is accepted as well
    assert find_checkpoint(path.parent) == path


@torch.no_grad()
def test_saved_dir_loads_with_peft(saved, tiny_llama):
    rec, path, _ = saved
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(base, str(path)).eval()
    ids, mask = left_pad(encode(rec.tokenizer, TEXTS[:1]), rec.tokenizer.pad_token_id)
    got = peft_model(input_ids=ids, attention_mask=mask).logits[:, -1, rec.yes_id]
    torch.testing.assert_close(got, rec(ids, mask), atol=1e-5, rtol=1e-5)


def test_refuses_other_rank(saved, tiny_llama, tmp_path):
    _, path, _ = saved
    other = make_recommender(tmp_path, tiny_llama, r=8)
    with pytest.raises(ConfigError, match="model.ckpt"):
        load_checkpoint(other, path, {})


def test_refuses_other_target_modules(saved, tiny_llama, tmp_path):
    _, path, _ = saved  # adapters on q_proj and v_proj
    q_only = make_recommender(tmp_path, tiny_llama, r=4, targets=("q_proj",))
    with pytest.raises(ConfigError, match="unexpected"):
        load_checkpoint(q_only, path, {})
    q_path = tmp_path / "q_only_ckpt"
    save_checkpoint(q_only, q_path, {})
    both = make_recommender(tmp_path, tiny_llama, r=4)
    with pytest.raises(ConfigError, match="missing"):
        load_checkpoint(both, q_path, {})


def test_refuses_other_code_bits_and_backbone(saved, tiny_llama, tmp_path):
    _, path, _ = saved
    fresh = make_recommender(tmp_path, tiny_llama, r=4)
    before = _lora(fresh)
    with pytest.raises(ConfigError, match="code_bits=32.*code_bits=64"):
        load_checkpoint(fresh, path, {"code_bits": 64})
    with pytest.raises(ConfigError, match="llama_model"):
        load_checkpoint(fresh, path, {"llama_model": "smollm2"})
    after = _lora(fresh)
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing loaded


def test_missing_or_incomplete_dir(tmp_path, saved, tiny_llama):
    rec, _, _ = saved
    with pytest.raises(ConfigError, match="model.ckpt"):
        load_checkpoint(rec, tmp_path / "nowhere", {})
    half = tmp_path / "half"
    half.mkdir()
    (half / META).write_text(json.dumps({"mode": "text"}))
    with pytest.raises(ConfigError, match="model.ckpt.*adapter_model.safetensors"):
        find_checkpoint(half)


def test_save_replaces_existing_checkpoint(tiny_llama, tmp_path):
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=5)
    path = tmp_path / "checkpoint_best"
    save_checkpoint(rec, path, {"epoch": 0})
    rec2 = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=6)
    save_checkpoint(rec2, path, {"epoch": 1})
    assert read_meta(path) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dirs left
    fresh = make_recommender(tmp_path, tiny_llama, r=4)
    load_checkpoint(fresh, path, {})
    torch.testing.assert_close(_scores(fresh), _scores(rec2), atol=0, rtol=0)


def test_save_survives_leftover_from_crash(tiny_llama, tmp_path):
    """A crash between swapping in the new checkpoint and deleting the old one leaves `.checkpoint_best.old`."""
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=7)
    path = tmp_path / "checkpoint_best"
    save_checkpoint(rec, path, {"epoch": 0})
    stale = tmp_path / ".checkpoint_best.old"
    stale.mkdir()
    (stale / "x").write_text("stale")
    save_checkpoint(rec, path, {"epoch": 1})
    assert read_meta(path) == {"epoch": 1} and not stale.exists()


def test_kill_during_save_leaves_previous_checkpoint_loadable(tiny_llama, tmp_path, monkeypatch):
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=8)
    path = tmp_path / "checkpoint_best"
    save_checkpoint(rec, path, {"epoch": 0})
    expected = _scores(rec)
    newer = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=9)

    def killed(directory, **kwargs):  # the process dies half-way through writing the new adapter
        (Path(directory) / "adapter_model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(newer.llm, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(newer, path, {"epoch": 1})
    assert read_meta(path) == {"epoch": 0}
    fresh = make_recommender(tmp_path, tiny_llama, r=4)
    load_checkpoint(fresh, path, {})
    torch.testing.assert_close(_scores(fresh), expected, atol=0, rtol=0)
    # killed between the two renames: only `.checkpoint_best.old` is left, and it is found
    path.rename(tmp_path / ".checkpoint_best.old")
    assert find_checkpoint(tmp_path) == tmp_path / ".checkpoint_best.old"
