"""Adapter checkpoints: save, reload, peft compatibility, refusal of mismatches (spec §4.6), and through the
command-line entry: what recommender.json records and which of it a later stage must match."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from helpers import encode, left_pad, make_recommender, model_cfg, train_binmf, write_yaml
from minigpt4.cli import main
from minigpt4.config import ConfigError
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.train.checkpoint import (
    ADAPTER,
    COLLAB,
    META,
    find_checkpoint,
    load_checkpoint,
    lora_layout,
    read_meta,
    save_checkpoint,
)

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


# plain peft, as a user would call it: its deprecation warning from transformers is peft's to fix, not ours
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
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
    with pytest.raises(ConfigError, match=r"trained with model\.lora_config\.r=4, model\.lora_config\.alpha=8 but this "
                                          r"run has model\.lora_config\.r=8, model\.lora_config\.alpha=16; set "
                                          r"model\.lora_config\.r=4, model\.lora_config\.alpha=8 or"):
        load_checkpoint(other, path, {})


def test_refuses_other_target_modules(saved, tiny_llama, tmp_path):
    _, path, _ = saved  # adapters on q_proj and v_proj
    q_only = make_recommender(tmp_path, tiny_llama, r=4, targets=("q_proj",))
    with pytest.raises(ConfigError, match=r"model\.lora_config\.target_modules=\['q_proj', 'v_proj'\] but this "
                                          r"run has model\.lora_config\.target_modules=\['q_proj'\]"):
        load_checkpoint(q_only, path, {})
    q_path = tmp_path / "q_only_ckpt"
    save_checkpoint(q_only, q_path, {})
    both = make_recommender(tmp_path, tiny_llama, r=4)
    with pytest.raises(ConfigError, match=r"target_modules=\['q_proj'\] but this run has .*target_modules=\['q_"):
        load_checkpoint(both, q_path, {})


def _with_lora(tmp_path, tiny_llama, layers, perturb_seed=None, name="layers"):
    """The tiny Llama (2 layers) with r=4 adapters on the given model.lora_config.layers_to_transform."""
    return make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=perturb_seed, layers=layers, name=f"{name}.yaml")


def test_refuses_other_lora_layers_naming_the_key(tiny_llama, tmp_path):
    top = _with_lora(tmp_path, tiny_llama, [-1], perturb_seed=4)  # the top layer of 2: layer 1
    save_checkpoint(top, tmp_path / "top", {})
    every = _with_lora(tmp_path, tiny_llama, [])
    before = _lora(every)
    # was: "does not match this model's adapters: missing [...layers.0...lora_A...]"
    with pytest.raises(ConfigError, match=r"trained with model\.lora_config\.layers_to_transform=\[1\] but this run "
                                          r"has model\.lora_config\.layers_to_transform=\[\] \(absolute layer indices, "
                                          r"\[\] = every layer\); set model\.lora_config\.layers_to_transform=\[1\]"):
        load_checkpoint(every, tmp_path / "top", {})
    assert all(torch.equal(before[n], after) for n, after in _lora(every).items())  # nothing loaded
    bottom = _with_lora(tmp_path, tiny_llama, [0])
    with pytest.raises(ConfigError, match=r"layers_to_transform=\[1\] but this run has .*layers_to_transform=\[0\]"):
        load_checkpoint(bottom, tmp_path / "top", {})
    # like with like: [-1] and [1] are the same layer of this backbone, [0, 1] and [] both mean every layer
    for layers, other in (([1], [-1]), ([0, 1], [])):
        a = _with_lora(tmp_path, tiny_llama, layers, perturb_seed=5, name=f"a{layers}")
        save_checkpoint(a, tmp_path / f"a{layers}", {})
        b = _with_lora(tmp_path, tiny_llama, other, name=f"b{other}")
        assert lora_layout(b) == lora_layout(a)
        load_checkpoint(b, tmp_path / f"a{layers}", {})
        torch.testing.assert_close(_scores(b), _scores(a), atol=0, rtol=0)


def _soft_prompt(tmp_path, tiny_llama, use_lora, name):
    cfg = model_cfg(tmp_path, tiny_llama, r=4, name=f"{name}.yaml")
    cfg.model.lora_config.use_lora = use_lora
    cfg.model.rec_model = "soft_prompt"
    return LLMRecommender.from_config(cfg.model, slots=True)


def test_refuses_lora_for_a_checkpoint_trained_without(tiny_llama, tmp_path):
    bare = _soft_prompt(tmp_path, tiny_llama, use_lora=False, name="bare")  # only slot weights are saved
    assert lora_layout(bare) is None
    save_checkpoint(bare, tmp_path / "bare", {"lora": lora_layout(bare)})
    assert not (tmp_path / "bare" / ADAPTER).exists() and (tmp_path / "bare" / COLLAB).is_file()
    with_lora = _soft_prompt(tmp_path, tiny_llama, use_lora=True, name="with_lora")
    with pytest.raises(ConfigError, match=r"trained with model\.lora_config\.use_lora=False but this run has "
                                          r"model\.lora_config\.use_lora=True; set model\.lora_config\.use_lora=False"):
        load_checkpoint(with_lora, tmp_path / "bare", {})
    load_checkpoint(_soft_prompt(tmp_path, tiny_llama, use_lora=False, name="bare2"), tmp_path / "bare", {})
    # the other way round: an adapter the run would drop
    save_checkpoint(with_lora, tmp_path / "lora", {"lora": lora_layout(with_lora)})
    with pytest.raises(ConfigError, match=r"use_lora=True but this run has model\.lora_config\.use_lora=False; set "
                                          r"model\.lora_config\.use_lora=True with model\.lora_config\.r=4"):
        load_checkpoint(bare, tmp_path / "lora", {})


@pytest.mark.parametrize("key, trained, run, name", [
    ("score_type", "yes_minus_no", "yes", "model.score_type"),
    ("code_mode", "binary", "ipv4", "model.rec_config.code_mode"),
    ("code_bits", 32, 64, "model.rec_config.embedding_size"),
    ("rec_model", "soft_prompt", "personlized_prompt", "model.rec_model"),
    ("proj_token_num", 3, 2, "model.proj_token_num"),
    ("slot_layout", "contiguous", "upstream", "model.slot_layout"),
])
def test_refusal_names_both_values_and_the_config_key(tiny_llama, tmp_path, key, trained, run, name):
    rec = make_recommender(tmp_path, tiny_llama, r=4, perturb_seed=6)
    save_checkpoint(rec, tmp_path / "ckpt", {key: trained})
    fresh = make_recommender(tmp_path, tiny_llama, r=4)
    before = _lora(fresh)
    want = (f"model.ckpt = '{tmp_path / 'ckpt'}' was trained with {name}={trained!r} but this run has "
            f"{name}={run!r}; set {name}={trained} or use a checkpoint trained with {run}")
    with pytest.raises(ConfigError) as err:
        load_checkpoint(fresh, str(tmp_path / "ckpt"), {key: run})
    assert str(err.value) == want
    assert all(torch.equal(before[n], after) for n, after in _lora(fresh).items())  # nothing loaded
    load_checkpoint(fresh, str(tmp_path / "ckpt"), {key: trained})
    load_checkpoint(fresh, str(tmp_path / "ckpt"), {"other_key": run})  # a key the checkpoint lacks: not checked


def test_refuses_other_code_bits_and_backbone(saved, tiny_llama, tmp_path):
    _, path, _ = saved
    fresh = make_recommender(tmp_path, tiny_llama, r=4)
    before = _lora(fresh)
    with pytest.raises(ConfigError, match=r"model\.rec_config\.embedding_size=32 but this run has "
                                          r"model\.rec_config\.embedding_size=64"):
        load_checkpoint(fresh, path, {"code_bits": 64})
    with pytest.raises(ConfigError, match="model.llama_model"):
        load_checkpoint(fresh, path, {"llama_model": "smollm2"})
    after = _lora(fresh)
    assert all(torch.equal(before[n], after[n]) for n in before)  # nothing loaded
    save_checkpoint(fresh, tmp_path / "arch", {"backbone": fresh.backbone_signature()})
    with pytest.raises(ConfigError, match=r"architecture 'llama-L2-.*' but this run's model\.llama_model has "
                                          r"architecture 'llama-L4-H64'; set model\.llama_model"):
        load_checkpoint(fresh, tmp_path / "arch", {"backbone": "llama-L4-H64"})


def test_missing_or_incomplete_dir(tmp_path, saved, tiny_llama):
    rec, _, _ = saved
    with pytest.raises(ConfigError, match="model.ckpt") as err:
        load_checkpoint(rec, tmp_path / "nowhere", {})
    # a missing checkpoint is an earlier stage not run yet: the message says so and shows the command
    assert "no such checkpoint" in str(err.value) and "run that stage first" in str(err.value)
    assert "python train_collm_mf_din.py --cfg-path train_configs/ml1m_tallrec.yaml" in str(err.value)
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


# ---------------------------------------------------------------------------------------------- command line
# stage 0 (binary encoder) -> stage 1 (text, adapters on layer -1) -> stage 2 (codes; soft prompt), each one
# optimiser step, then runs that must be refused before any work.

def _yaml(d, name, data, out, llama, mode, prompt, rec_model="hash", extra=""):
    return write_yaml(d / f"{name}.yaml", f"""\
model:
  llama_model: {llama}
  prompt_path: {prompt}
  score_type: yes_minus_no
  rec_model: {rec_model}
  rec_config: {{embedding_size: 32, code_mode: binary, pretrained_path: {out / "binmf" / "rec_model.pth"}}}
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.0,
                layers_to_transform: [-1]}}
{extra}datasets:
  synthetic:
    path: {data}
run:
  mode: {mode}
  max_epoch: 1
  iters_per_epoch: 1
  batch_size_train: 4
  batch_size_eval: 8
  warmup_steps: 1
  max_train_rows: 40
  max_eval_rows: 8
  valid_splits: []
  test_splits: [test]
  device: cpu
  output_dir: {out}
""")


@pytest.fixture(scope="module")
def chain(tiny_llama, synthetic_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("chain")
    out = d / "runs"
    train_binmf(d, synthetic_dir, out)
    text = _yaml(d, "text", synthetic_dir, out, tiny_llama, "v2", "prompts/tallrec_movie.txt")
    codes = _yaml(d, "codes", synthetic_dir, out, tiny_llama, "v3", "prompts/collm_movie.txt")
    slots = _yaml(d, "slots", synthetic_dir, out, tiny_llama, "v2", "prompts/softprompt_movie.txt",
                  "soft_prompt", "  proj_token_num: 3\n  freeze_proj: False\n  slot_layout: contiguous\n")
    main("llm", "stage 1", ["--cfg-path", str(text), "--options", "run.job_id=text"])
    # stage 2 continues the text adapter in another mode; [1] is the absolute form of stage 1's [-1]
    main("llm", "stage 2", ["--cfg-path", str(codes), "--options", "run.job_id=codes", f"model.ckpt={out / 'text'}",
                            "model.lora_config.layers_to_transform=[1]"])
    main("llm", "stage 2", ["--cfg-path", str(slots), "--options", "run.job_id=slots", f"model.ckpt={out / 'text'}"])
    return {"out": out, "text": text, "codes": codes, "slots": slots}


def test_checkpoint_records_what_a_later_stage_must_match(chain):
    out = chain["out"]
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1]}
    text, codes, slots = (read_meta(out / job / "checkpoint_best") for job in ("text", "codes", "slots"))
    assert text["score_type"] == "yes_minus_no" and text["lora"] == lora and text["backbone"].startswith("llama-L2")
    assert "code_bits" not in text and "rec_model" not in text  # stage 1: no codes, no slots
    assert (codes["score_type"], codes["lora"], codes["code_mode"], codes["code_bits"]) == (
        "yes_minus_no", lora, "binary", 32)
    assert (slots["lora"], slots["rec_model"], slots["proj_token_num"], slots["slot_layout"]) == (
        lora, "soft_prompt", 3, "contiguous")
    # and each loads again for evaluation with its own config
    for job in ("codes", "slots"):
        res = main("eval", "eval", ["--cfg-path", str(chain[job]), "--options", f"run.job_id={job}_again",
                                    f"model.ckpt={out / job}"])
        assert res["test"]["rows"] == 8


def _refused(chain, capsys, cfg, job, ckpt, *options):
    with pytest.raises(SystemExit) as exc:
        main("eval" if job.startswith("eval") else "llm", job,
             ["--cfg-path", str(chain[cfg]), "--options", f"run.job_id={job}", f"model.ckpt={chain['out'] / ckpt}",
              *options])
    assert exc.value.code == 2
    assert not (chain["out"] / job).exists()  # refused before the run directory
    return capsys.readouterr().err


def test_eval_refuses_other_score_type(chain, capsys):
    ckpt = chain["out"] / "codes" / "checkpoint_best"
    err = _refused(chain, capsys, "codes", "eval_yes", "codes", "model.score_type=yes")
    assert (f"model.ckpt = '{ckpt.parent}' was trained with model.score_type='yes_minus_no' but this run has "
            "model.score_type='yes'; set model.score_type=yes_minus_no or use a checkpoint trained with yes") in err


def test_stage2_refuses_score_type_of_stage1(chain, capsys):
    err = _refused(chain, capsys, "codes", "train_yes", "text", "model.score_type=yes")
    assert "model.score_type='yes_minus_no' but this run has model.score_type='yes'" in err


def test_training_refuses_other_lora_layout(chain, capsys):
    err = _refused(chain, capsys, "text", "train_every_layer", "text", "model.lora_config.layers_to_transform=[]")
    assert ("was trained with model.lora_config.layers_to_transform=[1] but this run has "
            "model.lora_config.layers_to_transform=[] (absolute layer indices, [] = every layer); "
            "set model.lora_config.layers_to_transform=[1]") in err
    err = _refused(chain, capsys, "codes", "train_r8", "text", "model.lora_config.r=8", "model.lora_config.alpha=16")
    assert ("was trained with model.lora_config.r=4, model.lora_config.alpha=8 but this run has "
            "model.lora_config.r=8, model.lora_config.alpha=16") in err


def test_eval_refuses_other_code_mode(chain, capsys):
    err = _refused(chain, capsys, "codes", "eval_ipv4", "codes", "model.rec_config.code_mode=ipv4")
    assert ("was trained with model.rec_config.code_mode='binary' but this run has "
            "model.rec_config.code_mode='ipv4'; set model.rec_config.code_mode=binary") in err


@pytest.mark.parametrize("option, words", [
    ("model.slot_layout=upstream", "model.slot_layout='contiguous' but this run has model.slot_layout='upstream'"),
    ("model.proj_token_num=2", "model.proj_token_num=3 but this run has model.proj_token_num=2"),
    ("model.rec_model=personlized_prompt",
     "model.rec_model='soft_prompt' but this run has model.rec_model='personlized_prompt'"),
])
def test_eval_refuses_other_slot_encoder(chain, capsys, option, words):
    err = _refused(chain, capsys, "slots", "eval_slots", "slots", option)
    assert words in err, err


def test_keys_an_old_checkpoint_lacks_take_what_the_old_code_did(tmp_path):
    """A checkpoint written before add_bos / slot_layout were recorded was trained with BOS and contiguous slots:
    it is refused for a run that differs from that, and loads for one that matches."""
    from minigpt4.train.checkpoint import META, load_checkpoint

    ckpt = tmp_path / "checkpoint_best"
    ckpt.mkdir()
    (ckpt / META).write_text(json.dumps({"backbone": "b", "score_type": "yes"}))
    (ckpt / "collab_tokens.safetensors").write_bytes(b"")
    before = {"add_bos": True, "slot_layout": "contiguous"}
    refusal = r"model.slot_layout='contiguous' but this run has model.slot_layout='upstream'"
    with pytest.raises(ConfigError, match=refusal):
        load_checkpoint(None, str(ckpt), {"slot_layout": "upstream"}, before)
    with pytest.raises(ConfigError, match=r"model.add_bos=True but this run has model.add_bos=False"):
        load_checkpoint(None, str(ckpt), {"add_bos": False}, before)
