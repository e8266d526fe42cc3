"""CTRL's first stage (align_ctrl.py): align a collaborative model with a language model's view of the same samples
(Li et al., arXiv 2306.02841 v4, section 4; the losses: minigpt4/encoders/ctrl.py). Its second stage is the
collaborative model's own stage-0 recipe started from the aligned weights (`<ds>_ctrl.yaml`: the DIN config with
`model.rec_config.pretrained_path` on this run's `rec_model.pth`), so CTRL minus DIN is the alignment alone.

Read top to bottom: config -> data -> text view -> models -> loop -> files.
- data: the train rows aligned (`run.max_train_rows`: a fixed sample of whole users, 0 = all), each written as
  text by `model.prompt_path` (prompts/ctrl_*.txt: the user's liked titles and the target title, never the label).
- text view: the frozen backbone's (`model.llama_model`) mean-pooled last hidden states of each text, computed
  once and kept in `text_embeddings.pt`; the backbone is then let go. The paper fine-tunes its PLM during the
  alignment; frozen, this stage costs one scoring pass plus the collaborative model's epochs (docs/DIFFERENCES.md).
- models: the collaborative model (`model.rec_model`, DIN) from its seeded initialisation, and the projection and
  sub-space heads (`model.ctrl`); the representation aligned is the layer under the model's output (`hidden`).
- loop: AdamW (`run.init_lr`, `run.weight_decay`) over shuffled batches of `run.batch_size_train` rows (in-batch
  negatives) for `run.max_epoch` epochs; after every epoch the loss and the agreement of matched pairs over
  shuffled ones on a fixed probe batch are logged, and a resume point is written.
- files: `{run.output_dir}/{job_id}/`: config.yaml, log.jsonl, text_embeddings.pt, `rec_model.pth` (the aligned
  model's state dict, the format stage 0 writes), `ctrl_heads.pth`, metrics.json, resume/.
"""

import os
import time
from pathlib import Path

import torch

from minigpt4.config import ConfigError
from minigpt4.encoders.ctrl import AlignmentHeads, contrastive_loss, maxsim
from minigpt4.encoders.factory import build_encoder
from minigpt4.fileio import atomic_text, atomic_write
from minigpt4.precision import resolve_precision
from minigpt4.prompting import build_prompts, model_prompt
from minigpt4.recipes.derived import derive_collab, pick_device, saved_config, seed_everything
from minigpt4.tasks import RecTask
from minigpt4.train.collab import batch_bounds, model_inputs, take
from minigpt4.train.eta import duration
from minigpt4.train.run_dir import RunDir

PROBE_ROWS = 512  # the fixed batch whose matched-over-shuffled agreement is logged after every epoch


def main(cfg, stage):
    """Align `model.rec_model` with `model.llama_model`'s view of the train rows; returns metrics.json's content."""
    # ------------------------------------------------------------------------------------------------- config
    run, heads_cfg = cfg.run, cfg.model.ctrl
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every process would write the same run directory
        raise ConfigError("align_ctrl.py runs in one process (its DIN and heads are small; the text view is one "
                          "scoring pass): start it with python, not torchrun --nproc-per-node > 1")
    seed_everything(run.seed)
    # a resumed run continues from its newest resume point (written after every epoch)
    state = torch.load(resume_point(run.resume_ckpt_path), weights_only=False) if run.resume_ckpt_path else None
    # --------------------------------------------------------------------------------------------------- data
    task = RecTask(cfg)
    d = derive_collab(cfg, task, None if state is None else state["epoch"])
    rows = task.sampled_rows("train")
    run_dir = RunDir(d.run_path, saved_config(cfg, d), True, d.resume_step)
    print(f"run directory: {run_dir.path}; aligning {cfg.model.rec_model} with {cfg.model.llama_model} on "
          f"{len(rows)} train rows ({rows['uid'].nunique()} users)")
    # ---------------------------------------------------------------------------------------------- text view
    cache = run_dir.path / "text_embeddings.pt"
    if cache.is_file():
        text = torch.load(cache, weights_only=True)
    else:
        text = _text_view(cfg, rows)
        atomic_write(cache, lambda tmp: torch.save(text, tmp))
    # -------------------------------------------------------------------------------------------------- models
    torch.manual_seed(run.seed)
    model = build_encoder(cfg.model, d.counts)
    inputs = model_inputs(model, rows)[0]
    heads = AlignmentHeads(model.hidden_dim, text.shape[1], heads_cfg.proj_dim, heads_cfg.subspaces, heads_cfg.sub_dim)
    params = [*model.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(params, lr=run.init_lr, weight_decay=run.weight_decay)
    generator = torch.Generator().manual_seed(run.seed)
    first_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        heads.load_state_dict(state["heads"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        first_epoch = state["epoch"] + 1
        print(f"resumed after epoch {state['epoch']}")
    probe = torch.randperm(len(rows), generator=torch.Generator().manual_seed(run.seed + 1))[:PROBE_ROWS]
    # --------------------------------------------------------------------------------------------------- loop
    start = time.time()
    record = None
    for epoch in range(first_epoch, run.max_epoch):
        model.train()
        heads.train()
        order = torch.randperm(len(rows), generator=generator)
        total = t2c_total = c2t_total = 0.0
        for first, end in batch_bounds(len(rows), run.batch_size_train):
            idx = order[first:end]
            loss, text_to_tab, tab_to_text = contrastive_loss(*heads(model.hidden(**take(inputs, idx)), text[idx]),
                                                              heads_cfg.tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            t2c_total += text_to_tab.item() * len(idx)
            c2t_total += tab_to_text.item() * len(idx)
        record = {"epoch": epoch, "align_loss": total / len(rows), "text_to_tab_loss": t2c_total / len(rows),
                  "tab_to_text_loss": c2t_total / len(rows), **agreement(model, heads, inputs, text, probe),
                  "seconds": time.time() - start}
        run_dir.log(record, step=epoch)
        print(f"epoch {epoch}: loss {record['align_loss']:.4f} (text->tab {record['text_to_tab_loss']:.4f}, "
              f"tab->text {record['tab_to_text_loss']:.4f}); matched - shuffled similarity "
              f"{record['matched_minus_shuffled']:.3f} | {duration(time.time() - start)} so far")
        _save_point(run_dir.path, {"epoch": epoch, "model": model.state_dict(), "heads": heads.state_dict(),
                                   "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                                   "rng": torch.get_rng_state()})
    # -------------------------------------------------------------------------------------------------- files
    atomic_write(run_dir.path / "rec_model.pth", lambda tmp: torch.save(model.state_dict(), tmp))
    atomic_write(run_dir.path / "ctrl_heads.pth", lambda tmp: torch.save(heads.state_dict(), tmp))
    results = {"aligned_rows": len(rows), "epochs": run.max_epoch, "text_dim": int(text.shape[1]),
               "final": record if record is not None else {}}
    run_dir.write_json("metrics.json", results)
    print(f"finished: {run.max_epoch} epochs of alignment on {len(rows)} rows. Aligned encoder: "
          f"{run_dir.path / 'rec_model.pth'} (the CTRL config's model.rec_config.pretrained_path)")
    run_dir.close()
    return results


def _text_view(cfg, rows):
    """Each row as text through the frozen backbone, mean-pooled; the backbone is loaded only here."""
    from minigpt4.llm.backbone import load_backbone
    from minigpt4.llm.text_embedding import mean_pooled

    device = pick_device(cfg, 0)
    precision = resolve_precision(cfg.run, device)
    print(precision.describe())
    texts = build_prompts(rows, model_prompt(cfg.model))
    lm, tokenizer = load_backbone(cfg.model.llama_model, precision.dtype, device=device)
    return mean_pooled(lm.eval(), tokenizer, texts, cfg.run.batch_size_eval, precision.autocast())


@torch.no_grad()
def agreement(model, heads, inputs, text, probe):
    """How much closer matched pairs are than other pairs of the probe batch: the mean maxsim (text to tabular)
    of a row with its own text minus its mean with the batch's other texts."""
    model.eval()
    heads.eval()
    collab, words = heads(model.hidden(**take(inputs, probe)), text[probe])
    sim = maxsim(words, collab)
    n = sim.shape[0]
    matched = sim.diag().mean().item()
    shuffled = ((sim.sum() - sim.diag().sum()) / (n * n - n)).item() if n > 1 else float("nan")
    return {"matched_similarity": matched, "shuffled_similarity": shuffled,
            "matched_minus_shuffled": matched - shuffled}


def _save_point(run_path, state):
    """resume/epoch_<N>.pt, then resume/latest names it (the previous point stays usable until then)."""
    root = run_path / "resume"
    root.mkdir(exist_ok=True)
    name = f"epoch_{state['epoch']}.pt"
    atomic_write(root / name, lambda tmp: torch.save(state, tmp))
    atomic_text(root / "latest", name + "\n")
    for old in root.glob("epoch_*.pt"):
        if old.name != name:
            old.unlink()


def resume_point(run_path):
    """The state file `resume/latest` of an alignment run directory names."""
    latest = Path(run_path) / "resume" / "latest"
    if not latest.is_file():
        raise ConfigError(f"run.resume_ckpt_path = {run_path!r}: no resume point ({latest} is missing); an "
                          "alignment run writes one after each epoch: start a new run instead")
    return latest.parent / latest.read_text().strip()
