"""The Yes/No scorer on a tiny random Llama (spec §2.3, §2.6)."""

import pandas as pd
import pytest
import torch

from helpers import encode, left_pad, make_recommender
from minigpt4.batching import TokenizedSplit
from minigpt4.config import ConfigError
from minigpt4.llm.backbone import answer_token_ids, locate

SHORT = '#Question: A user liked "Heat (1995)". Would they enjoy "Casino (1995)"? \\n#Answer:'
LONG = ('#Question: A user has given high ratings to the following movies: "American Beauty (1999)", '
        '"Superman II (1980)", "Patriot, The (2000)". Leverage the information to predict whether the user '
        'would enjoy the movie titled "Star Trek: The Motion Picture (1979)"? Answer with "Yes" or "No". \\n#Answer:')


@pytest.fixture(scope="module")
def rec(tiny_llama, tmp_path_factory):
    return make_recommender(tmp_path_factory.mktemp("rec"), tiny_llama, perturb_seed=1)


def test_answer_ids_are_single_tokens(rec):
    tok = rec.tokenizer
    assert (rec.yes_id, rec.no_id) == tuple(answer_token_ids(tok))
    assert rec.yes_id != rec.no_id
    assert tok.decode([rec.yes_id]).strip() == "Yes" and tok.decode([rec.no_id]).strip() == "No"
    # it is the token that follows the answer cue in "#Answer: Yes"
    assert tok("#Answer: Yes", add_special_tokens=False)["input_ids"][-1] == rec.yes_id


def test_answer_that_splits_is_config_error(rec):
    assert len(rec.tokenizer(" Yesplease", add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(ConfigError, match="Yesplease"):
        answer_token_ids(rec.tokenizer, answers=("Yesplease",))


@torch.no_grad()
def test_score_equals_full_forward_logit(rec):
    (seq,) = encode(rec.tokenizer, [LONG])
    ids = torch.tensor([seq])
    mask = torch.ones_like(ids)
    logits = rec.llm(input_ids=ids).logits  # HF/peft's normal forward, full vocabulary
    assert logits.shape[-1] == len(rec.tokenizer)
    rec.score_type = "yes"
    torch.testing.assert_close(rec(ids, mask), logits[:, -1, rec.yes_id], atol=1e-5, rtol=1e-5)
    rec.score_type = "yes_minus_no"
    try:
        torch.testing.assert_close(rec(ids, mask), logits[:, -1, rec.yes_id] - logits[:, -1, rec.no_id],
                                   atol=1e-5, rtol=1e-5)
    finally:
        rec.score_type = "yes"
    # LoRA is in the path: without the adapters the logit differs
    with rec.llm.disable_adapter():
        assert not torch.allclose(rec(ids, mask), logits[:, -1, rec.yes_id], atol=1e-3)


@torch.no_grad()
def test_score_does_not_depend_on_left_padding(rec):
    short, long = encode(rec.tokenizer, [SHORT, LONG])
    assert len(long) > len(short) + 10
    alone_short = rec(torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
    alone_long = rec(torch.tensor([long]), torch.ones(1, len(long), dtype=torch.long))
    ids, mask = left_pad([short, long], rec.tokenizer.pad_token_id)
    both = rec(ids, mask)
    assert both.shape == (2,) and both.dtype == torch.float32
    torch.testing.assert_close(both[0], alone_short[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(both[1], alone_long[0], atol=1e-4, rtol=0)
    assert abs(both[0] - both[1]) > 1e-3  # different prompts really score differently


@torch.no_grad()
def test_tokenized_split_batches(rec):
    rows = pd.DataFrame({"uid": [1, 2, 3], "iid": [4, 5, 6], "label": [1, 0, 1]}, index=[10, 11, 12])
    split = TokenizedSplit(rec.tokenizer, [LONG, SHORT, LONG + " x"], rows, max_len=1024, name="t")
    assert split.input_ids[1][0] == rec.tokenizer.bos_token_id
    batch = split.batch([0, 1])
    assert batch["input_ids"].shape[1] == split.lengths[0]
    assert batch["attention_mask"][1].sum() == split.lengths[1]
    assert (batch["input_ids"][1, : split.lengths[0] - split.lengths[1]] == rec.tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [1, 0]
    # eval batches: every row once, shortest first
    seen = [list(pos) for pos, _ in split.eval_batches(2)]
    assert seen == [[1, 0], [2]]
    scores = torch.cat([rec(b["input_ids"], b["attention_mask"]) for _, b in split.eval_batches(2)])
    alone = rec(torch.tensor([split.input_ids[1]]), torch.ones(1, split.lengths[1], dtype=torch.long))
    torch.testing.assert_close(scores[0], alone[0], atol=1e-4, rtol=0)
    with pytest.raises(ConfigError, match=r"row 10 has \d+ tokens > model.max_txt_len=8"):
        TokenizedSplit(rec.tokenizer, [LONG, SHORT, LONG], rows, max_len=8, name="t")


@pytest.mark.parametrize("pad_multiple", [1, 16])
def test_a_batch_is_its_prompts_left_padded(rec, pad_multiple):
    """TokenizedSplit.batch gathers from one flat array: each row is its prompt's ids, right-aligned, slot marks
    (negative ids) included, pads and a zero mask before them, in the order asked for (repeats allowed)."""
    texts = [SHORT, LONG, "#Question: A user with feature <UserID> liked Up. \\n#Answer:", LONG + " x", SHORT[:20]]
    rows = pd.DataFrame({"uid": range(5), "iid": range(10, 15), "label": [1, 0, 1, 0, 1]})
    split = TokenizedSplit(rec.tokenizer, texts, rows, max_len=1024, slot_tokens=2)
    assert min(split.input_ids[2]) < 0  # the user's two slot marks
    for order in ([0, 1, 2, 3, 4], [4, 2], [3, 3, 0], [2]):
        batch = split.batch(order, pad_multiple)
        ids, mask = left_pad([split.input_ids[i] for i in order], rec.tokenizer.pad_token_id)
        extra = -ids.shape[1] % pad_multiple
        ids = torch.cat([torch.full((len(order), extra), rec.tokenizer.pad_token_id), ids], 1)
        mask = torch.cat([torch.zeros((len(order), extra), dtype=torch.long), mask], 1)
        assert torch.equal(batch["input_ids"], ids) and torch.equal(batch["attention_mask"], mask)
        assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long
        assert batch["users"].tolist() == order and batch["labels"].tolist() == rows["label"][order].tolist()


def test_loss_is_bce_on_the_score(rec):
    scores = torch.tensor([2.0, -1.0, 0.5])
    labels = torch.tensor([1, 0, 0])
    expect = -(torch.log(torch.sigmoid(scores[0])) + torch.log(1 - torch.sigmoid(scores[1]))
               + torch.log(1 - torch.sigmoid(scores[2]))) / 3
    torch.testing.assert_close(rec.loss(scores, labels), expect)


def test_only_lora_trains(rec):
    trainable = [n for n, p in rec.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("q_proj" in n for n in trainable) and any("v_proj" in n for n in trainable)


def test_locate_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.llama_model"):
        locate(str(tmp_path / "no_such_model"))
    with pytest.raises(ConfigError, match="config.json"):
        locate(str(tmp_path))  # a directory without config.json


def test_bf16_backbone_keeps_fp32_adapters_and_scores(tiny_llama, tmp_path, rec):
    """The CUDA/AMP path loads the backbone in bf16; adapters must stay fp32 (AdamW on bf16 LoRA loses updates)."""
    from helpers import model_cfg
    from minigpt4.llm.recommender import LLMRecommender

    r16 = LLMRecommender.from_config(model_cfg(tmp_path, tiny_llama).model, dtype=torch.bfloat16).eval()
    r32 = LLMRecommender.from_config(model_cfg(tmp_path, tiny_llama).model).eval()
    assert {p.dtype for n, p in r16.named_parameters() if "lora_" in n} == {torch.float32}
    assert {p.dtype for n, p in r16.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    ids, mask = left_pad(encode(rec.tokenizer, [SHORT, LONG]), rec.tokenizer.pad_token_id)
    with torch.no_grad():
        s16, s32 = r16(ids, mask), r32(ids, mask)
    assert s16.dtype == torch.float32
    torch.testing.assert_close(s16, s32, atol=0.1, rtol=0.05)
    # The answer head runs in fp32 on the bf16 hidden state: a bf16 head would round logits near 13 to 1/16.
    r16.score_type = "yes_minus_no"
    with torch.no_grad():
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        decoder = r16.causal_lm.get_decoder()
        hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
        rows = r16.causal_lm.get_output_embeddings().weight[[r16.yes_id, r16.no_id]].float()
        want = hidden.float() @ rows.T
        torch.testing.assert_close(r16(ids, mask), want[:, 0] - want[:, 1], atol=1e-5, rtol=1e-6)
        # and so under bf16 autocast, the context every bf16 run scores and trains in (Precision.autocast)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
            got = r16(ids, mask)
        want = hidden.float() @ rows.T
        torch.testing.assert_close(got, want[:, 0] - want[:, 1], atol=1e-5, rtol=1e-6)


def _lora_cfg(layers, r=4):
    from omegaconf import OmegaConf

    return OmegaConf.create({"r": r, "alpha": 2 * r, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
                             "layers_to_transform": layers})


def test_layers_to_transform_counts_from_the_top(tiny_llama):
    from minigpt4.llm.backbone import add_lora, load_backbone

    base, _ = load_backbone(str(tiny_llama))
    n = base.config.num_hidden_layers
    model = add_lora(base, _lora_cfg([-1]))
    adapted = {int(name.split("layers.")[1].split(".")[0]) for name, _ in model.named_parameters() if "lora_" in name}
    assert adapted == {n - 1}


def test_layers_to_transform_out_of_range_is_config_error(tiny_llama):
    from minigpt4.config import ConfigError
    from minigpt4.llm.backbone import add_lora, load_backbone

    base, _ = load_backbone(str(tiny_llama))
    with pytest.raises(ConfigError, match="layers_to_transform"):
        add_lora(base, _lora_cfg([base.config.num_hidden_layers]))


def test_backbone_uses_pytorch_sdpa_attention(tiny_llama):
    from minigpt4.llm.backbone import load_backbone

    model, _ = load_backbone(str(tiny_llama))
    assert model.config._attn_implementation == "sdpa"


def test_forward_leaves_cudnn_attention_out(rec):
    """cuDNN's fused attention returns NaN gradients for some left-padded batch widths on H100/H200 (the GPU
    check's probe): the scorer's forward runs with it switched off, and switches it back on after."""
    seen = []
    attention = rec.causal_lm.model.layers[0].self_attn
    hook = attention.register_forward_pre_hook(lambda *_: seen.append(torch.backends.cuda.cudnn_sdp_enabled()))
    try:
        short, long = encode(rec.tokenizer, [SHORT, LONG])
        ids, mask = left_pad([short, long], rec.tokenizer.pad_token_id)
        assert torch.backends.cuda.cudnn_sdp_enabled()
        rec(ids, mask).sum().backward()
    finally:
        hook.remove()
        rec.zero_grad(set_to_none=True)
    assert seen == [False]
    assert torch.backends.cuda.cudnn_sdp_enabled()


# ------------------------------------------------------------------------------- final-logit scaling / soft-capping
# Backbones whose forward transforms lm_head's output: the score must equal the forward's logits all the same.
# (config class, model class, the transform's key); the values are small so the transform clearly matters.
FINAL_LOGIT_MODELS = {
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 0.5, "head_dim": 8}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"final_logit_softcapping": 0.5, "head_dim": 8}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.25}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}),
    "hyperclovax": ("HyperCLOVAXConfig", "HyperCLOVAXForCausalLM", {"logits_scaling": 3.0}),
}


def _tiny_causal_lm(config_cls, model_cls, tokenizer, **extra):
    import transformers

    config = getattr(transformers, config_cls)(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():  # as the tiny Llama: logits of a few units, where the transforms are far from identity
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama))


@pytest.mark.parametrize("kind", list(FINAL_LOGIT_MODELS))
@torch.no_grad()
def test_score_applies_the_backbones_final_logit_transform(kind, tiny_tokenizer):
    from minigpt4.llm.recommender import LLMRecommender

    config_cls, model_cls, extra = FINAL_LOGIT_MODELS[kind]
    model = _tiny_causal_lm(config_cls, model_cls, tiny_tokenizer, **extra)
    rec = LLMRecommender(model, tiny_tokenizer).eval()
    yes, no = rec.yes_id, rec.no_id
    short, long = encode(tiny_tokenizer, [SHORT, LONG])
    ids, mask = left_pad([short, long], tiny_tokenizer.pad_token_id)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    full = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]  # the forward's own logits
    # not vacuous: lm_head's two rows alone are off by more than the tolerance below
    hidden = model.get_decoder()(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
    raw = hidden @ model.get_output_embeddings().weight[[yes, no]].T
    assert (raw - full[:, [yes, no]]).abs().min() > 1e-2, kind
    rec.score_type = "yes"
    torch.testing.assert_close(rec(ids, mask), full[:, yes], atol=1e-5, rtol=1e-5)
    # each logit is transformed, then No is subtracted (capping the difference would differ)
    rec.score_type = "yes_minus_no"
    torch.testing.assert_close(rec(ids, mask), full[:, yes] - full[:, no], atol=1e-5, rtol=1e-5)
    # the left-padded short prompt scores as the forward scores it alone
    alone = model(input_ids=torch.tensor([short])).logits[0, -1]
    torch.testing.assert_close(rec(ids, mask)[0], alone[yes] - alone[no], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("key, value", [("logits_soft_cap", 30.0), ("output_multiplier", 0.2), ("logit_scale", 0.5),
                                        ("logits_scaling", 2.0)])
def test_backbone_with_an_unreproduced_logit_transform_is_refused(tiny_tokenizer, key, value):
    """A Llama config carrying such a key: its forward may or may not apply it, so the scorer refuses it."""
    from minigpt4.llm.recommender import LLMRecommender

    model = _tiny_causal_lm("LlamaConfig", "LlamaForCausalLM", tiny_tokenizer)
    setattr(model.config, key, value)
    with pytest.raises(ConfigError, match=f"backbone llama: config.{key}"):
        LLMRecommender(model, tiny_tokenizer)


def test_multimodal_text_config_cap_is_refused():
    from transformers import Gemma3Config

    from minigpt4.llm.recommender import final_logit_transform

    # Gemma3ForConditionalGeneration's forward ignores text_config's cap, PaliGemma's applies it: refused
    with pytest.raises(ConfigError, match="text_config.final_logit_softcapping"):
        final_logit_transform(Gemma3Config(text_config={"final_logit_softcapping": 30.0}))
    assert final_logit_transform(Gemma3Config()) == (None, None, None)


def test_embedded_gemma3_has_no_final_logit_cap():
    """The converted Gemma-3-270M config says final_logit_softcapping: null: its scores need no cap."""
    from transformers import AutoConfig

    from minigpt4.llm import embedded
    from minigpt4.llm.recommender import final_logit_transform

    directory = embedded.hf_dir(embedded.EMBEDDED["gemma3-270m"])
    if not (directory / "config.json").is_file():
        pytest.skip(f"Gemma-3-270M not converted yet ({directory})")
    config = AutoConfig.from_pretrained(str(directory))
    assert config.model_type == "gemma3_text" and config.final_logit_softcapping is None
    assert final_logit_transform(config) == (None, None, None)


def test_log_lines_are_written_around_the_progress_bars(monkeypatch, capsys):
    """Training and scoring print through tqdm.write, which clears a bar before the line and redraws it after, so
    a periodic loss line is never glued to the end of a bar."""
    from minigpt4.train import scoring

    written = []
    monkeypatch.setattr(scoring.tqdm, "write", lambda s, file=None, end="\n": written.append((s, end)))
    scoring.log("epoch", 1, "step", 100, "loss", 0.5)
    assert written == [("epoch 1 step 100 loss 0.5", "\n")]
    assert capsys.readouterr().out == ""
