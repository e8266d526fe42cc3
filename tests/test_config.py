"""Config loading: upstream YAML compatibility, clear errors, --options, generated docs (spec §6.2, §8)."""

from pathlib import Path

import pytest

from minigpt4.cli import parse_args
from minigpt4.config import REPO_ROOT, ConfigError, load_config, parse_options, reference_markdown, run_mode

# Exactly the keys of upstream BinLLM train_configs/hash_CF_ml.yaml (local paths replaced by placeholders).
UPSTREAM_HASH_CF_ML = """\
model:
  arch: mini_gpt4rec_v2
  model_type: pretrain_vicuna
  freeze_rec: True
  freeze_proj: True
  freeze_lora: False
  max_txt_len: 1024
  proj_token_num: 1
  proj_drop: 0
  proj_mid_times: 10
  end_sym: "###"
  prompt_path: "prompts/hash_text.txt"
  prompt_template: '{}'
  llama_model: "/data/zyang/LLM/vicuna_weights/"
  user_num: -100
  item_num: -100
  ans_type: 'v2'
  rec_model: "hash"
  lora_config:
    use_lora: True
    r: 8
    alpha: 16
    target_modules: ["q_proj", "v_proj"]
    dropout: 0.05
  rec_config:
    user_num: -100
    item_num: -100
    embedding_size: 32
    code_mode: 'binary'
    use_hash: False
    pretrained_path: "/data/zyang/pretrained/0130hashGNN-ml-32lr-0.01wd0.001.pth"
  ckpt: "/data/zyang/logs/20240131205/checkpoint_best.pth"

datasets:
  amazon_ood:
    path: /data/zyang/datasets/ml-1m/
    data_type: default
    build_info:
      storage: /data/zyang/datasets/ml-1m/

run:
  task: rec_pretrain
  lr_sched: "linear_warmup_cosine_lr"
  init_lr: 1e-4
  min_lr: 8e-5
  warmup_lr: 1e-5
  mode: 'v3'
  weight_decay: 1e-3
  max_epoch: 200
  iters_per_epoch: 50
  batch_size_train: 4
  batch_size_eval: 64
  num_workers: 4
  warmup_steps: 200
  seed: 42
  output_dir: "/data/zyang/logs/"
  amp: True
  resume_ckpt_path: null
  evaluate: False
  train_splits: ["train"]
  valid_splits: ["valid"]
  test_splits: ["test", "valid"]
  device: "cuda"
  world_size: 1
  dist_url: "env://"
  distributed: True
"""

SMALL = """\
model:
  rec_model: hash
  rec_config: {embedding_size: 32, code_mode: binary}
  lora_config: {r: 8}
datasets:
  synthetic:
    path: data/synthetic/
run:
  init_lr: 1e-3
  max_epoch: 3
"""


@pytest.fixture
def upstream(tmp_path):
    path = tmp_path / "hash_CF_ml.yaml"
    path.write_text(UPSTREAM_HASH_CF_ML)
    return path


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def test_upstream_hash_cf_ml_loads(upstream):
    cfg = load_config(upstream)
    assert cfg.run.init_lr == 1e-4 and isinstance(cfg.run.init_lr, float)  # `1e-4` is a string in YAML 1.1
    assert cfg.run.weight_decay == 1e-3 and cfg.run.min_lr == 8e-5 and cfg.run.warmup_lr == 1e-5
    assert cfg.run.resume_ckpt_path is None
    assert cfg.model.proj_drop == 0.0 and isinstance(cfg.model.proj_drop, float)
    assert cfg.model.rec_model == "hash" and cfg.model.rec_config.code_mode == "binary"
    assert list(cfg.model.lora_config.target_modules) == ["q_proj", "v_proj"]
    assert cfg.datasets.amazon_ood.path == "/data/zyang/datasets/ml-1m/"
    assert list(cfg.run.test_splits) == ["test", "valid"]
    assert run_mode(cfg) == "codes"
    # keys the YAML does not set get their defaults
    assert cfg.run.accum_grad_iters == 1 and cfg.model.score_type == "yes"


def test_storage_used_when_path_missing(tmp_path):
    text = UPSTREAM_HASH_CF_ML.replace("    path: /data/zyang/datasets/ml-1m/\n", "")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_config(path).datasets.amazon_ood.path == "/data/zyang/datasets/ml-1m/"


def test_unknown_key_names_closest(upstream, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(UPSTREAM_HASH_CF_ML.replace("  init_lr: 1e-4", "  init_lrr: 1e-4"))
    with pytest.raises(ConfigError, match=r"run\.init_lrr.*'init_lr'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"model\.lora_config\.rank.*'r'|model\.lora_config\.rank"):
        load_config(upstream, ["model.lora_config.rank=4"])
    with pytest.raises(ConfigError, match="'model'"):
        load_config(upstream, ["modle.arch=x"])
    with pytest.raises(ConfigError, match="movie_ood"):
        bad.write_text(UPSTREAM_HASH_CF_ML.replace("amazon_ood:", "movie_oood:"))
        load_config(bad)


def test_wrong_type(upstream):
    with pytest.raises(ConfigError, match=r"run\.max_epoch must be a int"):
        load_config(upstream, ["run.max_epoch=ten"])
    with pytest.raises(ConfigError, match=r"model\.lora_config\.use_lora must be a bool"):
        load_config(upstream, ["model.lora_config.use_lora=3"])
    with pytest.raises(ConfigError, match=r"run\.init_lr must be a float"):
        load_config(upstream, ["run.init_lr=fast"])
    with pytest.raises(ConfigError, match=r"model\.rec_config\.code_mode must be one of"):
        load_config(upstream, ["model.rec_config.code_mode=hex"])

    with pytest.raises(ConfigError, match=r"run\.max_epoch is null"):
        load_config(upstream, ["run.max_epoch="])


def test_empty_value_clears_a_path_key(upstream):
    # `model.ckpt=` (or `ckpt:` with nothing in YAML) means "no checkpoint", not an error
    assert load_config(upstream, ["model.ckpt="]).model.ckpt == ""
    assert load_config(upstream, ["model.ckpt=''"]).model.ckpt == ""


def test_options_both_forms(small):
    a = load_config(small, ["run.init_lr=1e-2", "model.lora_config.r=4", "model.rec_config.code_mode=ipv4"])
    b = load_config(small, ["run.init_lr", "1e-2", "model.lora_config.r", "4", "model.rec_config.code_mode", "ipv4"])
    for cfg in (a, b):
        assert cfg.run.init_lr == 1e-2 and cfg.model.lora_config.r == 4
        assert cfg.model.rec_config.code_mode == "ipv4"
        assert cfg.run.max_epoch == 3  # untouched keys keep the YAML value
    assert parse_options(["a.b=1", "c=2"]) == ["a.b=1", "c=2"]
    assert parse_options(["a.b", "1", "c", "2"]) == ["a.b=1", "c=2"]
    with pytest.raises(ConfigError):
        parse_options(["a.b", "1", "c"])
    with pytest.raises(ConfigError):
        parse_options(["a.b=1", "c", "2"])
    # through the command-line parser, as the scripts receive them
    args = parse_args("x", ["--cfg-path", str(small), "--options", "run.max_epoch", "7"])
    assert load_config(args.cfg_path, args.options).run.max_epoch == 7


@pytest.mark.parametrize("option, where", [
    ("run.init_lr=-1e-4", "run.init_lr"),
    ("run.weight_decay=-1", "run.weight_decay"),
    ("model.lora_config.r=0", "model.lora_config.r"),
    ("run.batch_size_train=0", "run.batch_size_train"),
    ("model.rec_config.embedding_size=12", "multiple of 8"),
    ("model.proj_token_num=0", "model.proj_token_num"),
    ("model.proj_mid_times=0", "model.proj_mid_times"),
])
def test_bad_values(small, option, where):
    options = [option] + (["model.rec_config.code_mode=ipv4"] if "embedding_size" in option else [])
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_config(small, options)


def test_ipv4_12_bits_rejected_binary_12_bits_accepted(small):
    with pytest.raises(ConfigError, match="embedding_size=12"):
        load_config(small, ["model.rec_config.code_mode=ipv4", "model.rec_config.embedding_size=12"])
    assert load_config(small, ["model.rec_config.embedding_size=12"]).model.rec_config.embedding_size == 12


def test_structure_errors(tmp_path, small):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    no_run = tmp_path / "no_run.yaml"
    no_run.write_text(SMALL.split("run:")[0])
    with pytest.raises(ConfigError, match="run"):
        load_config(no_run)
    with pytest.raises(ConfigError, match="resume"):
        load_config(small, ["run.resume_ckpt_path=/x", "run.fsdp=True"])  # not supported together
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(broken)


def test_config_doc_is_generated_from_schema():
    doc = (REPO_ROOT / "docs" / "CONFIG.md").read_text(encoding="utf-8")
    assert doc == reference_markdown(), "docs/CONFIG.md is stale: python eval.py --help-config-md > docs/CONFIG.md"


def _help(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        parse_args("x", list(argv))
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_help_config_md_prints_the_reference(capsys):
    assert _help(capsys, "--help-config-md") == reference_markdown()


def test_help_config_is_one_short_line_per_key(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    lines = _help(capsys, "--help-config").splitlines()
    assert all(len(line) <= 100 for line in lines)
    keys = [line.split()[0] for line in lines[1:-1]]
    assert len(keys) == len(set(keys)) == reference_markdown().count("\n| `")
    init_lr = next(line for line in lines if line.startswith("run.init_lr "))
    assert init_lr.split()[1] == "0.0001" and "Peak learning rate" in init_lr


def test_help_config_of_a_script_lists_the_keys_it_reads(capsys):
    def listed(stage):
        with pytest.raises(SystemExit):
            parse_args("x", ["--help-config"], stage)
        return {line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-1]}

    collab, llm, ev = listed("collab"), listed("llm"), listed("eval")
    assert {"run.init_lr", "model.rec_model", "model.rec_config.beta_step", "run.seed"} <= collab
    assert not {"model.llama_model", "model.lora_config.r", "run.iters_per_epoch", "run.batch_size_eval"} & collab
    assert {"model.llama_model", "model.lora_config.r", "run.iters_per_epoch", "run.init_lr"} <= llm
    assert {"model.llama_model", "run.batch_size_eval", "run.test_splits"} <= ev
    assert not {"run.init_lr", "run.iters_per_epoch", "run.patience"} & ev
    assert "run.use_dist_eval_sampler" not in collab | llm | ev  # upstream keys no script reads
    assert "read by: no script" in _help(capsys, "--help-config", "run.use_dist_eval_sampler")


@pytest.mark.parametrize("asked", ["run.init_lr", "init_lr", "run.lr"])
def test_help_config_key_shows_that_key_in_full(capsys, asked):
    out = _help(capsys, "--help-config", asked)
    assert out.splitlines()[0] == "run.init_lr" and "default: 0.0001" in out and "Peak learning rate" in out


def test_help_config_unknown_key_suggests_one(capsys):
    assert "did you mean 'run.init_lr'?" in _help(capsys, "--help-config", "run.init_lrr")


def test_unquoted_yes_is_the_string_yes(small, tmp_path):
    # YAML 1.1 reads `score_type: yes` as a boolean; the documented value must still work.
    from minigpt4.config import load_config

    path = tmp_path / "yes.yaml"
    path.write_text(small.read_text().replace("model:", "model:\n  score_type: yes", 1))
    assert load_config(path).model.score_type == "yes"


def test_evaluate_needs_test_splits(small):
    from minigpt4.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="run.test_splits"):
        load_config(small, ["run.evaluate=True", "run.test_splits=[]"])


SHIPPED = sorted((Path(__file__).parents[1] / "train_configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_config_loads_with_the_dataset_s_wording(path):
    from minigpt4.config import resolve_path

    cfg = load_config(path)
    prompt = resolve_path(cfg.model.prompt_path)
    assert prompt.is_file(), cfg.model.prompt_path
    from minigpt4.config import compose

    if "prompt_path" in compose(path).get("model", {}) and path.stem.startswith(("ml1m_", "amazon_")):  # an LLM stage
        (name, _), = cfg.datasets.items()
        amazon = path.stem.startswith("amazon_")
        assert ("amazon" in name) == amazon
        assert (" book" in prompt.read_text()) == amazon and (" movie" in prompt.read_text()) != amazon


def test_both_datasets_ship_the_same_methods():
    stems = {p.stem for p in SHIPPED}
    ml1m = {s.removeprefix("ml1m_") for s in stems if s.startswith("ml1m_")} - {"eval"}
    amazon = {s.removeprefix("amazon_") for s in stems if s.startswith("amazon_")}
    assert ml1m == amazon, ml1m ^ amazon


def test_global_batch_size_must_split_evenly(small):
    from minigpt4.config import accumulation_steps

    run = load_config(small, ["run.global_batch_size=24", "run.batch_size_train=4"]).run
    assert accumulation_steps(run, 1) == 6 and accumulation_steps(run, 2) == 3 and accumulation_steps(run, 3) == 2
    with pytest.raises(ConfigError, match="run.global_batch_size=24"):
        accumulation_steps(run, 4)  # 24 rows cannot be 4 processes x batch 4 x whole micro-batches
    assert accumulation_steps(load_config(small, ["run.accum_grad_iters=3"]).run, 8) == 3  # unset: the key decides
    with pytest.raises(ConfigError, match="run.dist_timeout_minutes"):
        load_config(small, ["run.dist_timeout_minutes=0"])


@pytest.mark.parametrize("tf32", [True, False])
def test_cuda_device_sets_tf32_as_configured(tf32, monkeypatch):
    """run.tf32 decides whether fp32 products on the GPU may use TensorFloat-32 (checked without a GPU)."""
    import torch
    from omegaconf import OmegaConf

    from minigpt4.cli import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest" if tf32 else "high")
        cfg = OmegaConf.create({"run": {"device": "cuda", "tf32": tf32}})
        assert pick_device(cfg, 0) == torch.device("cuda", 0)
        assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")
    finally:
        torch.set_float32_matmul_precision(before)


def test_the_loaded_config_is_typed_by_the_schema(small):
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ValidationError

    from minigpt4.config import Config, RecConfig

    cfg = load_config(small)
    assert OmegaConf.get_type(cfg) is Config and OmegaConf.get_type(cfg.model.rec_config) is RecConfig
    with pytest.raises(ValidationError):
        cfg.run.max_epoch = "ten"
    with pytest.raises(ConfigAttributeError):
        cfg.run.max_epochs = 3


def test_interpolations_resolve_into_typed_keys_with_the_errors_of_literal_values(small):
    cfg = load_config(small, ["run.max_epoch=${run.patience}", "run.init_lr=${run.job_id}", "run.job_id='2e-3'"])
    assert cfg.run.max_epoch == 20 and isinstance(cfg.run.max_epoch, int)  # the schema's default, read after merge
    assert cfg.run.init_lr == 2e-3 and isinstance(cfg.run.init_lr, float)
    with pytest.raises(ConfigError, match=r"^run\.max_epoch must be a int, got 'ten' \(str\)$"):
        load_config(small, ["run.max_epoch=${run.job_id}", "run.job_id=ten"])
    with pytest.raises(ConfigError, match=r"^run\.dtype must be one of \['auto', 'fp32', 'bf16'\], got 'fp16'$"):
        load_config(small, ["run.dtype=${run.job_id}", "run.job_id=fp16"])


@pytest.mark.parametrize("option, message", [
    ("run.job_id='???'", r"run\.job_id is \?\?\?"),
    ("model.lora_config.layers_to_transform=[a]", r"layers_to_transform must be a list of int, got \['a'\]"),
    ("model.lora_config.target_modules=[1]", r"target_modules must be a list of str"),
])
def test_values_omegaconf_would_misread_are_errors(small, option, message):
    with pytest.raises(ConfigError, match=message):
        load_config(small, [option])


@pytest.mark.parametrize("asked, gpu, expected, warns", [
    ("auto", True, "cuda", False), ("auto", False, "cpu", False),  # the shipped default: no warning either way
    ("cuda", False, "cpu", True), ("cpu", True, "cpu", False)])
def test_run_device_auto_takes_the_gpu_when_there_is_one_and_never_warns(asked, gpu, expected, warns, monkeypatch,
                                                                          capsys):
    import torch
    from omegaconf import OmegaConf

    from minigpt4.cli import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    before = torch.get_float32_matmul_precision()
    try:
        cfg = OmegaConf.create({"run": {"device": asked, "tf32": True}})
        assert pick_device(cfg, 0).type == expected
    finally:
        torch.set_float32_matmul_precision(before)
    assert ("no GPU is visible" in capsys.readouterr().out) == warns


def test_shipped_configs_run_where_they_are_started():
    """No shipped LLM or encoder config pins a device: `auto` is the schema's default (upstream files keep theirs)."""
    for path in sorted((REPO_ROOT / "train_configs").glob("*.yaml")):
        if path.stem not in ("hash_CF_ml", "collm_pretrain_mf_ood"):
            assert load_config(path).run.device == "auto", path.name
