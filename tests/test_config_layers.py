"""Layered configs: a runnable config names the files it builds on in `defaults:`; load_config merges them.

The shipped configs were flat files until they were layered; `data/resolved_configs.json` holds what the flat
files resolved to (taken with the flat files and the code of that time), so the layering provably changed no value.
Since then it changes only on purpose, in the commit that changes a value: configs added later (`ml100k_*`), the demo
moved to MovieLens-100K, new schema keys, `run.device: auto`.
"""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from helpers import ROOT
from minigpt4.config import INCLUDE_KEY, ConfigError, compose, load_config
from minigpt4.data.prepare.interactions import CONFIG_MARK

CONFIGS = ROOT / "train_configs"
RUNNABLE = sorted(CONFIGS.glob("*.yaml"))
SNAPSHOT = json.loads((Path(__file__).parent / "data" / "resolved_configs.json").read_text(encoding="utf-8"))
UPSTREAM = ("hash_CF_ml", "collm_pretrain_mf_ood")


def test_the_snapshot_covers_every_runnable_config():
    assert sorted(p.stem for p in RUNNABLE) == sorted(SNAPSHOT)


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.stem for p in RUNNABLE])
def test_every_runnable_config_resolves_as_its_flat_file_did(path):
    cfg = load_config(path)
    assert OmegaConf.to_container(cfg, resolve=True) == SNAPSHOT[path.stem]
    OmegaConf.set_readonly(cfg, True)  # the recipes freeze the loaded config: nothing in it is left to resolve
    assert OmegaConf.to_container(cfg) == SNAPSHOT[path.stem]


@pytest.mark.parametrize("name", UPSTREAM)
def test_upstream_files_stay_flat_and_load_unchanged(name):
    path = CONFIGS / f"{name}.yaml"
    raw = OmegaConf.load(path)
    assert INCLUDE_KEY not in raw
    assert OmegaConf.to_container(compose(path)) == OmegaConf.to_container(raw)


def test_every_fragment_is_used_and_is_not_runnable_on_its_own():
    used = set()

    def walk(path):
        raw = OmegaConf.load(path)
        for entry in raw.get(INCLUDE_KEY, []):
            target = (path.parent / entry).resolve()
            used.add(target)
            walk(target)

    for path in RUNNABLE:
        walk(path)
    # a dataset config that `prepare_data.py interactions` wrote in a user's tree is theirs to use
    fragments = {p.resolve() for p in CONFIGS.glob("*/*.yaml") if p.parent.name != "backbones"
                 and not p.read_text(encoding="utf-8").startswith(CONFIG_MARK)}
    assert fragments and fragments <= used, sorted(map(str, fragments - used))


def test_the_saved_config_reloads_without_its_layers(tmp_path):
    """A run directory's config.yaml is the resolved config (train/run_dir.py writes OmegaConf.to_yaml of it)."""
    cfg = load_config(CONFIGS / "ml1m_binllm_it.yaml", ["run.init_lr=3e-4"])
    saved = tmp_path / "config.yaml"
    saved.write_text(OmegaConf.to_yaml(cfg))
    assert INCLUDE_KEY not in saved.read_text() and "${" not in saved.read_text()
    assert OmegaConf.to_container(load_config(saved)) == OmegaConf.to_container(cfg)


def _write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_later_layers_win_and_paths_are_relative_to_the_including_file(tmp_path):
    _write(tmp_path, "frag/data.yaml", "datasets: {movie_ood: {path: data/ml-1m/}}\nrun: {seed: 1, max_epoch: 7}\n")
    _write(tmp_path, "frag/run.yaml", f"{INCLUDE_KEY}: [data.yaml]\nrun: {{seed: 2, patience: 9}}\n")
    top = _write(tmp_path, "exp/top.yaml", f"{INCLUDE_KEY}: [../frag/run.yaml]\nmodel: {{}}\nrun: {{seed: 3}}\n")
    run = load_config(top).run
    assert (run.seed, run.patience, run.max_epoch) == (3, 9, 7)
    assert load_config(top, ["run.seed=4"]).run.seed == 4  # --options come last


def test_missing_included_file_names_the_file_and_the_entry(tmp_path):
    top = _write(tmp_path, "top.yaml", f"{INCLUDE_KEY}: [base/nosuch.yaml]\nmodel: {{}}\n")
    with pytest.raises(ConfigError, match=rf"top.yaml: {INCLUDE_KEY}: 'base/nosuch.yaml': no such file .*nosuch.yaml"):
        load_config(top)


@pytest.mark.parametrize("cycle", [("a.yaml",), ("a.yaml", "b.yaml")])
def test_an_include_cycle_is_an_error_naming_the_chain(tmp_path, cycle):
    for name, nxt in zip(cycle, cycle[1:] + cycle[:1]):
        _write(tmp_path, name, f"{INCLUDE_KEY}: [{nxt}]\nmodel: {{}}\n")
    with pytest.raises(ConfigError, match=rf"{INCLUDE_KEY}: 'a.yaml' is already being read, a cycle: .*a.yaml -> "):
        load_config(tmp_path / "a.yaml")


@pytest.mark.parametrize("value", ["base/llm.yaml", "[1, base/llm.yaml]", "{a: b}", "['']"])
def test_a_bad_include_list_names_the_file_and_the_key(tmp_path, value):
    top = _write(tmp_path, "top.yaml", f"{INCLUDE_KEY}: {value}\nmodel: {{}}\n")
    with pytest.raises(ConfigError, match=rf"top.yaml: `{INCLUDE_KEY}:` must be a list of YAML files"):
        load_config(top)


def test_unreadable_included_file_names_it_and_its_includer(tmp_path):
    _write(tmp_path, "broken.yaml", "model: [unclosed\n")
    top = _write(tmp_path, "top.yaml", f"{INCLUDE_KEY}: [broken.yaml]\nmodel: {{}}\n")
    with pytest.raises(ConfigError, match=rf"top.yaml: {INCLUDE_KEY}: .*broken.yaml cannot be read as YAML"):
        load_config(top)


def test_a_layered_file_is_still_validated_as_a_whole(tmp_path):
    """An unknown key in a fragment is the same error as in a flat file."""
    _write(tmp_path, "frag.yaml", "run: {init_lrr: 1e-3}\n")
    top = _write(tmp_path, "top.yaml", f"{INCLUDE_KEY}: [frag.yaml, {CONFIGS / 'datasets/ml1m.yaml'}]\nmodel: {{}}\n")
    with pytest.raises(ConfigError, match="unknown key run.init_lrr .did you mean 'init_lr'"):
        load_config(top)
