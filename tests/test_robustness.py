"""Bad input never crashes with an unhandled exception (hypothesis fuzzing of the config loader and the split
reader), Parquet splits read like pickles, and a NaN loss stops a run with a clear error, keeping the last good
checkpoint."""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt4.config import ConfigError, load_config
from minigpt4.data.splits import COLUMNS, DataError, read_split, to_parquet

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
keys = st.sampled_from(["model", "run", "datasets", "synthetic", "movie_ood", "path", "init_lr", "max_epoch",
                        "lora_config", "r", "rec_config", "embedding_size", "code_mode", "mode", "job_id",
                        "batch_size_train", "test_splits", "x"]) | st.text(max_size=8)
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
                     max_leaves=12)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.slow
@FUZZ
@given(tree=trees, options=st.lists(st.text(max_size=20), max_size=3))
def test_config_loader_only_raises_config_errors(tmp_path, tree, options):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    try:
        load_config(path, options)
    except ConfigError:
        pass


@FUZZ
@given(text=st.text(max_size=200))
def test_config_loader_survives_arbitrary_yaml_text(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError:
        pass


cells = st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                  st.none(), st.lists(st.integers(0, 5), max_size=3), st.binary(max_size=4))


@FUZZ
@given(columns=st.lists(st.sampled_from(list(COLUMNS) + ["not_cold", "extra"]), min_size=0, max_size=8, unique=True),
       rows=st.integers(0, 4), data=st.data())
def test_split_reader_only_raises_data_errors(tmp_path, columns, rows, data):
    frame = pd.DataFrame({c: [data.draw(cells) for _ in range(rows)] for c in columns})
    path = tmp_path / "train_ood2.pkl"
    frame.to_pickle(path)
    try:
        read_split(path)
    except DataError:
        pass


def test_a_bytes_id_is_a_data_error(tmp_path):
    """hypothesis found it: pandas reads b"0" as the number 0, which then compared as bytes with an int."""
    frame = pd.DataFrame({"uid": [b"0"], "iid": [0], "label": [0], "his": [None], "his_title": [None], "title": [None]})
    frame.to_pickle(tmp_path / "train_ood2.pkl")
    with pytest.raises(DataError):
        read_split(tmp_path / "train_ood2.pkl")


@pytest.mark.parametrize("payload, words", [
    (b"not a pickle at all", "cannot be read"),
    (pickle.dumps({"uid": [1]}), "expected a pandas DataFrame"),
    (pickle.dumps(pd.DataFrame({"uid": [1]})), "missing column"),
])
def test_bad_split_files_name_the_problem(tmp_path, payload, words):
    path = tmp_path / "test_ood2.pkl"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=words):
        read_split(path)


def test_parquet_split_reads_like_the_pickle(synthetic_dir, tmp_path):
    import shutil

    for f in synthetic_dir.glob("*.pkl"):
        shutil.copy(f, tmp_path / f.name)
    written = to_parquet(tmp_path)
    assert len(written) == 4
    from_parquet = read_split(tmp_path / "test_ood2.pkl")  # the .parquet next to it is read first
    (tmp_path / "test_ood2.parquet").unlink()
    from_pickle = read_split(tmp_path / "test_ood2.pkl")
    assert list(from_parquet["uid"]) == list(from_pickle["uid"])
    assert [list(h) for h in from_parquet["his"]] == [list(h) for h in from_pickle["his"]]
    assert list(from_parquet["title"]) == list(from_pickle["title"])
    # a broken Parquet file is a DataError, not a crash
    (tmp_path / "train_ood2.parquet").write_bytes(b"PAR1 broken")
    with pytest.raises(DataError, match="Parquet"):
        read_split(tmp_path / "train_ood2.pkl")


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tiny_llama, synthetic_dir, tmp_path,
                                                                         monkeypatch, capsys):
    from helpers import write_yaml
    from minigpt4.cli import main
    from minigpt4.llm.recommender import LLMRecommender
    from minigpt4.train.checkpoint import find_checkpoint, read_meta

    yaml_path = write_yaml(tmp_path / "nan.yaml", f"""\
model:
  llama_model: {tiny_llama}
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.0}}
datasets: {{synthetic: {{path: {synthetic_dir}}}}}
run: {{max_epoch: 3, iters_per_epoch: 2, batch_size_train: 4, valid_splits: [], test_splits: [test],
       max_eval_rows: 20, device: cpu, output_dir: {tmp_path / 'runs'}, job_id: nan}}
""")
    calls = {"n": 0}
    loss = LLMRecommender.loss

    def nan_from_step_3(self, scores, labels):
        calls["n"] += 1
        out = loss(self, scores, labels)
        return out * math.nan if calls["n"] >= 3 else out  # epoch 0 (steps 0-1) is fine

    monkeypatch.setattr(LLMRecommender, "loss", nan_from_step_3)
    with pytest.raises(SystemExit) as exc:
        main("llm", "nan", ["--cfg-path", str(yaml_path)])
    assert exc.value.code == 4
    err = capsys.readouterr().err
    assert "loss is nan" in err and "last good checkpoint" in err
    ckpt = find_checkpoint(tmp_path / "runs" / "nan")
    assert read_meta(ckpt)["epoch"] == 0
    assert not (tmp_path / "runs" / "nan" / "metrics.json").exists()
    assert np.isfinite(pd.read_json(tmp_path / "runs" / "nan" / "log.jsonl", lines=True)["train_loss"]).all()
