"""A new user's first mistakes (issue 23): a misspelled key names the right one, the entry scripts report config and
data errors with exit status 2 before torch is imported, and every README section or docs/ page an error message
cites exists."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import anchors, slug

from minigpt4.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
SMALL = """\
model:
  rec_model: hash
datasets:
  synthetic:
    path: data/synthetic/
run:
  init_lr: 1e-3
"""


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


@pytest.mark.parametrize("option, unknown, key", [
    ("run.lr=1", "run.lr", "init_lr"),
    ("run.learning_rate=1", "run.learning_rate", "init_lr"),
    ("run.lerning_rate=1", "run.lerning_rate", "init_lr"),  # a typo of an alias
    ("run.init_lrr=1", "run.init_lrr", "init_lr"),
    ("run.epochs=3", "run.epochs", "max_epoch"),
    ("run.num_epochs=3", "run.num_epochs", "max_epoch"),
    ("run.batch_size=3", "run.batch_size", "batch_size_train"),
    ("model.lora_config.rank=4", "model.lora_config.rank", "r"),
    ("model.lora.r=4", "model.lora", "lora_config"),
    ("model.init_lr=1", "model.init_lr", "run.init_lr"),  # the right name in the wrong section: its whole path
    ("model.rec_config.num_heds=2", "model.rec_config.num_heds", "num_heads"),
])
def test_unknown_keys_suggest_the_key_meant(small, option, unknown, key):
    with pytest.raises(ConfigError, match=rf"^unknown key {re.escape(unknown)} \(did you mean '{key}'\?\)$"):
        load_config(small, [option])


def test_a_key_like_no_other_lists_the_valid_ones(small):
    with pytest.raises(ConfigError, match=r"unknown key run\.zzzz \(valid keys: .*init_lr"):
        load_config(small, ["run.zzzz=1"])


def test_the_aliases_name_keys_that_exist_and_are_not_keys_themselves():
    from minigpt4.config.load import ALIASES, _schema_paths
    from minigpt4.config.schema import ModelConfig, RunConfig

    keys = {*_schema_paths(ModelConfig, "model."), *_schema_paths(RunConfig, "run.")}
    assert not keys & set(ALIASES)
    assert set(ALIASES.values()) <= keys


def run_script(script, *args):
    """Run an entry script in a fresh interpreter as `python script ...` would; (exit code, stderr, whether torch
    was imported when it exited)."""
    code = ("import runpy, sys\n"
            f"sys.argv = [{script!r}, *{list(args)!r}]\n"
            "try:\n"
            f"    runpy.run_path({script!r}, run_name='__main__')\n"
            "except SystemExit as exit:\n"
            "    print('exit', exit.code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    m = re.search(r"^exit (\S+) (True|False)$", out.stdout, re.M)
    assert m, out.stdout + out.stderr
    return m.group(1), out.stderr, m.group(2) == "True"


def test_a_misspelled_key_exits_2_before_torch_is_imported():
    code, err, torch_loaded = run_script("train_binllm.py", "--cfg-path", "train_configs/ml1m_binllm.yaml",
                                         "--options", "run.lerning_rate=1")
    assert code == "2" and "did you mean 'init_lr'" in err, err
    assert not torch_loaded


@pytest.mark.parametrize("script, option, message", [
    ("pretrain_collab.py", "datasets.movie_ood.path=/nonexistent/data", "datasets.movie_ood.path"),
    ("eval.py", "model.prompt_path=prompts/nonexistent.txt", "model.prompt_path"),
    ("train_collm_mf_din.py", "model.ckpt=/nonexistent/run", "model.ckpt"),
])
def test_missing_paths_exit_2_before_torch_is_imported(tmp_path, script, option, message):
    data = tmp_path / "data"  # a processed directory with its split files, so the checks get to the path
    data.mkdir()
    for name in ("train_ood2.pkl", "valid_ood2.pkl", "valid_small_ood2.pkl", "test_ood2.pkl"):
        (data / name).write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMALL.replace("rec_model: hash", "rec_model: MF").replace(
        "synthetic:\n    path: data/synthetic/", f"movie_ood:\n    path: {data}"))
    code, err, torch_loaded = run_script(script, "--cfg-path", str(cfg), "--options", option,
                                         f"run.output_dir={tmp_path / 'runs'}")
    assert code == "2" and message in err, err
    assert not torch_loaded


def test_a_missing_stage1_adapter_names_the_stage1_config_of_the_same_dataset(tmp_path):
    from minigpt4.preflight import stage1_command

    assert stage1_command("train_configs/ml100k_binllm.yaml") == (
        "python train_collm_mf_din.py --cfg-path train_configs/ml100k_tallrec.yaml")
    assert stage1_command("train_configs/amazon_collm_mf.yaml").endswith("train_configs/amazon_tallrec.yaml")
    assert stage1_command("train_configs/ml1m_tallrec.yaml") is None  # stage 1 itself
    assert stage1_command(tmp_path / "mine_binllm.yaml") is None  # no such stage-1 config beside it
    encoder, data = tmp_path / "rec_model.pth", tmp_path / "data"  # what the checks before model.ckpt look at
    encoder.write_bytes(b"")
    data.mkdir()
    for name in ("train_ood2.pkl", "valid_ood2.pkl", "valid_small_ood2.pkl", "test_ood2.pkl",
                 "test_warm_cold_ood2.pkl"):
        (data / name).write_bytes(b"")
    code, err, torch_loaded = run_script("train_binllm.py", "--cfg-path", "train_configs/ml100k_binllm.yaml",
                                         "--options", f"model.rec_config.pretrained_path={encoder}",
                                         f"datasets.movie_ood.path={data}",
                                         f"model.ckpt={tmp_path / 'no_run'}", f"run.output_dir={tmp_path / 'runs'}")
    assert code == "2" and "`python train_collm_mf_din.py --cfg-path train_configs/ml100k_tallrec.yaml`" in err, err
    assert not torch_loaded


def test_a_missing_split_file_exits_2_before_torch_is_imported(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train_ood2.pkl").write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMALL.replace("synthetic:\n    path: data/synthetic/", f"movie_ood:\n    path: {data}"))
    code, err, torch_loaded = run_script("pretrain_collab.py", "--cfg-path", str(cfg))
    assert code == "2" and "valid_ood2.pkl: missing" in err and "docs/DATA.md" in err, err
    assert not torch_loaded


# Where an error message sends the reader: `docs/X.md` (perhaps with #anchor), `README.md#anchor`, or a section
# named in quotes after the file: (README, 'Data'), (docs/DATA.md, 'Preparing data from the original files').
CITATION = re.compile(r"\b(README(?:\.md)?|docs/[\w.-]+\.md)"
                      r"(?:#([\w-]+)|(?:,|'s)\s*(?:section\s+)?['\"]([^'\"]+)['\"])?")


def citations(text):
    """(file, anchor or None) for each citation in `text`; a bare `README` without a section is not one."""
    for m in CITATION.finditer(text):
        name, anchor, section = m.groups()
        if name == "README" and not (anchor or section):
            continue
        yield ("README.md" if name == "README" else name), (anchor or (slug(section) if section else None))


def broken_citations(text):
    bad = []
    for name, anchor in citations(text):
        path = ROOT / name
        if not path.is_file():
            bad.append(f"{name}: no such file")
        elif anchor and anchor not in anchors(path):
            bad.append(f"{name}: no heading gives #{anchor}")
    return bad


def test_every_cited_readme_section_and_doc_exists():
    bad = [f"{p.relative_to(ROOT)}: {b}" for p in sorted((ROOT / "minigpt4").rglob("*.py"))
           for b in broken_citations(p.read_text(encoding="utf-8"))]
    assert not bad, "error messages send the reader to something that does not exist:\n" + "\n".join(bad)


def test_the_citation_check_sees_what_it_looks_for():
    assert broken_citations("see (README, 'No Such Section')") == ["README.md: no heading gives #no-such-section"]
    assert broken_citations("see docs/NOPE.md") == ["docs/NOPE.md: no such file"]
    assert broken_citations("(docs/DATA.md, 'Preparing data from the original files')") == []
    assert broken_citations("docs/DATA.md#no-anchor") == ["docs/DATA.md: no heading gives #no-anchor"]
    assert broken_citations("GroupLens' README: 943 users") == []


def test_a_kind_registers_on_first_lookup_without_importing_the_others():
    code = ("import sys; from minigpt4 import registry; registry.get('dataset', 'movie_ood'); "
            "print('torch' in sys.modules, sorted(registry._LOADED)); registry.get('rec_model', 'hash'); "
            "print('torch' in sys.modules, sorted(registry._LOADED))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.splitlines() == ["False ['dataset']", "True ['dataset', 'rec_model']"]
