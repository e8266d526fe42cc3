"""CoLLM slots and the prompt-tuning baselines on the tiny Llama (spec §2.4, §3.6, §3.7).

Slot marking in the token step, exact placement of the vectors in left-padded batches (checked against a
hand-built `inputs_embeds`), what trains in each freeze setting, soft prompt vs PersonPrompt tables, frozen
encoders kept in eval mode, and checkpoints of the slot weights.
"""

import pandas as pd
import pytest
import torch

from helpers import left_pad, slot_cfg
from minigpt4.batching import TokenizedSplit, tokenize
from minigpt4.config import ConfigError
from minigpt4.llm.collab_tokens import place_slots
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.train.checkpoint import load_checkpoint, save_checkpoint

PROMPT = ('#Question: A user liked <ItemTitleList>, feature <UserID>. Would they enjoy <TargetItemTitle> with '
          'feature <TargetItemID>? \\n#Answer:')
U, I = 9, 13


def _cfg(tmp_path, llama, rec_model="MF", k=1, extra="", name=None):
    return slot_cfg(tmp_path, llama, rec_model, k, extra, name, U, I)


def _model(tmp_path, llama, **kw):
    torch.manual_seed(0)
    rec = LLMRecommender.from_config(_cfg(tmp_path, llama, **kw).model, slots=True)
    if rec.collab.encoder is not None and hasattr(rec.collab.encoder, "set_graph"):
        from minigpt4.encoders.lightgcn import bipartite_graph

        rec.collab.encoder.set_graph(bipartite_graph([1, 2, 3], [4, 5, 6], [1, 1, 0], U, I))
    return rec.eval()


def _texts():
    return [PROMPT.replace("<ItemTitleList>", '"Heat (1995)"').replace("<TargetItemTitle>", '"Casino (1995)"'),
            PROMPT.replace("<ItemTitleList>", '"American Beauty (1999)", "Superman II (1980)", "Patriot, The (2000)"')
            .replace("<TargetItemTitle>", '"Star Trek: The Motion Picture (1979)"')]


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama))


@pytest.mark.parametrize("k", [0, 2])
def test_an_empty_split_tokenizes_to_nothing(tok, k):
    """A small test subsample can hold no warm user (ML-100K: 13% of test rows are warm, in few users); its
    test_warm is empty and must score as 0 rows, not stop the run (the tokenizer itself rejects an empty batch)."""
    with pytest.raises(Exception):
        tok([], add_special_tokens=False)
    assert tokenize(tok, [], slot_tokens=k) == []
    assert tokenize(tok, iter([]), slot_tokens=k) == []


@pytest.mark.parametrize("k", [1, 3])
def test_tokenize_marks_slots_with_negative_ids(tok, k):
    text = _texts()[0]
    (seq,) = tokenize(tok, [text], slot_tokens=k, slot_layout="contiguous")  # upstream's: test_slots_upstream.py
    assert seq[0] == tok.bos_token_id
    assert [x for x in seq if x < 0] == list(range(-1, -2 * k - 1, -1))  # user slots, then item slots
    first = seq.index(-1)
    assert seq[first:first + k] == [-(j + 1) for j in range(k)]  # a slot's k positions are adjacent
    # the text tokens are those of the text around the slots, each piece tokenised on its own
    before, rest = text.split("<UserID>")
    middle, after = rest.split("<TargetItemID>")
    pieces = [tok(p, add_special_tokens=False)["input_ids"] for p in (before, middle, after)]
    assert seq == [tok.bos_token_id] + pieces[0] + list(range(-1, -k - 1, -1)) + pieces[1] + \
        list(range(-k - 1, -2 * k - 1, -1)) + pieces[2]
    # without slots the placeholders are ordinary text
    (plain,) = tokenize(tok, [text])
    assert min(plain) >= 0


def test_tokenize_needs_no_unk_token(tok):
    """The upstream wrote `<unk>` into the text for each slot; a tokenizer without one must work here."""
    saved = tok.unk_token
    tok.unk_token = None
    try:
        assert tok.unk_token_id is None
        (seq,) = tokenize(tok, [_texts()[0]], slot_tokens=2)
    finally:
        tok.unk_token = saved
    assert sorted(x for x in seq if x < 0) == [-4, -3, -2, -1]


def test_place_slots_writes_each_vector_at_its_position():
    ids = torch.tensor([[0, 0, 5, -1, 7, -2, 8],     # left-padded row
                        [3, -1, 4, 6, 9, -2, 2]])
    embeds = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)
    slots = torch.tensor([[[100., 100, 100], [200, 200, 200]], [[300., 300, 300], [400, 400, 400]]])
    out = place_slots(embeds, ids, slots)
    assert out[0, 3].tolist() == [100] * 3 and out[0, 5].tolist() == [200] * 3
    assert out[1, 1].tolist() == [300] * 3 and out[1, 5].tolist() == [400] * 3
    text = ids >= 0
    assert torch.equal(out[text], embeds[text])
    with pytest.raises(ValueError, match="slot"):
        place_slots(embeds, ids - 5 * (ids < 0), slots)  # marks slot 6 with only 2 vectors


@torch.no_grad()
@pytest.mark.parametrize("rec_model, k", [("MF", 1), ("MF", 3), ("sasrec", 1), ("DIN", 2), ("lightgcn", 1),
                                          ("soft_prompt", 3), ("personlized_prompt", 1)])
def test_slot_embeddings_land_at_slot_positions_in_left_padded_batches(tiny_llama, tmp_path, tok, rec_model, k):
    """Every row's score in a left-padded batch equals the LM run alone on a hand-built inputs_embeds: word
    embeddings for the text and the row's own user/item vectors exactly at its slot positions."""
    rec = _model(tmp_path, tiny_llama, rec_model=rec_model, k=k)
    seqs = tokenize(tok, _texts(), slot_tokens=k)
    assert len(seqs[0]) != len(seqs[1])
    ids, mask = left_pad(seqs, tok.pad_token_id)
    users, items = torch.tensor([2, 5]), torch.tensor([7, 3])
    his = torch.tensor([[0, 0, 4, 6], [1, 2, 3, 5]])
    got = rec(ids, mask, users, items, his)
    lm = rec.causal_lm
    vectors = rec.collab(users, items, his)
    assert vectors.shape == (2, 2 * k, lm.config.hidden_size)
    for row, seq in enumerate(seqs):
        words = lm.get_input_embeddings()(torch.tensor([seq]).clamp(min=0))[0]
        slot_at = [t for t, x in enumerate(seq) if x < 0]
        manual = words.clone()
        for j, t in enumerate(slot_at):
            manual[t] = vectors[row, j]
        logits = lm(inputs_embeds=manual.unsqueeze(0)).logits[0, -1]
        assert got[row].item() == pytest.approx(logits[rec.yes_id].item(), abs=1e-4)
    # the vectors matter: other items give other scores (the soft prompt is the same for every item)
    changed = not torch.allclose(got, rec(ids, mask, users, items + 1, his), atol=1e-5)
    assert changed == (rec_model != "soft_prompt")


def test_soft_prompt_shares_tokens_personal_prompt_does_not(tiny_llama, tmp_path):
    users, items = torch.tensor([1, 2]), torch.tensor([3, 4])
    soft = _model(tmp_path, tiny_llama, rec_model="soft_prompt", k=3).collab(users, items)
    assert torch.equal(soft[0], soft[1]) and not torch.equal(soft[0, :3], soft[0, 3:])
    person = _model(tmp_path, tiny_llama, rec_model="personlized_prompt", k=1).collab(users, items)
    assert not torch.equal(person[0], person[1])
    table = _model(tmp_path, tiny_llama, rec_model="personlized_prompt", k=1).collab.table
    assert table.num_embeddings == U + I  # item i reads row U + i


def _trainable(rec):
    return {n.split(".")[0] + ("/lora" if "lora_" in n else "") for n, p in rec.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("extra, want", [
    ("  freeze_lora: True\n", {"collab"}),                                 # CoLLM stage 2: the MLP only
    ("  freeze_lora: True\n  freeze_rec: False\n", {"collab"}),            # ... and the encoder
    ("", {"collab", "llm/lora"}),                                          # soft-prompt style: LoRA + slots
])
def test_what_trains_and_gets_gradients(tiny_llama, tmp_path, tok, extra, want):
    cfg = _cfg(tmp_path, tiny_llama, extra=extra, name="freeze.yaml")
    rec = LLMRecommender.from_config(cfg.model, slots=True).train()
    assert _trainable(rec) == want
    ids, mask = left_pad(tokenize(tok, _texts(), slot_tokens=1), tok.pad_token_id)
    loss = rec.loss(rec(ids, mask, torch.tensor([1, 2]), torch.tensor([3, 4])), torch.tensor([1, 0]))
    loss.backward()
    for name, p in rec.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
        if p.requires_grad and "lora_A" not in name:  # lora_A's gradient is 0 while lora_B starts at 0
            assert p.grad.abs().sum() > 0, name
    encoder_trains = "freeze_rec: False" in extra
    assert all(p.requires_grad == encoder_trains for p in rec.collab.encoder.parameters())


def test_frozen_encoder_stays_in_eval_mode(tiny_llama, tmp_path):
    rec = _model(tmp_path, tiny_llama, rec_model="sasrec").train()
    assert rec.collab.proj.training and not rec.collab.encoder.training  # no dropout in a frozen encoder
    users, items, his = torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    torch.testing.assert_close(rec.collab(users, items, his), rec.collab(users, items, his))


def test_pretrained_encoder_is_loaded_and_misfit_is_config_error(tiny_llama, tmp_path):
    from minigpt4.encoders.mf import MF

    mf = MF(U, I, 12)
    torch.save(mf.state_dict(), tmp_path / "mf.pth")
    cfg = _cfg(tmp_path, tiny_llama, name="pre.yaml")
    cfg.model.rec_config.pretrained_path = str(tmp_path / "mf.pth")
    rec = LLMRecommender.from_config(cfg.model, slots=True)
    assert torch.equal(rec.collab.encoder.user_embedding.weight, mf.user_embedding.weight)
    torch.save(MF(U, I, 8).state_dict(), tmp_path / "mf8.pth")
    cfg.model.rec_config.pretrained_path = str(tmp_path / "mf8.pth")
    with pytest.raises(ConfigError, match="pretrained_path"):
        LLMRecommender.from_config(cfg.model, slots=True)


def test_hash_cannot_fill_slots(tiny_llama, tmp_path):
    with pytest.raises(ConfigError, match="run.mode v3"):
        LLMRecommender.from_config(_cfg(tmp_path, tiny_llama, rec_model="hash", name="h.yaml").model, slots=True)


@torch.no_grad()
def test_checkpoint_round_trip_of_slot_weights(tiny_llama, tmp_path, tok):
    rec = _model(tmp_path, tiny_llama, rec_model="DIN", k=2)
    for p in rec.collab.proj.parameters():
        p.add_(torch.randn_like(p) * 0.1)
    save_checkpoint(rec, tmp_path / "ckpt", {"mode": "slots", "rec_model": "DIN"})
    assert (tmp_path / "ckpt" / "collab_tokens.safetensors").is_file()
    fresh = _model(tmp_path, tiny_llama, rec_model="DIN", k=2)
    ids, mask = left_pad(tokenize(tok, _texts(), slot_tokens=2), tok.pad_token_id)
    args = (ids, mask, torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]))
    assert not torch.allclose(fresh(*args), rec(*args))
    load_checkpoint(fresh, tmp_path / "ckpt", {"rec_model": "DIN"})
    torch.testing.assert_close(fresh(*args), rec(*args))
    with pytest.raises(ConfigError, match="rec_model"):
        load_checkpoint(fresh, tmp_path / "ckpt", {"rec_model": "MF"})
    other = _model(tmp_path, tiny_llama, rec_model="DIN", k=1)  # another proj_token_num
    with pytest.raises(ConfigError, match="proj_token_num"):
        load_checkpoint(other, tmp_path / "ckpt", {})
    text_only = LLMRecommender.from_config(_cfg(tmp_path, tiny_llama, name="t.yaml").model)
    with pytest.raises(ConfigError, match="slots"):
        load_checkpoint(text_only, tmp_path / "ckpt", {})


def test_tokenized_split_carries_history_for_sequence_encoders(tok):
    rows = pd.DataFrame({"uid": [1, 2], "iid": [3, 4], "label": [1, 0], "his": [[0, 5, 6], [0]]})
    split = TokenizedSplit(tok, _texts(), rows, 1024, slot_tokens=1, history_len=4)
    batch = split.batch([1, 0])
    assert batch["his"].tolist() == [[0, 0, 0, 0], [0, 0, 5, 6]]
    assert batch["users"].tolist() == [2, 1] and batch["items"].tolist() == [4, 3]
    assert int((batch["input_ids"] < 0).sum()) == 4
    assert "his" not in TokenizedSplit(tok, _texts(), rows, 1024).batch([0])


def test_tokenized_split_marks_the_rows_whose_prompt_lists_liked_titles(tok):
    rows = pd.DataFrame({"uid": [1, 2], "iid": [3, 4], "label": [1, 0], "his": [[0], [0, 5]],
                         "his_title": [[""], ["", "Heat (1995)"]]})
    assert TokenizedSplit(tok, _texts(), rows, 1024).example_row() == 1
    # rows without titles (no history to show): the first row
    assert TokenizedSplit(tok, _texts(), rows[["uid", "iid", "label"]], 1024).example_row() == 0


def test_checkpoint_holds_the_encoder_only_when_it_trained(tiny_llama, tmp_path):
    from safetensors.torch import load_file

    frozen = _model(tmp_path, tiny_llama, rec_model="MF")
    save_checkpoint(frozen, tmp_path / "frozen", {})
    assert not any(k.startswith("encoder.") for k in load_file(str(tmp_path / "frozen" / "collab_tokens.safetensors")))
    cfg = _cfg(tmp_path, tiny_llama, extra="  freeze_rec: False\n", name="tuned.yaml")
    tuned = LLMRecommender.from_config(cfg.model, slots=True)
    save_checkpoint(tuned, tmp_path / "tuned", {})
    keys = load_file(str(tmp_path / "tuned" / "collab_tokens.safetensors"))
    assert "encoder.user_embedding.weight" in keys
    with pytest.raises(ConfigError, match="missing"):  # a trainable encoder must come from the checkpoint
        load_checkpoint(tuned, tmp_path / "frozen", {})
