"""Upstream `checkpoint_best.pth` files (spec §4.6) as `model.ckpt`: built here on the tiny Llama with upstream's
key names (BinLLM's and CoLLM's, CoLLM's alias copy of the whole LLM included), they score exactly as this
framework's checkpoint of the same weights; mismatches and files holding pickled code are refused."""

import pytest
import torch

from helpers import encode, left_pad, make_recommender, slot_cfg, train_binmf, write_yaml
from minigpt4.batching import tokenize
from minigpt4.cli import main
from minigpt4.config import ConfigError
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.train.checkpoint import find_checkpoint, load_checkpoint, read_meta, save_checkpoint
from minigpt4.train.upstream_checkpoint import check_prompt

CODE_TEXTS = ['#Question: A user with feature 01101100101001110010101101010011 has given high ratings to the '
              'following movies: "Heat (1995)". Would the user enjoy "Casino (1995)" with feature '
              '11001010011100101011010100110110? \\n#Answer:',
              '#Question: A user with feature 00000000111111110000000011111111 has given high ratings to the '
              'following movies: . Would the user enjoy "Fargo (1996)" with feature '
              '10101010101010101010101010101010? \\n#Answer:']


def _upstream_config(mode="v3", **model):
    """cfg.to_dict() of an upstream run: the keys the conversion reads."""
    m = {"arch": "mini_gpt4rec_v2", "llama_model": "/data/vicuna/weights", "prompt_path": "prompts/hash_text.txt",
         "rec_model": "hash", "freeze_rec": True, "freeze_proj": True, "freeze_lora": False, "proj_token_num": 1,
         "lora_config": {"use_lora": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"],
                         "dropout": 0.05},
         "rec_config": {"embedding_size": 32, "code_mode": "binary", "pretrained_path": "x.pth"}}
    m.update(model)
    return {"model": m, "run": {"mode": mode, "init_lr": 1e-4},
            "datasets": {"amazon_ood": {"path": "data/ml-1m/"}}}


def _save_upstream(path, state, config, epoch=3):
    """As upstream's runner writes it: state dict, optimizer, config, scaler, epoch."""
    opt = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(2)}},
           "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "weight_decay": 1e-3, "params": [0]}]}
    torch.save({"model": state, "optimizer": opt, "config": config,
                "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 3}, "epoch": epoch}, path)
    return path


def _lora(rec):
    return {n: p.detach().clone() for n, p in rec.llm.named_parameters() if "lora_" in n}


def _binllm_state(rec):
    """BinLLM's names: the peft model replaced the attribute `llama_model`; buffers are kept."""
    state = {"llama_model." + n: t for n, t in _lora(rec).items()}
    state["llama_model.base_model.model.model.rotary_emb.inv_freq"] = torch.ones(4)
    state["rec_encoder.user_embedding.weight"] = torch.zeros(3, 32)  # frozen hash encoder: upstream reloads it
    return state


@torch.no_grad()
def _scores(rec, texts=CODE_TEXTS):
    ids, mask = left_pad(encode(rec.tokenizer, texts), rec.tokenizer.pad_token_id)
    return rec(ids, mask)


def test_binllm_file_scores_as_our_checkpoint_of_the_same_weights(tiny_llama, tmp_path):
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=11)
    file = _save_upstream(tmp_path / "checkpoint_best.pth", _binllm_state(rec), _upstream_config(), epoch=7)
    ours = tmp_path / "ours"
    save_checkpoint(rec, ours, {"score_type": "yes"})
    from_file, from_ours = (make_recommender(tmp_path, tiny_llama, r=4) for _ in range(2))
    load_checkpoint(from_ours, ours, {})
    meta = load_checkpoint(from_file, str(file), {"score_type": "yes", "add_bos": True, "code_mode": "binary",
                                                  "code_bits": 32})
    torch.testing.assert_close(_scores(from_file), _scores(rec), atol=0, rtol=0)
    torch.testing.assert_close(_scores(from_file), _scores(from_ours), atol=0, rtol=0)
    assert (meta["mode"], meta["score_type"], meta["epoch"], meta["code_bits"]) == ("codes", "yes", 7, 32)
    assert meta["lora"] == {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": []}
    assert meta["upstream"]["prompt_path"] == "prompts/hash_text.txt"
    # converted once, beside the file; reused while the file is unchanged
    out = tmp_path / "checkpoint_best.pth.converted"
    assert find_checkpoint(str(file)) == out and (out / "adapter_model.safetensors").is_file()
    stamp = (out / "recommender.json").stat().st_mtime_ns
    assert find_checkpoint(str(file)) == out and (out / "recommender.json").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("rec_model, k, extra", [("MF", 1, ""), ("MF", 1, "  freeze_rec: False\n"),
                                                 ("soft_prompt", 3, "")])
@torch.no_grad()
def test_collm_file_scores_as_our_checkpoint_of_the_same_weights(tiny_llama, tmp_path, rec_model, k, extra):
    """CoLLM's names: LoRA under llama_model.<module>, the whole LLM again under llama_model_lora.*, the mapping MLP
    (or the soft prompt's one-hot Linear) under llama_proj, a trained encoder under rec_encoder."""
    cfg = slot_cfg(tmp_path, tiny_llama, rec_model, k, extra + "  slot_layout: upstream\n")
    torch.manual_seed(0)
    rec = LLMRecommender.from_config(cfg.model, slots=True).eval()
    g = torch.Generator().manual_seed(4)
    for name, p in list(rec.llm.named_parameters()) + list(rec.collab.named_parameters()):
        if "lora_" in name or not name.startswith("base_model"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    state = {}
    for name, p in rec.llm.state_dict().items():
        state["llama_model_lora." + name] = p  # the alias: every weight, frozen ones too
        if "lora_" in name:
            state["llama_model." + name.removeprefix("base_model.model.")] = p.clone()
    collab = rec.collab.state_dict()
    for name, t in collab.items():
        if name.startswith("proj."):
            state["llama_proj." + name.removeprefix("proj.")] = t
        elif name == "table.weight":
            state["llama_proj.weight"] = t.T.contiguous()
        else:
            state["rec_encoder." + name.removeprefix("encoder.")] = t
    freeze_rec = "freeze_rec: False" not in extra
    config = _upstream_config(rec_model=rec_model, prompt_path="prompts/collm_movie.txt", proj_token_num=k,
                              freeze_rec=freeze_rec, freeze_proj=False, mode="v2")
    file = _save_upstream(tmp_path / "collm.pth", state, config)
    torch.manual_seed(1)  # another initialisation: everything trained must come from the file
    fresh = LLMRecommender.from_config(cfg.model, slots=True).eval()
    if freeze_rec and rec.collab.encoder is not None:  # a frozen encoder comes from rec_config.pretrained_path
        fresh.collab.encoder.load_state_dict(rec.collab.encoder.state_dict())
    texts = ['#Question: A user liked "Heat (1995)", feature <UserID>. Would they enjoy "Casino (1995)" with '
             'feature <TargetItemID>? \\n#Answer:',
             '#Question: A user liked nothing yet, feature <UserID>. Would they enjoy "Fargo (1996)" with feature '
             '<TargetItemID>? \\n#Answer:']
    ids, mask = left_pad(tokenize(rec.tokenizer, texts, slot_tokens=k), rec.tokenizer.pad_token_id)
    args = (ids, mask, torch.tensor([2, 5]), torch.tensor([7, 3]))
    assert not torch.allclose(fresh(*args), rec(*args))
    meta = load_checkpoint(fresh, str(file), {"score_type": "yes", "rec_model": rec_model, "proj_token_num": k,
                                              "slot_layout": "upstream"})
    torch.testing.assert_close(fresh(*args), rec(*args), atol=0, rtol=0)
    assert meta["mode"] == "slots"


def test_mismatches_are_refused_naming_both_values(tiny_llama, tmp_path):
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=2)
    file = str(_save_upstream(tmp_path / "up.pth", _binllm_state(rec), _upstream_config()))
    other_rank = make_recommender(tmp_path, tiny_llama, r=8)
    with pytest.raises(ConfigError, match=r"model.lora_config.r=4, model.lora_config.alpha=8 but this run has "
                                          r"model.lora_config.r=8, model.lora_config.alpha=16"):
        load_checkpoint(other_rank, file, {})
    other_targets = make_recommender(tmp_path, tiny_llama, r=4, targets=("q_proj", "k_proj", "v_proj"))
    with pytest.raises(ConfigError, match=r"target_modules=\['q_proj', 'v_proj'\] but this run has "
                                          r"model.lora_config.target_modules=\['k_proj', 'q_proj', 'v_proj'\]"):
        load_checkpoint(other_targets, file, {})
    with pytest.raises(ConfigError, match="model.score_type='yes' but this run has model.score_type='yes_minus_no'"):
        load_checkpoint(other_rank, file, {"score_type": "yes_minus_no"})
    # the file itself inconsistent: its config says rank 8, its tensors have rank 4
    bad = _save_upstream(tmp_path / "bad.pth", _binllm_state(rec),
                         _upstream_config(lora_config={"use_lora": True, "r": 8, "alpha": 16,
                                                       "target_modules": ["q_proj", "v_proj"]}))
    with pytest.raises(ConfigError, match=r"says model.lora_config.r=8.*rank \[4\]"):
        find_checkpoint(str(bad))


class Payload:
    """Stands for any pickled object: unpickling it would import and call code."""


def test_pickled_code_and_unknown_keys_are_refused_and_nothing_is_written(tiny_llama, tmp_path):
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=2)
    torch.save({"model": _binllm_state(rec), "config": _upstream_config(), "extra": Payload()}, tmp_path / "p.pth")
    with pytest.raises(ConfigError, match="refused.*pickled Python objects"):
        find_checkpoint(str(tmp_path / "p.pth"))
    state = {**_binllm_state(rec), "classifier.weight": torch.zeros(2)}
    _save_upstream(tmp_path / "u.pth", state, _upstream_config())
    with pytest.raises(ConfigError, match=r"1 tensors of no known upstream module: \['classifier.weight'\]"):
        find_checkpoint(str(tmp_path / "u.pth"))
    assert sorted(p.name for p in tmp_path.iterdir() if "converted" in p.name) == []


def test_prompt_is_checked_against_the_upstream_one():
    trained = {"mode": "codes", "upstream": {"prompt_path": "prompts/hash_text.txt", "run_mode": "v3"}}
    check_prompt("x.pth", trained, {"mode": "codes", "prompt_path": "prompts/hash_text.txt"}, evaluate=True)
    with pytest.raises(ConfigError, match="model.prompt_path=prompts/hash_text.txt .* but this run has "
                                          "model.prompt_path=prompts/collm_amazon.txt; set model.prompt_path="
                                          "prompts/hash_text.txt"):
        check_prompt("x.pth", trained, {"mode": "codes", "prompt_path": "prompts/collm_amazon.txt"}, evaluate=True)
    with pytest.raises(ConfigError, match="run.mode=v3 .* but this run scores text prompts"):
        check_prompt("x.pth", trained, {"mode": "text", "prompt_path": "prompts/tallrec_movie.txt"}, evaluate=True)
    # a later stage may start from it in another mode (stage 1's text adapter for BinLLM's codes)
    check_prompt("x.pth", trained, {"mode": "text", "prompt_path": "prompts/tallrec_movie.txt"}, evaluate=False)
    # a prompt neither repository ships: the wording of its stand-in here (docs/DIFFERENCES.md)
    slots = {"mode": "slots", "upstream": {"prompt_path": "prompts/rec_alignment.txt", "run_mode": "v2"}}
    check_prompt("x.pth", slots, {"mode": "slots", "prompt_path": "prompts/collm_movie.txt"}, evaluate=True)


def test_eval_scores_an_upstream_file_as_our_checkpoint(tiny_llama, synthetic_dir, tmp_path):
    """Through eval.py's entry: stage 0's binary encoder, then the same adapter as an upstream .pth and as our
    checkpoint directory, scored with one BinLLM config: the same test metrics."""
    out = tmp_path / "runs"
    train_binmf(tmp_path, synthetic_dir, out)
    codes = write_yaml(tmp_path / "codes.yaml", f"""\
model:
  llama_model: {tiny_llama}
  prompt_path: prompts/hash_text.txt
  rec_model: hash
  rec_config: {{embedding_size: 32, code_mode: binary, pretrained_path: {out / "binmf" / "rec_model.pth"}}}
datasets:
  synthetic:
    path: {synthetic_dir}
run:
  mode: v3
  batch_size_eval: 8
  max_eval_rows: 16
  valid_splits: []
  test_splits: [test]
  device: cpu
  output_dir: {out}
""")
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=5)
    file = _save_upstream(tmp_path / "checkpoint_best.pth", _binllm_state(rec), _upstream_config())
    save_checkpoint(rec, tmp_path / "ours", {"score_type": "yes", "add_bos": True})
    got = {}
    for job, ckpt in (("from_file", file), ("from_ours", tmp_path / "ours")):
        got[job] = main("eval", "eval", ["--cfg-path", str(codes), "--options", f"run.job_id={job}",
                                         f"model.ckpt={ckpt}"])["test"]
    assert got["from_file"]["rows"] == 16
    assert got["from_file"]["auc"] == got["from_ours"]["auc"] and got["from_file"]["loss"] == got["from_ours"]["loss"]
    assert read_meta(find_checkpoint(str(file)))["upstream"]["llama_model"] == "/data/vicuna/weights"
    # stage 2 continues from an upstream stage-1 (text) file: another mode, so another prompt, is allowed
    stage1 = _save_upstream(tmp_path / "stage1.pth", _binllm_state(rec),
                            _upstream_config(mode="v2", prompt_path="prompts/tallrec_movie.txt", rec_model="MF"))
    main("llm", "stage 2", ["--cfg-path", str(codes), "--options", "run.job_id=continued", f"model.ckpt={stage1}",
                            "run.max_epoch=1", "run.iters_per_epoch=1", "run.batch_size_train=4", "run.warmup_steps=1",
                            "run.max_train_rows=40", "run.test_splits=[]", "model.lora_config.r=4",
                            "model.lora_config.alpha=8"])
    assert (out / "continued" / "checkpoint_best" / "adapter_model.safetensors").is_file()


def test_convert_command_writes_the_directory_once(tiny_llama, tmp_path, capsys):
    import convert_checkpoint

    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=2)
    file = _save_upstream(tmp_path / "checkpoint_best.pth", _binllm_state(rec), _upstream_config())
    out = convert_checkpoint.main([str(file), "--out", str(tmp_path / "converted")])
    printed = capsys.readouterr().out
    assert out == tmp_path / "converted" and "4 LoRA tensors" not in printed and "8 LoRA tensors" in printed
    assert f"model.ckpt={out}" in printed
    fresh = make_recommender(tmp_path, tiny_llama, r=4)
    load_checkpoint(fresh, out, {"score_type": "yes"})
    torch.testing.assert_close(_scores(fresh), _scores(rec), atol=0, rtol=0)
    with pytest.raises(SystemExit) as exc:
        convert_checkpoint.main([str(tmp_path / "missing.pth")])
    assert exc.value.code == 2 and "missing.pth': no such file" in capsys.readouterr().err
