"""Stage 0: train a collaborative encoder on (uid, iid, label) rows (spec §3.8).

Adam with coupled L2 (`run.weight_decay`), BCE on train, evaluation of the *full* valid split after every
epoch, early stopping on valid AUC after `run.patience` evaluations without improvement, best state dict
saved as `rec_model.pth` (the upstream's raw state-dict format, loadable by `rec_config.pretrained_path`).

A split becomes a dict of row tensors built once: `users`, `items`, and `his` (padded history ids) only for
models with `history_len > 0`; a batch is that dict indexed by row and passed as keyword arguments.
A model with `set_graph` (LightGCN) gets the graph of the positive train rows before training.
The results name the rules that chose test_warm / test_cold (`warm_cold_rules`: run.warm_rule / run.cold_rule).
"""

import math
import time

import torch

from minigpt4.data.history import padded_history
from minigpt4.data.splits import warm_cold_rules
from minigpt4.encoders.factory import attach_graph, build_encoder
from minigpt4.metrics import evaluate_scores
from minigpt4.fileio import atomic_write


def model_inputs(model, df):
    """The keyword arguments of `model` for every row of df (row tensors), and the labels."""
    inputs = {"users": torch.tensor(df["uid"].to_numpy(), dtype=torch.long),
              "items": torch.tensor(df["iid"].to_numpy(), dtype=torch.long)}
    if getattr(model, "history_len", 0):
        inputs["his"] = padded_history(df["his"].to_numpy(), model.history_len)
    return inputs, torch.tensor(df["label"].to_numpy(), dtype=torch.float32)


def _take(inputs, idx):
    return {k: v[idx] for k, v in inputs.items()}


@torch.no_grad()
def score_rows(model, df, inputs=None, batch_size=None):
    """One score per row of df; `inputs` = model_inputs(model, df)[0] when the caller already built them."""
    model.eval()
    inputs = inputs if inputs is not None else model_inputs(model, df)[0]
    # history models hold [batch, maxlen, dim] activations: smaller chunks keep the memory bounded
    batch_size = batch_size or (4096 if "his" in inputs else 65536)
    n = len(df)
    return torch.cat([model(**_take(inputs, slice(s, s + batch_size))) for s in range(0, n, batch_size)]).numpy()


def evaluate(model, df, inputs=None):
    return evaluate_scores(df["uid"].to_numpy(), df["label"].to_numpy(), score_rows(model, df, inputs))


def pretrain(cfg, frames, run_dir, log=print):
    """frames: split name -> DataFrame (train, valid_full, test, ...). Returns (model, results)."""
    run = cfg.run
    torch.manual_seed(run.seed)
    model = build_encoder(cfg.model)
    attach_graph(model, frames["train"])
    optimizer = torch.optim.Adam(model.parameters(), lr=run.init_lr, weight_decay=run.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    inputs, labels = model_inputs(model, frames["train"])
    n = len(labels)
    # batch bounds; a last batch of one row joins the previous one (BatchNorm in DIN's Dice needs two rows)
    bounds = list(range(0, n, run.batch_size_train)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] == 1:
        del bounds[-2]
    valid_inputs = model_inputs(model, frames["valid_full"])[0]
    generator = torch.Generator().manual_seed(run.seed)
    best, best_epoch, bad = -math.inf, -1, 0
    ckpt = run_dir.path / "rec_model.pth"
    for epoch in range(run.max_epoch):
        model.train()
        start, total = time.time(), 0.0
        order = torch.randperm(n, generator=generator)
        for start_row, end_row in zip(bounds[:-1], bounds[1:]):
            idx = order[start_row:end_row]
            loss = loss_fn(model(**_take(inputs, idx)), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        valid = evaluate(model, frames["valid_full"], valid_inputs)
        record = {"epoch": epoch, "train_loss": total / n, "valid_auc": valid["auc"],
                  "valid_uauc": valid["uauc"], "beta": round(getattr(model, "beta", 0.0), 6),
                  "seconds": time.time() - start}
        if valid["auc"] > best:
            best, best_epoch, bad = valid["auc"], epoch, 0
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
        else:
            bad += 1
        record["best_epoch"] = best_epoch
        run_dir.log(record, step=epoch)
        if epoch % 10 == 0 or bad == 0:
            log(f"epoch {epoch}: loss {record['train_loss']:.4f} valid auc {valid['auc']:.4f} "
                f"uauc {valid['uauc']:.4f} beta {record['beta']}{' | best' if bad == 0 else ''}")
        if hasattr(model, "update_beta"):
            model.update_beta(epoch, cfg.model.rec_config.beta_step)
        if bad >= run.patience:
            log(f"early stop at epoch {epoch}: no better valid auc for {bad} epochs; best epoch {best_epoch}")
            break
    model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    built = {"valid_full": valid_inputs}  # its history tensor is already padded; the test splits are new
    results = {split: evaluate(model, df, built.get(split)) for split, df in frames.items() if split != "train"}
    # which rows test_warm / test_cold hold differs between upstream's scripts: name the rules beside the numbers
    rules = warm_cold_rules(cfg)
    log(f"test_warm: warm_rule {rules['warm_rule']}; test_cold: cold_rule {rules['cold_rule']}")
    return model, {"best_epoch": best_epoch, "warm_cold_rules": rules, **results}
