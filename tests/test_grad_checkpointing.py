"""run.grad_checkpointing: backward recomputes each decoder layer's activations instead of keeping them, and the
gradients (hence the trained adapter) are those of the plain path."""

import contextlib
import io

import pytest
import torch
from safetensors.torch import load_file

from helpers import encode, left_pad, make_recommender, write_yaml
from minigpt4.cli import main
from minigpt4.llm import backbone
from minigpt4.recipes import finetune_llm

PROMPTS = ["#Question: A user watched Heat. Will the user enjoy Up? #Answer:",
           "#Question: A user watched Alien, Brazil and Fargo. Will the user enjoy Big? #Answer:",
           "#Question: Will the user enjoy Casablanca? #Answer:"]


def _step(rec, ids, mask, labels):
    """One training forward and backward: (loss, the LoRA gradients by name)."""
    rec.zero_grad(set_to_none=True)
    loss = rec.loss(rec(ids, mask), labels)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in rec.named_parameters() if p.requires_grad}


def _mlp_calls(rec):
    """Counts of the forward calls of each decoder layer's MLP (a recomputed layer runs twice per step)."""
    calls = [0] * rec.causal_lm.config.num_hidden_layers
    for i, layer in enumerate(rec.causal_lm.get_decoder().layers):
        layer.mlp.register_forward_pre_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


@pytest.mark.parametrize("layers", [None, (-1,)], ids=["every_layer", "top_layer"])
def test_checkpointing_gives_the_plain_gradients(tmp_path, tiny_llama, layers):
    rec = make_recommender(tmp_path, tiny_llama, perturb_seed=3, layers=layers).train()
    ids, mask = left_pad(encode(rec.tokenizer, PROMPTS), rec.tokenizer.pad_token_id)
    labels = torch.tensor([1, 0, 1])
    calls = _mlp_calls(rec)
    plain_loss, plain = _step(rec, ids, mask, labels)
    assert calls == [1, 1]
    backbone.set_checkpointing(rec.causal_lm, True)
    calls[:] = [0, 0]
    loss, grads = _step(rec, ids, mask, labels)
    # recomputed in backward: every adapted layer, and no layer below the lowest one (backward stops there)
    assert calls == ([2, 2] if layers is None else [1, 2])
    assert torch.allclose(loss, plain_loss)
    assert plain.keys() == grads.keys() and len(grads) == (8 if layers is None else 4)
    assert all(plain[n].abs().sum() > 0 for n in plain)
    for name in plain:
        assert torch.allclose(grads[name], plain[name], rtol=1e-5, atol=1e-7), name
    backbone.set_checkpointing(rec.causal_lm, False)
    calls[:] = [0, 0]
    _step(rec, ids, mask, labels)
    assert calls == [1, 1]


def _run_yaml(d, data, out, llama):
    return write_yaml(d / "text.yaml", f"""\
model:
  llama_model: {llama}
  prompt_path: prompts/tallrec_movie.txt
  score_type: yes_minus_no
  lora_config: {{use_lora: True, r: 4, alpha: 8, target_modules: [q_proj, v_proj], dropout: 0.05}}
datasets:
  synthetic:
    path: {data}
run:
  mode: v2
  init_lr: 1e-3
  warmup_steps: 1
  max_epoch: 1
  iters_per_epoch: 2
  batch_size_train: 4
  batch_size_eval: 16
  valid_splits: []
  test_splits: [test]
  max_eval_rows: 20
  device: cpu
  output_dir: {out}
""")


@pytest.mark.slow
def test_training_with_checkpointing_trains_the_same_adapter(tmp_path, tiny_llama, synthetic_dir, monkeypatch):
    yaml = _run_yaml(tmp_path, synthetic_dir, tmp_path / "runs", tiny_llama)
    main("llm", "stage 1", ["--cfg-path", str(yaml), "--options", "run.job_id=plain"])
    switched = []

    def recording(model, on):
        switched.append(on)
        backbone.set_checkpointing(model, on)

    monkeypatch.setattr(finetune_llm, "set_checkpointing", recording)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        main("llm", "stage 1", ["--cfg-path", str(yaml), "--options", "run.job_id=ckpt", "run.grad_checkpointing=True"])
    assert switched == [True]
    assert "gradient checkpointing" in stdout.getvalue()
    assert "memory estimate" not in stdout.getvalue()  # a CPU run prints no GPU memory line
    plain, ckpt = (load_file(tmp_path / "runs" / job / "checkpoint_best" / "adapter_model.safetensors")
                   for job in ("plain", "ckpt"))
    assert plain.keys() == ckpt.keys() and plain
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], rtol=1e-5, atol=1e-7), name
