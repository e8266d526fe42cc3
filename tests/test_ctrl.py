"""CTRL's pieces: the fine-grained contrastive loss against a hand computation in both directions, alignment that
pulls matched pairs together, DIN's hidden layer under its output, and mean-pooled text representations that
padding does not move."""

import math

import pytest
import torch

from minigpt4.encoders.ctrl import AlignmentHeads, contrastive_loss, maxsim
from minigpt4.encoders.din import DIN


def _hand_maxsim(a, b):
    out = [[0.0] * len(b) for _ in a]
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            out[i][j] = sum(max(sum(x * y for x, y in zip(am, bn)) for bn in bj) for am in ai)
    return out


def _hand_infonce(sim, tau):
    total = 0.0
    for k, row in enumerate(sim):
        logits = [s / tau for s in row]
        top = max(logits)
        total += -(logits[k] - top - math.log(sum(math.exp(x - top) for x in logits)))
    return total / len(sim)


def test_loss_equals_a_hand_computation_in_both_directions():
    collab = torch.tensor([[[1.0, 0.0], [0.5, -1.0]],
                           [[0.0, 2.0], [1.0, 1.0]],
                           [[-1.0, 0.5], [0.2, 0.3]]])
    text = torch.tensor([[[0.5, 0.5], [1.0, -0.5]],
                         [[-0.3, 1.0], [0.0, 0.4]],
                         [[2.0, 0.1], [-1.0, -1.0]]])
    tau = 0.7
    t2c, c2t = _hand_maxsim(text.tolist(), collab.tolist()), _hand_maxsim(collab.tolist(), text.tolist())
    torch.testing.assert_close(maxsim(text, collab), torch.tensor(t2c))
    assert not torch.allclose(torch.tensor(t2c), torch.tensor(c2t).T)  # not symmetric: each way has its own
    loss, text_to_tab, tab_to_text = contrastive_loss(collab, text, tau)
    assert text_to_tab.item() == pytest.approx(_hand_infonce(t2c, tau))
    assert tab_to_text.item() == pytest.approx(_hand_infonce(c2t, tau))
    assert loss.item() == pytest.approx((_hand_infonce(t2c, tau) + _hand_infonce(c2t, tau)) / 2)


def test_alignment_lowers_the_loss_and_pulls_matched_pairs_together():
    """Two views of one latent (a collaborative vector and a 'text' vector through another random map): training
    the heads raises a matched pair's similarity above a shuffled pair's."""
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(256, 8, generator=g)
    collab = latent @ torch.randn(8, 20, generator=g) + 0.1 * torch.randn(256, 20, generator=g)
    text = latent @ torch.randn(8, 48, generator=g) + 0.1 * torch.randn(256, 48, generator=g)
    torch.manual_seed(0)
    heads = AlignmentHeads(20, 48, proj_dim=32, subspaces=4, sub_dim=8)
    opt = torch.optim.AdamW(heads.parameters(), lr=1e-2)

    def gap():
        with torch.no_grad():
            sim = maxsim(*reversed(heads(collab, text)))  # text to tabular
            return (sim.diag().mean() - sim.mean()).item()

    first, before = contrastive_loss(*heads(collab, text), 0.7)[0].item(), gap()
    for _ in range(150):
        perm = torch.randperm(256)[:64]
        loss = contrastive_loss(*heads(collab[perm], text[perm]), 0.7)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = contrastive_loss(*heads(collab, text), 0.7)[0].item()
    assert last < first - 1.0
    assert gap() > max(before, 0) + 1.0


def test_din_hidden_is_what_its_output_layer_reads():
    torch.manual_seed(0)
    din = DIN(10, 20, embedding_size=12, maxlen=4).eval()
    users, items = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    his = torch.tensor([[0, 0, 1, 2], [0, 3, 4, 5], [1, 2, 3, 4]])
    hidden = din.hidden(users, items, his)
    assert hidden.shape == (3, din.hidden_dim) == (3, 80)
    out = din.fc_layer.fc[-1]
    torch.testing.assert_close(din(users, items, his), (hidden @ out.weight.T + out.bias).squeeze(-1))


def test_reading_din_hidden_width_leaves_the_model_untouched():
    """align_ctrl sizes its heads from `hidden_dim`: no forward, so BatchNorm statistics and the RNG stay as loaded."""
    torch.manual_seed(0)
    din = DIN(10, 20, embedding_size=12, maxlen=4)  # training mode, as alignment builds it
    before = {k: v.clone() for k, v in din.state_dict().items()}
    rng = torch.get_rng_state()
    assert din.hidden_dim == 80
    assert all(torch.equal(before[k], v) for k, v in din.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


def test_mean_pooling_leaves_padding_out(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from minigpt4.llm.text_embedding import mean_pooled

    lm = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    texts = ["This is a user, who has recently watched \"Heat (1995)\".", "short", "a medium length text here"]
    together = mean_pooled(lm, tok, texts, batch_size=3)
    alone = torch.cat([mean_pooled(lm, tok, [t], batch_size=1) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    ids = tok(texts[1], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        direct = lm.get_decoder()(input_ids=ids).last_hidden_state.mean(1)
    torch.testing.assert_close(together[1:2], direct, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------------------------- the two stages, end to end
def _configs(tmp_path, llama, data):
    """ml1m_ctrl_align.yaml / ml1m_ctrl.yaml's recipes, small, on the synthetic data and the tiny Llama."""
    from helpers import write_yaml

    din = f"""\
  rec_model: DIN
  rec_config: {{embedding_size: 24, embed_size: 24, maxlen: 10, drop: 0.2}}
datasets:
  synthetic:
    path: {data}
"""
    run = f"device: cpu, output_dir: {tmp_path / 'runs'}, seed: 2023, weight_decay: 1e-4"
    align = write_yaml(tmp_path / "align.yaml", f"""\
model:
  llama_model: {llama}
  prompt_path: prompts/ctrl_movie.txt
  ctrl: {{tau: 0.7, proj_dim: 16, subspaces: 2, sub_dim: 8}}
{din}run: {{{run}, init_lr: 5e-3, max_epoch: 6, batch_size_train: 64, batch_size_eval: 16, job_id: ctrl_align}}
""")
    start = tmp_path / "runs" / "ctrl_align" / "rec_model.pth"  # the second stage starts from the aligned DIN
    tune = write_yaml(tmp_path / "ctrl.yaml", f"""\
model:
{din.replace("drop: 0.2}", f"drop: 0.2, pretrained_path: {start}}}")}\
run: {{{run}, init_lr: 1e-3, max_epoch: 2, batch_size_train: 256, job_id: ctrl}}
""")
    return align, tune


@pytest.fixture(scope="module")
def aligned(tiny_llama, synthetic_dir, tmp_path_factory):
    from minigpt4.cli import main

    tmp = tmp_path_factory.mktemp("ctrl")
    align, tune = _configs(tmp, tiny_llama, synthetic_dir)
    result = main("ctrl_align", "CTRL alignment", ["--cfg-path", str(align)])
    return {"tmp": tmp, "align": align, "tune": tune, "result": result, "run": tmp / "runs" / "ctrl_align"}


def _log(run):
    import json

    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_alignment_lowers_the_loss_and_raises_matched_pairs_over_shuffled_ones(aligned):
    log = _log(aligned["run"])
    assert [r["epoch"] for r in log] == list(range(6))
    assert log[-1]["align_loss"] < log[0]["align_loss"] - 0.05
    assert log[-1]["matched_minus_shuffled"] > log[0]["matched_minus_shuffled"]
    assert log[-1]["matched_minus_shuffled"] > 0
    assert aligned["result"]["aligned_rows"] > 0 and (aligned["run"] / "text_embeddings.pt").is_file()


def test_stage_2_starts_from_the_aligned_din_and_loads_no_language_model(aligned, monkeypatch):
    from minigpt4.cli import main
    from minigpt4.encoders import factory
    from minigpt4.llm import backbone
    from minigpt4.recipes import pretrain_encoder

    started = {}
    real = factory.load_pretrained_encoder

    def recording(model_cfg, counts=None):
        model = real(model_cfg, counts)
        started.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return model

    def no_language_model(*args, **kwargs):
        raise AssertionError("CTRL's second stage loaded a language model")

    monkeypatch.setattr(pretrain_encoder, "load_pretrained_encoder", recording)
    monkeypatch.setattr(backbone, "load_backbone", no_language_model)
    monkeypatch.setattr(backbone, "load_tokenizer", no_language_model)
    result = main("collab", "stage 0", ["--cfg-path", str(aligned["tune"])])
    aligned_state = torch.load(aligned["run"] / "rec_model.pth", weights_only=True)
    assert started.keys() == aligned_state.keys()
    for key, tensor in aligned_state.items():
        assert torch.equal(started[key], tensor), key
    assert 0 <= result["test"]["auc"] <= 1 and result["test_cold"]["rows"] > 0


def test_a_killed_alignment_resumes_where_it_stopped(aligned, tiny_llama, synthetic_dir, tmp_path, monkeypatch):
    """Killed after its third epoch's resume point, then resumed: the same aligned weights as the run that was not
    stopped (the text view is not computed again)."""
    from minigpt4.cli import main
    from minigpt4.recipes import align_ctrl

    align, _ = _configs(tmp_path, tiny_llama, synthetic_dir)
    real_save = align_ctrl._save_point

    def save_then_die(run_path, state):
        real_save(run_path, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(align_ctrl, "_save_point", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main("ctrl_align", "CTRL alignment", ["--cfg-path", str(align)])
    monkeypatch.setattr(align_ctrl, "_save_point", real_save)
    monkeypatch.setattr(align_ctrl, "_text_view", lambda cfg, rows: pytest.fail("the text view was computed again"))
    run = tmp_path / "runs" / "ctrl_align"
    assert not (run / "rec_model.pth").exists()
    main("ctrl_align", "CTRL alignment", ["--cfg-path", str(run / "config.yaml"), "--options",
                                          f"run.resume_ckpt_path={run}"])
    assert [r["epoch"] for r in _log(run)] == list(range(6))
    resumed = torch.load(run / "rec_model.pth", weights_only=True)
    straight = torch.load(aligned["run"] / "rec_model.pth", weights_only=True)
    for key, tensor in straight.items():
        torch.testing.assert_close(resumed[key], tensor, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("option, message", [
    ("model.ctrl.tau=0", "model.ctrl.tau must be > 0, got 0"),
    ("model.llama_model=/nonexistent/plm", "model.llama_model = '/nonexistent/plm'"),
    ("model.rec_model=MF", "CTRL's alignment (align_ctrl.py) aligns a DIN"),
])
def test_bad_alignment_inputs_exit_2_before_torch_is_imported(tmp_path, option, message):
    from test_errors_fast import run_script

    data = tmp_path / "data"  # the split files the checks before the backbone's look for
    data.mkdir()
    for name in ("train_ood2.pkl", "valid_ood2.pkl", "valid_small_ood2.pkl", "test_ood2.pkl"):
        (data / name).write_bytes(b"")
    code, err, torch_loaded = run_script("align_ctrl.py", "--cfg-path", "train_configs/ml100k_ctrl_align.yaml",
                                         "--options", option, f"run.output_dir={tmp_path}",
                                         f"datasets.movie_ood.path={data}")
    assert code == "2" and message in err, err
    assert not torch_loaded


def test_a_missing_aligned_din_exits_2_before_torch_is_imported(tmp_path):
    from test_errors_fast import run_script

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train_ood2.pkl", "valid_ood2.pkl", "valid_small_ood2.pkl", "test_ood2.pkl"):
        (data / name).write_bytes(b"")
    code, err, torch_loaded = run_script("pretrain_collab.py", "--cfg-path", "train_configs/ml100k_ctrl.yaml",
                                         "--options", f"run.output_dir={tmp_path}", f"datasets.movie_ood.path={data}")
    assert code == "2" and "model.rec_config.pretrained_path" in err and "ctrl_align/rec_model.pth" in err, err
    assert not torch_loaded


def test_alignment_refuses_several_processes(aligned, monkeypatch, capsys):
    from minigpt4.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit:
        main("ctrl_align", "CTRL alignment", ["--cfg-path", str(aligned["align"]), "--options", "run.job_id=twice"])
    assert exit.value.code == 2 and "align_ctrl.py runs in one process" in capsys.readouterr().err
