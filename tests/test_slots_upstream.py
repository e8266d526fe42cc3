"""Prompt-tuning baselines and CoLLM slots as upstream by default (issue 19, spec §2.3, §2.4, §3.6, §8).

- `model.slot_layout`: upstream wrote a slot of k positions as `".".join(["<unk>"] * k)`; `contiguous` is the
  framework's earlier layout. k = 1 is the same prompt in both.
- `model.slot_init`: upstream's soft-prompt / PersonPrompt tables are bias-free nn.Linear(rows, H * k) layers at
  PyTorch's default init; `token_scale` draws them at the backbone's token-embedding std.
- `model.add_bos`: BOS first or not.
- the shipped soft-prompt / PersonPrompt configs start where upstream's YAMLs start, at their learning rates.
"""

import math

import pytest
import torch
from torch import nn

from helpers import slot_cfg, write_yaml
from minigpt4.batching import TokenizedSplit, decode, tokenize
from minigpt4.config import ConfigError, load_config
from minigpt4.llm.collab_tokens import CollabTokens
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.prompting import load_prompt
from minigpt4.tasks import RecTask

TEXT = ('#Question: A user liked "Heat (1995)", feature <UserID>. Would they enjoy "Casino (1995)" with '
        'feature <TargetItemID>? \\n#Answer:')
U, I = 9, 13


@pytest.fixture(scope="module")
def tok(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama))


def _pieces(tok):
    before, rest = TEXT.split("<UserID>")
    middle, after = rest.split("<TargetItemID>")
    return [tok(p, add_special_tokens=False)["input_ids"] for p in (before, middle, after)]


# ------------------------------------------------------------------------------------------------------ layout
def test_upstream_layout_separates_a_slots_positions_by_dot(tok):
    dot = tok(".", add_special_tokens=False)["input_ids"]
    assert len(dot) == 1 and tok.decode(dot) == "."  # SmolLM2: "." alone is one token
    before, middle, after = _pieces(tok)
    bos = [tok.bos_token_id]
    (seq,) = tokenize(tok, [TEXT], slot_tokens=3, slot_layout="upstream")
    assert seq == bos + before + [-1, *dot, -2, *dot, -3] + middle + [-4, *dot, -5, *dot, -6] + after
    assert "feature [slot 0].[slot 1].[slot 2]. Would" in decode(tok, seq)
    (old,) = tokenize(tok, [TEXT], slot_tokens=3, slot_layout="contiguous")
    assert old == bos + before + [-1, -2, -3] + middle + [-4, -5, -6] + after
    # the default is upstream's layout
    assert tokenize(tok, [TEXT], slot_tokens=3) == [seq]


def test_one_position_per_slot_is_the_same_in_both_layouts(tok):
    before, middle, after = _pieces(tok)
    want = [[tok.bos_token_id] + before + [-1] + middle + [-2] + after]
    assert tokenize(tok, [TEXT], 1, "upstream") == want == tokenize(tok, [TEXT], 1, "contiguous")


def test_unknown_layout_is_config_error(tok):
    with pytest.raises(ConfigError, match="slot_layout"):
        tokenize(tok, [TEXT], slot_tokens=2, slot_layout="dots")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_upstream_layout_places_each_vector_at_its_slot(tiny_llama, tmp_path, tok, k):
    """With dots between a slot's positions, position j of the user slot still gets the user's token j (upstream
    filled its <unk>s in order): the model's score equals the LM on a hand-built inputs_embeds."""
    rec = _model(tmp_path, tiny_llama, "soft_prompt", k, "upstream")
    (seq,) = tokenize(tok, [TEXT], slot_tokens=k)
    ids = torch.tensor([seq])
    users, items = torch.tensor([2]), torch.tensor([7])
    with torch.no_grad():
        got = rec(ids, torch.ones_like(ids), users, items)
        lm = rec.causal_lm
        manual = lm.get_input_embeddings()(ids.clamp(min=0))[0]
        vectors = rec.collab(users, items)[0]
        slot_at = [t for t, x in enumerate(seq) if x < 0]
        assert len(slot_at) == 2 * k and all(b - a == 2 for a, b in zip(slot_at[:k - 1], slot_at[1:k]))
        for j, t in enumerate(slot_at):
            manual[t] = vectors[j]
        logit = lm(inputs_embeds=manual.unsqueeze(0)).logits[0, -1, rec.yes_id]
    assert got.item() == pytest.approx(logit.item(), abs=1e-4)


# --------------------------------------------------------------------------------------------------------- BOS
@pytest.mark.parametrize("k", [0, 3])
def test_add_bos_keeps_or_drops_the_first_id(tok, k):
    with_bos = tokenize(tok, [TEXT, TEXT + " x"], slot_tokens=k, add_bos=True)
    without = tokenize(tok, [TEXT, TEXT + " x"], slot_tokens=k, add_bos=False)
    assert tok.bos_token == "<|im_start|>"  # SmolLM2's BOS is its chat-turn marker
    for a, b in zip(with_bos, without):
        assert a[0] == tok.bos_token_id and a[1:] == b and b[0] != tok.bos_token_id


# ---------------------------------------------------------------------------------------------- token splits
def _task_cfg(tmp_path, data, **model):
    extra = "".join(f"  {key}: {value}\n" for key, value in model.items())
    return load_config(write_yaml(tmp_path / "task.yaml", f"""\
model:
  prompt_path: prompts/softprompt_movie.txt
  rec_model: soft_prompt
  proj_token_num: 3
{extra}datasets:
  synthetic:
    path: {data}
run:
  max_eval_rows: 5
"""))


@pytest.mark.parametrize("layout, bos", [("upstream", True), ("contiguous", False)])
def test_task_token_splits_follow_the_config(tmp_path, synthetic_dir, tok, layout, bos):
    cfg = _task_cfg(tmp_path, synthetic_dir, slot_layout=layout, add_bos=bos)
    task = RecTask(cfg)
    task.llm_mode = "slots"
    prompt = load_prompt(cfg.model.prompt_path)
    (split,) = task.token_splits(tok, prompt, ["test"], None).values()
    dot = tok(".", add_special_tokens=False)["input_ids"]
    user = [-1, *dot, -2, *dot, -3] if layout == "upstream" else [-1, -2, -3]
    for seq in split.input_ids:
        start = seq.index(-1)
        assert seq[start:start + len(user)] == user
        assert (seq[0] == tok.bos_token_id) == bos


def test_sample_seed_keeps_the_rows_while_run_seed_varies(tmp_path, synthetic_dir, tok):
    def test_rows(*options):
        cfg = load_config(tmp_path / "task.yaml", options)
        task = RecTask(cfg)
        task.llm_mode = "slots"
        (split,) = task.token_splits(tok, load_prompt(cfg.model.prompt_path), ["test"], None).values()
        return list(zip(split.uids, split.iids))

    _task_cfg(tmp_path, synthetic_dir)  # writes task.yaml
    by_seed = {seed: test_rows(f"run.seed={seed}") for seed in (1, 2)}
    assert by_seed[1] != by_seed[2]  # by default the sample follows run.seed
    assert test_rows("run.seed=2", "run.sample_seed=1") == by_seed[1]
    assert test_rows("run.seed=1", "run.sample_seed=1") == by_seed[1]
    with pytest.raises(ConfigError, match="run.sample_seed"):
        test_rows("run.sample_seed=-2")


def test_tokenized_split_passes_layout_and_bos(tok):
    import pandas as pd

    rows = pd.DataFrame({"uid": [1], "iid": [2], "label": [1]})
    split = TokenizedSplit(tok, [TEXT], rows, 1024, slot_tokens=2, slot_layout="contiguous", add_bos=False)
    assert split.input_ids == tokenize(tok, [TEXT], 2, "contiguous", add_bos=False)
    assert TokenizedSplit(tok, [TEXT], rows, 1024, slot_tokens=2).input_ids == tokenize(tok, [TEXT], 2)


# ------------------------------------------------------------------------------------------------------- init
def _model(tmp_path, llama, rec_model, k, slot_init):
    cfg = slot_cfg(tmp_path, llama, rec_model, k, f"  slot_init: {slot_init}\n", f"{rec_model}_{k}_{slot_init}.yaml",
                   U, I)
    torch.manual_seed(0)
    return LLMRecommender.from_config(cfg.model, slots=True).eval()


@pytest.mark.parametrize("rows, k", [(2, 3), (U + I, 1)])
def test_upstream_init_is_the_upstream_linear(rows, k):
    """Seeded alike, the table holds exactly the weights of upstream's nn.Linear(rows, H * k, bias=False),
    row r = the Linear's column r (the one-hot input r picks it)."""
    hidden = 16
    torch.manual_seed(3)
    linear = nn.Linear(rows, hidden * k, bias=False)
    torch.manual_seed(3)
    table = CollabTokens(hidden, k, table_rows=rows, init="upstream").table
    assert torch.equal(table.weight, linear.weight.T) and table.weight.requires_grad
    onehot = torch.nn.functional.one_hot(torch.tensor([1]), rows).float()
    torch.testing.assert_close(table(torch.tensor([1])), linear(onehot))


def test_unknown_init_is_config_error():
    with pytest.raises(ConfigError, match="slot_init"):
        CollabTokens(8, 1, table_rows=4, init="zeros")


@pytest.mark.parametrize("rec_model, k, rows", [("soft_prompt", 3, 2), ("personlized_prompt", 1, U + I)])
def test_slot_init_sets_the_table_scale(tiny_llama, tmp_path, rec_model, k, rows):
    upstream = _model(tmp_path, tiny_llama, rec_model, k, "upstream").collab.table.weight.detach()
    token = _model(tmp_path, tiny_llama, rec_model, k, "token_scale")
    # upstream: uniform within +-1/sqrt(rows), std 1/sqrt(3 rows) (0.41 for the soft prompt's 2 rows)
    bound = 1 / math.sqrt(rows)
    assert upstream.abs().max() <= bound
    assert upstream.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    # token_scale: the std of the backbone's token embeddings (the tiny Llama's: 0.2)
    words = token.causal_lm.get_input_embeddings().weight.std().item()
    assert token.collab.table.weight.std().item() == pytest.approx(words, rel=0.15)
    assert abs(upstream.std().item() - words) > 0.3 * words  # the two options really differ here


def test_slot_init_leaves_the_collm_mapping_alone(tiny_llama, tmp_path):
    """CoLLM's MLP was PyTorch-default in upstream already: slot_init does not touch it."""
    a = _model(tmp_path, tiny_llama, "MF", 1, "upstream").collab.proj.state_dict()
    b = _model(tmp_path, tiny_llama, "MF", 1, "token_scale").collab.proj.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a)


# ---------------------------------------------------------------------------------------------------- configs
# upstream (zyang1580/CoLLM 48042b1 train_configs/): starting point, whether LoRA trains, peak learning rate
UPSTREAM = {
    "ml1m_softprompt": ("", False, 1e-4),                                     # soft_prompt_ood.yaml
    "amazon_softprompt": ("runs/amazon/tallrec/checkpoint_best", False, 1e-2),  # soft_prompt_ood_amazon.yaml
    "ml1m_personprompt": ("", True, 1e-2),                                    # personlized_prompt_ood_cc.yaml
    "amazon_personprompt": ("", True, 1e-4),                                  # personlized_prompt_ood_cc_amazon.yaml
}


@pytest.mark.parametrize("name", list(UPSTREAM))
def test_prompt_tuning_configs_start_as_upstream(name):
    cfg = load_config(f"train_configs/{name}.yaml")
    ckpt, freeze_lora, lr = UPSTREAM[name]
    assert (cfg.model.ckpt, cfg.model.freeze_lora, cfg.run.init_lr) == (ckpt, freeze_lora, lr)
    assert (cfg.model.slot_layout, cfg.model.slot_init, cfg.model.add_bos) == ("upstream", "upstream", True)
    assert cfg.model.proj_token_num == (3 if "softprompt" in name else 1)


def test_earlier_variant_is_reachable_by_the_documented_overrides():
    header = open("train_configs/ml1m_softprompt.yaml", encoding="utf-8").read().split("model:")[0]
    options = [w for w in header.split("--options")[1].split("# python")[0].split() if w != "#"]
    assert options == ["model.ckpt=runs/ml1m/tallrec/checkpoint_best", "run.init_lr=1e-3",
                       "model.slot_layout=contiguous", "model.slot_init=token_scale"]
    cfg = load_config("train_configs/ml1m_softprompt.yaml", options)
    assert (cfg.model.ckpt, cfg.run.init_lr, cfg.model.slot_layout, cfg.model.slot_init) == (
        "runs/ml1m/tallrec/checkpoint_best", 1e-3, "contiguous", "token_scale")
