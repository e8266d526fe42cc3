"""CoLLM's collaborative encoders for stage 0 (spec §3.1, §3.3-3.5, §3.8): MF, LightGCN, SASRec, DIN.

Shapes and gradient flow, upstream state-dict keys, LightGCN's graph normalisation, SASRec's causal mask and
padding, DIN's zero attention on padding, the padded-history builder, config checks, and one end-to-end
`pretrain_collab` run per model on tiny synthetic data.
"""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from helpers import write_yaml
from minigpt4 import registry
from minigpt4.cli import main
from minigpt4.config import ConfigError, load_config
from minigpt4.data.history import padded_history
from minigpt4.encoders.din import DIN
from minigpt4.encoders.lightgcn import LightGCN, bipartite_graph
from minigpt4.encoders.mf import MF
from minigpt4.encoders.sasrec import SASRec
from minigpt4.train.collab import evaluate, model_inputs, score_rows

U, I, L = 7, 11, 6  # users, items (id 0 = padding in both), history length


def _batch(seed=0, b=5):
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(1, U, (b,), generator=g)
    items = torch.randint(1, I, (b,), generator=g)
    his = torch.randint(1, I, (b, L), generator=g)
    his[0, :4] = 0  # left padding of various lengths
    his[1, :1] = 0
    his[2] = 0  # empty history
    return users, items, his


def _models():
    torch.manual_seed(0)
    lgcn = LightGCN(U, I, embed_size=8, gcn_layers=2)
    lgcn.set_graph(bipartite_graph([1, 2, 2, 3, 5], [1, 1, 4, 7, 9], [1, 1, 1, 1, 0], U, I))
    return {"MF": MF(U, I, 8), "lightgcn": lgcn,
            "sasrec": SASRec(I, hidden_units=8, maxlen=L, num_blocks=2, num_heads=2),
            "DIN": DIN(U, I, embedding_size=12, maxlen=L)}


UPSTREAM_KEYS = {
    "MF": {"user_embedding.weight", "item_embedding.weight"},
    "lightgcn": {"embedding_user.weight", "embedding_item.weight"},
}


def _call(model, users, items, his):
    return model(users, items, his) if getattr(model, "history_len", 0) else model(users, items)


@pytest.mark.parametrize("name", ["MF", "lightgcn", "sasrec", "DIN"])
def test_registered_forward_shape_and_gradients(name):
    model = _models()[name]
    assert registry.get("rec_model", name) is type(model)
    model.train()
    users, items, his = _batch()
    score = _call(model, users, items, his)
    assert score.shape == (5,) and score.dtype == torch.float32 and torch.isfinite(score).all()
    torch.nn.functional.binary_cross_entropy_with_logits(score, torch.ones(5)).backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    # every trainable tensor gets a gradient, and the rows of the batch's ids get a non-zero one
    missing = [k for k, g in grads.items() if g is None]
    assert not missing, missing
    table = {"MF": "item_embedding.weight", "lightgcn": "embedding_item.weight", "sasrec": "item_emb.weight",
             "DIN": "embed_layers.1.weight"}[name]
    assert grads[table][items].abs().sum(-1).gt(0).all()
    if name in UPSTREAM_KEYS:
        assert set(model.state_dict()) == UPSTREAM_KEYS[name]


def test_state_dict_keys_sasrec_and_din():
    sas, din = _models()["sasrec"], _models()["DIN"]
    keys = set(sas.state_dict())
    for k in ("item_emb.weight", "pos_emb.weight", "attention_layernorms.1.weight", "attention_layers.0.in_proj_weight",
              "attention_layers.0.in_proj_bias", "attention_layers.1.out_proj.weight", "forward_layernorms.0.bias",
              "forward_layers.1.conv1.weight", "forward_layers.0.conv2.bias", "last_layernorm.weight"):
        assert k in keys, k
    assert all(k.split(".")[0] in {"item_emb", "pos_emb", "attention_layernorms", "attention_layers",
                                   "forward_layernorms", "forward_layers", "last_layernorm"} for k in keys)
    keys = set(din.state_dict())
    for k in ("embed_layers.0.weight", "embed_layers.1.weight", "sequence_embed_layers.0.weight",
              "attn.local_att.fc1.fc.0.weight", "attn.local_att.fc1.fc.1.alpha", "attn.local_att.fc2.weight",
              "fc_layer.fc.0.weight", "fc_layer.fc.1.bn.running_mean"):
        assert k in keys, k
    assert din.state_dict()["embed_layers.0.weight"].shape == (U, 4)  # emb_dim = embedding_size // 3


def test_mf_is_dot_product_and_padding_row_zero():
    mf = _models()["MF"]
    u, i = torch.tensor([1, 3]), torch.tensor([2, 10])
    expect = (mf.user_embedding.weight[u] * mf.item_embedding.weight[i]).sum(-1)
    torch.testing.assert_close(mf(u, i), expect)
    assert mf.user_embedding.weight[0].abs().sum() == 0 and mf.item_embedding.weight[0].abs().sum() == 0


def test_lightgcn_graph_matches_dense_normalisation():
    users = [1, 2, 2, 3, 1, 4, 4]
    items = [1, 1, 2, 3, 1, 2, 3]
    labels = [1, 1, 1, 1, 1, 0, 0]  # (1,1) twice -> weight 2; user 4's rows are negative -> no edges
    n_u, n_i = 5, 4
    graph = bipartite_graph(users, items, labels, n_u, n_i)
    assert graph.is_sparse and graph.shape == (n_u + n_i, n_u + n_i)
    a = np.zeros((n_u + n_i, n_u + n_i))
    for u, i, y in zip(users, items, labels):
        if y:
            a[u, n_u + i] += 1
            a[n_u + i, u] += 1
    d = a.sum(1)
    inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0)
    np.testing.assert_allclose(graph.to_dense().numpy(), inv[:, None] * a * inv[None, :], rtol=1e-6)
    dense = graph.to_dense()
    assert dense[1, n_u + 1] == pytest.approx(2 / np.sqrt(2 * 3))  # duplicates summed: deg(u1)=2, deg(i1)=3
    assert dense[4].abs().sum() == 0 and dense[:, 4].abs().sum() == 0  # negatives add no edge
    assert dense.diagonal().abs().sum() == 0  # no self-loops
    torch.testing.assert_close(dense, dense.T)
    # only positive rows matter: dropping the negative rows gives the same graph
    same = bipartite_graph(users[:5], items[:5], labels[:5], n_u, n_i).to_dense()
    torch.testing.assert_close(dense, same)


def test_lightgcn_propagation_is_mean_of_layers():
    model = _models()["lightgcn"]
    a = model.graph.to_dense()
    e0 = torch.cat([model.embedding_user.weight, model.embedding_item.weight])
    e1 = a @ e0
    e2 = a @ e1
    out = (e0 + e1 + e2) / 3
    all_u, all_i = model.computer()
    torch.testing.assert_close(all_u, out[:U])
    torch.testing.assert_close(all_i, out[U:])
    u, i = torch.tensor([1, 2]), torch.tensor([1, 4])
    torch.testing.assert_close(model(u, i), (out[u] * out[U + i]).sum(-1))
    with pytest.raises(RuntimeError, match="set_graph"):
        LightGCN(U, I, 8)(u, i)
    with pytest.raises(ValueError, match="expected"):
        LightGCN(U, I, 8).set_graph(bipartite_graph([1], [1], [1], U + 1, I))


def test_sasrec_causal_mask():
    model = _models()["sasrec"].eval()
    _, _, his = _batch()
    base = model.log_feats(his)
    changed = his.clone()
    changed[3:, 4] = (changed[3:, 4] % (I - 1)) + 1  # another real item at position 4
    out = model.log_feats(changed)
    torch.testing.assert_close(out[:, :4], base[:, :4])  # earlier positions cannot see position 4
    assert not torch.allclose(out[3:, 4:], base[3:, 4:])  # position 4 and later do


def test_sasrec_padding_does_not_affect_score():
    torch.manual_seed(1)
    short = SASRec(I, hidden_units=8, maxlen=4, num_blocks=2, num_heads=2).eval()
    long = SASRec(I, hidden_units=8, maxlen=9, num_blocks=2, num_heads=2).eval()
    long.load_state_dict({k: v for k, v in short.state_dict().items() if k != "pos_emb.weight"}, strict=False)
    with torch.no_grad():
        long.pos_emb.weight[5:] = short.pos_emb.weight  # the real items sit at the same (last) positions
        for layer in long.attention_layers:  # a large key/value bias would leak through any attended padding
            layer.in_proj_bias.normal_(0, 3.0)
        for s_layer, l_layer in zip(short.attention_layers, long.attention_layers):
            s_layer.in_proj_bias.copy_(l_layer.in_proj_bias)
    items = torch.tensor([3, 5])
    his_short = torch.tensor([[0, 2, 7, 4], [1, 2, 3, 4]])
    his_long = torch.cat([torch.zeros(2, 5, dtype=torch.long), his_short], dim=1)
    torch.testing.assert_close(long(None, items, his_long), short(None, items, his_short))
    # the padding row's item embedding and the padded positions' embeddings play no part
    with torch.no_grad():
        long.pos_emb.weight[:5].normal_()  # positions 0-4 are padding in both rows
    torch.testing.assert_close(long(None, items, his_long), short(None, items, his_short))
    # an all-padding history gives a finite score
    assert torch.isfinite(short(None, items, torch.zeros(2, 4, dtype=torch.long))).all()


def test_din_padding_gets_zero_attention():
    model = _models()["DIN"].eval()
    users, items, his = _batch()
    w = model.attn.weights(model.embed_layers[1](items), model.sequence_embed_layers[0](his), his)
    assert w.shape == (5, L)
    assert (w[his == 0] == 0).all() and (w[his != 0] != 0).all()
    base = model(users, items, his)
    with torch.no_grad():
        model.sequence_embed_layers[0].weight[0].normal_(0, 5.0)  # the padding id's history vector
    torch.testing.assert_close(model(users, items, his), base)
    assert model.all_encode(users, items, his).shape == (5, 12)
    assert model.item_encoder(items).shape == (5, 12)


def test_padded_history_keeps_last_ids_left_padded():
    his = [[0], [0, 5], [0, 1, 2, 3, 4, 5, 6], np.array([0, 9, 8])]
    out = padded_history(his, 4)
    assert out.dtype == torch.long
    assert out.tolist() == [[0, 0, 0, 0], [0, 0, 0, 5], [3, 4, 5, 6], [0, 0, 9, 8]]


def test_model_inputs_only_history_models_get_his(synthetic_dir):
    import pandas as pd

    df = pd.read_pickle(synthetic_dir / "test_ood2.pkl")
    models = _models()
    rc = OmegaConf.create({"item_num": int(max(df["iid"].max(), max(max(h) for h in df["his"]))) + 1})
    sas = SASRec(rc.item_num, hidden_units=8, maxlen=5)
    inputs, labels = model_inputs(sas, df)
    assert set(inputs) == {"users", "items", "his"} and inputs["his"].shape == (len(df), 5)
    assert labels.shape == (len(df),)
    assert set(model_inputs(models["MF"], df)[0]) == {"users", "items"}
    # chunked scoring equals one pass
    full = score_rows(sas, df, batch_size=len(df))
    np.testing.assert_allclose(score_rows(sas, df, batch_size=7), full, rtol=1e-5, atol=1e-6)
    # a split with no rows (a small dataset's test_cold) has no scores and NaN metrics instead of an error
    empty = df.iloc[:0]
    assert score_rows(sas, empty).shape == (0,)
    result = evaluate(models["MF"], empty)
    assert result["rows"] == 0 and np.isnan(result["auc"]) and np.isnan(result["uauc"])


# ------------------------------------------------------------------------------------------------ config checks
def _cfg(tmp_path, rec_model, rec_config):
    return write_yaml(tmp_path / "c.yaml", f"""\
model:
  rec_model: {rec_model}
  rec_config: {rec_config}
datasets:
  synthetic:
    path: {tmp_path}/data/
run:
  device: cpu
""")


@pytest.mark.parametrize("rec_model, rec_config, message", [
    ("lightgcn", "{embedding_size: 32, embed_size: 64}", "embed_size=64 must equal"),
    ("lightgcn", "{embedding_size: 64, embed_size: 64, init_emb: 0}", "init_emb > 0"),
    ("sasrec", "{embedding_size: 32, hidden_units: 64}", "hidden_units=64 must equal"),
    ("sasrec", "{embedding_size: 64, hidden_units: 64, num_heads: 3}", "num_heads"),
    ("sasrec", "{embedding_size: 64, hidden_units: 64, dropout_rate: 1.5}", "dropout_rate"),
    ("sasrec", "{embedding_size: 64, hidden_units: 64, maxlen: 0}", "maxlen must be >= 1"),
    ("DIN", "{embedding_size: 64}", "multiple of 3"),
    ("DIN", "{embedding_size: 192, num_heds: 2}", "did you mean 'num_heads'"),
])
def test_config_errors_name_the_key(tmp_path, rec_model, rec_config, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_cfg(tmp_path, rec_model, rec_config))


def test_upstream_collm_rec_configs_load(tmp_path):
    # the rec_config blocks of CoLLM's ML-1M LightGCN/SASRec/DIN YAML files (spec §8, table C)
    for rec_model, rc in [
        ("lightgcn", "{embedding_size: 64, dataset: ml1m, gcn_layers: 2, keep_prob: 0.6, A_n_fold: 100, "
                     "A_split: False, dropout: False, pretrain: 0, init_emb: 1e-1, embed_size: 64}"),
        ("sasrec", "{embedding_size: 64, dataset: ml1m, embed_size: 64, hidden_units: 64, num_blocks: 2, num_heads: 4, "
                   "dropout_rate: 0.2, l2_emb: 1e-4, maxlen: 25}"),
        ("DIN", "{embedding_size: 192, dataset: ml1m, embed_size: 192, drop: 0.2, l2_emb: 1e-4, maxlen: 10}"),
    ]:
        cfg = load_config(_cfg(tmp_path, rec_model, rc))
        assert cfg.model.rec_model == rec_model


# ------------------------------------------------------------------------------------------------- end to end
E2E = {
    "MF": "{embedding_size: 16}",
    "lightgcn": "{embedding_size: 16, embed_size: 16, gcn_layers: 2}",
    "sasrec": "{embedding_size: 16, hidden_units: 16, maxlen: 8, num_blocks: 1, num_heads: 2, dropout_rate: 0.1}",
    "DIN": "{embedding_size: 24, maxlen: 8}",
}


@pytest.mark.parametrize("rec_model", list(E2E))
def test_pretrain_collab_end_to_end(rec_model, synthetic_dir, tmp_path):
    out = tmp_path / "runs"
    cfg = write_yaml(tmp_path / f"{rec_model}.yaml", f"""\
model:
  rec_model: {rec_model}
  rec_config: {E2E[rec_model]}
datasets:
  synthetic:
    path: {synthetic_dir}
run:
  init_lr: 1e-2
  weight_decay: 1e-4
  batch_size_train: 128
  max_epoch: 3
  patience: 10
  seed: 2023
  device: cpu
  output_dir: {out}
  job_id: {rec_model}
""")
    results = main("collab", "stage 0", ["--cfg-path", str(cfg)])
    run = out / rec_model
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("valid_full", "test", "test_warm", "test_cold"):
        assert 0.0 <= metrics[split]["auc"] <= 1.0 and np.isfinite(metrics[split]["uauc"]), split
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [rec["epoch"] for rec in log] == [0, 1, 2]
    assert metrics["valid_full"]["auc"] == pytest.approx(max(rec["valid_auc"] for rec in log))
    assert metrics["best_epoch"] == results["best_epoch"]
    # the saved state dict loads strictly into a fresh encoder built from the config and reproduces the test AUC
    state = torch.load(run / "rec_model.pth", map_location="cpu", weights_only=True)
    from minigpt4.config import load_config as load
    from minigpt4.encoders.factory import attach_graph, build_encoder
    from minigpt4.tasks import RecTask
    from minigpt4.train.collab import evaluate

    c = load(cfg)
    task = RecTask(c)
    model = build_encoder(c.model, task.id_counts())
    model.load_state_dict(state)
    attach_graph(model, task.rows("train"))
    assert evaluate(model, task.rows("test"))["auc"] == pytest.approx(metrics["test"]["auc"], abs=1e-6)
    assert all("graph" not in k for k in state)
    # the loop trains the model: the train loss falls
    assert log[-1]["train_loss"] < log[0]["train_loss"], [rec["train_loss"] for rec in log]


def test_unknown_rec_model_is_a_clear_error(synthetic_dir, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "bad.yaml", f"""\
model:
  rec_model: GRU4Rec
datasets:
  synthetic:
    path: {synthetic_dir}
run:
  output_dir: {tmp_path / 'runs'}
""")
    with pytest.raises(SystemExit) as exc:
        main("collab", "stage 0", ["--cfg-path", str(cfg)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "model.rec_model" in err and "GRU4Rec" in err and "sasrec" in err
    assert not (tmp_path / "runs").exists()


def test_sasrec_feed_forward_equals_kernel_one_convolution():
    from minigpt4.encoders.sasrec import PointWiseFeedForward

    torch.manual_seed(0)
    ffn = PointWiseFeedForward(8, 0.0)
    x = torch.randn(3, 5, 8)
    conv = ffn.conv2(torch.relu(ffn.conv1(x.transpose(1, 2)))).transpose(1, 2)
    torch.testing.assert_close(ffn(x), x + conv)
