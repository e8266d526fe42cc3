"""Stage 0: train a collaborative encoder on (uid, iid, label) rows (spec §3.8).

Adam with coupled L2 (`run.weight_decay`), BCE on train, evaluation of the *full* valid split after every
epoch, early stopping on valid AUC after `run.patience` evaluations without improvement, best state dict
saved as `rec_model.pth` (the upstream's raw state-dict format, loadable by `rec_config.pretrained_path`).
"""

import math
import time

import numpy as np
import torch

from minigpt4 import registry
from minigpt4.metrics import evaluate_scores
from minigpt4.train.run_dir import atomic_write


def _tensors(df):
    return (torch.tensor(df["uid"].to_numpy(), dtype=torch.long),
            torch.tensor(df["iid"].to_numpy(), dtype=torch.long),
            torch.tensor(df["label"].to_numpy(), dtype=torch.float32))


def build_encoder(model_cfg):
    cls = registry.get("rec_model", model_cfg.rec_model)
    return cls.from_config(model_cfg.rec_config)


@torch.no_grad()
def score_rows(model, df, batch_size=65536):
    model.eval()
    u, i, _ = _tensors(df)
    return torch.cat([model(u[s:s + batch_size], i[s:s + batch_size]) for s in range(0, len(u), batch_size)]).numpy()


def evaluate(model, df):
    return evaluate_scores(df["uid"].to_numpy(), df["label"].to_numpy(), score_rows(model, df))


def pretrain(cfg, frames, run_dir, log=print):
    """frames: split name -> DataFrame (train, valid_full, test, ...). Returns (model, results)."""
    run = cfg.run
    torch.manual_seed(run.seed)
    model = build_encoder(cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=run.init_lr, weight_decay=run.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    users, items, labels = _tensors(frames["train"])
    generator = torch.Generator().manual_seed(run.seed)
    best, best_epoch, bad = -math.inf, -1, 0
    ckpt = run_dir.path / "rec_model.pth"
    for epoch in range(run.max_epoch):
        model.train()
        start, total = time.time(), 0.0
        order = torch.randperm(len(users), generator=generator)
        for s in range(0, len(order), run.batch_size_train):
            idx = order[s:s + run.batch_size_train]
            loss = loss_fn(model(users[idx], items[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        valid = evaluate(model, frames["valid_full"])
        record = {"epoch": epoch, "train_loss": total / len(order), "valid_auc": valid["auc"],
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
    results = {split: evaluate(model, df) for split, df in frames.items() if split != "train"}
    return model, {"best_epoch": best_epoch, **results}
