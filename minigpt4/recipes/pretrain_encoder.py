"""Stage 0 (pretrain_collab.py): train a collaborative encoder on (uid, iid, label) rows. The binary encoder
(`rec_model: hash`) gives BinLLM its codes; MF, LightGCN, SASRec and DIN give CoLLM its slot vectors.

Read top to bottom: config -> data -> model -> loop -> evaluation -> files.
- config: `cfg` is read-only; what the run derives (user / item counts, job id) is a frozen `Derived`.
- model: `model.rec_model` from its seeded initialisation, or from `model.rec_config.pretrained_path` when it is
  set (CTRL's second stage starts the DIN from the weights its alignment wrote).
- loop: Adam with coupled L2 (`run.weight_decay`) and BCE over shuffled batches of train; after every epoch the
  *full* valid split is scored and the best state dict kept; early stop after `run.patience` epochs without a
  better valid AUC. The binary encoder's `beta` (how often a bit is binary, not tanh) grows by `beta_step`.
- files: `{run.output_dir}/{job_id}/`: config.yaml, log.jsonl, `rec_model.pth` (the best epoch's raw state dict,
  the upstream's format, read by `model.rec_config.pretrained_path`), metrics.json (valid_full and every test
  split, with the warm / cold rules that chose test_warm / test_cold), predictions_<split>.csv (every scored row).
"""

import time

import torch

from minigpt4.config import is_set
from minigpt4.data.splits import warm_cold_rules
from minigpt4.encoders.factory import attach_graph, build_encoder, load_pretrained_encoder
from minigpt4.fileio import atomic_write
from minigpt4.metrics import evaluate_scores
from minigpt4.recipes.derived import derive_collab, saved_config, seed_everything
from minigpt4.tasks import RecTask
from minigpt4.train import distributed as dist
from minigpt4.train.collab import batch_bounds, evaluate, model_inputs, score_rows, take
from minigpt4.train.eta import duration
from minigpt4.train.run_dir import RunDir
from minigpt4.train.selection import Selection


def main(cfg, stage):
    """Train `model.rec_model` as `cfg` (read-only) says; `stage`: its entry in minigpt4/stages.py, whose splits are
    train, the valid split of model selection, then the scored ones. Returns metrics.json's content."""
    # ------------------------------------------------------------------------------------------------- config
    run = cfg.run
    dist.init(run.device, run.dist_timeout_minutes)
    seed_everything(run.seed)
    # --------------------------------------------------------------------------------------------------- data
    task = RecTask(cfg)  # the dataset's splits as rows
    d = derive_collab(cfg, task)  # user / item counts, job id; checks rec_model and that the run directory is new
    splits = stage.split_names(run)  # train, valid_full, test, test_warm, test_cold
    frames = {s: task.rows(s) for s in splits}
    run_dir = RunDir(d.run_path, saved_config(cfg, d), dist.is_main())
    print(f"run directory: {run_dir.path}; {cfg.model.rec_model} on {len(frames['train'])} train rows, "
          f"{d.user_num} users / {d.item_num} items")
    # -------------------------------------------------------------------------------------------------- model
    torch.manual_seed(run.seed)
    # from its seeded initialisation, or from given weights (CTRL's second stage: the aligned model), loaded strictly
    start = is_set(cfg.model.rec_config.pretrained_path)
    model = load_pretrained_encoder(cfg.model, d.counts) if start else build_encoder(cfg.model, d.counts)
    if start:
        print(f"starting from {cfg.model.rec_config.pretrained_path} (model.rec_config.pretrained_path)")
    attach_graph(model, frames["train"])  # LightGCN propagates over the positive train rows
    inputs, labels = model_inputs(model, frames["train"])
    valid_inputs = model_inputs(model, frames["valid_full"])[0]
    # --------------------------------------------------------------------------------------------------- loop
    optimizer = torch.optim.Adam(model.parameters(), lr=run.init_lr, weight_decay=run.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(run.seed)
    selection = Selection()  # the best valid AUC, its epoch, epochs since it: early stopping (run.patience)
    ckpt = run_dir.path / "rec_model.pth"
    run_start = time.time()
    for epoch in range(run.max_epoch):
        model.train()
        start, total = time.time(), 0.0
        order = torch.randperm(len(labels), generator=generator)
        for first, end in batch_bounds(len(labels), run.batch_size_train):
            idx = order[first:end]
            loss = loss_fn(model(**take(inputs, idx)), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        valid = evaluate(model, frames["valid_full"], valid_inputs)
        record = {"epoch": epoch, "train_loss": total / len(labels), "valid_auc": valid["auc"],
                  "valid_uauc": valid["uauc"], "beta": round(getattr(model, "beta", 0.0), 6),
                  "seconds": time.time() - start}
        if selection.evaluated(epoch, valid["auc"], run.patience):
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            atomic_write(ckpt, lambda tmp: torch.save(state, tmp))
        record["best_epoch"] = selection.best_epoch
        run_dir.log(record, step=epoch)
        if epoch == 0:  # how long the run can take: early stopping decides, so give the rate and the rule
            print(f"an epoch takes {record['seconds']:.1f} s; the run stops {run.patience} epochs after its best "
                  f"valid auc (run.patience), at most {run.max_epoch} epochs")
        if epoch % 10 == 0 or selection.bad == 0:
            print(f"epoch {epoch}: loss {record['train_loss']:.4f} valid auc {valid['auc']:.4f} "
                  f"uauc {valid['uauc']:.4f} beta {record['beta']}{' | best' if selection.bad == 0 else ''} | "
                  f"{duration(time.time() - run_start)} so far")
        if hasattr(model, "update_beta"):
            model.update_beta(epoch, cfg.model.rec_config.beta_step)
        if selection.stopped:
            print(f"early stop at epoch {epoch}: no better valid auc for {selection.bad} epochs; best epoch "
                  f"{selection.best_epoch}")
            break
    # --------------------------------------------------------------------------------------------- evaluation
    model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    built = {"valid_full": valid_inputs}  # its history tensor is already padded; the test splits are new
    scores = {split: score_rows(model, frames[split], built.get(split)) for split in splits[1:]}
    scored = {split: evaluate_scores(frames[split]["uid"].to_numpy(), frames[split]["label"].to_numpy(), s)
              for split, s in scores.items()}
    # which rows test_warm / test_cold hold differs between upstream's scripts: name the rules beside the numbers
    rules = warm_cold_rules(cfg)
    print(f"test_warm: warm_rule {rules['warm_rule']}; test_cold: cold_rule {rules['cold_rule']}")
    results = {"best_epoch": selection.best_epoch, "warm_cold_rules": rules, **scored}
    # -------------------------------------------------------------------------------------------------- files
    for split, s in scores.items():  # as the LLM stages write them: the summary's spread is computed from these
        f = frames[split]
        run_dir.write_predictions(f"predictions_{split}.csv", f["uid"].to_numpy(), f["iid"].to_numpy(),
                                  f["label"].to_numpy(), s)
    run_dir.write_json("metrics.json", results)
    for split, m in scored.items():
        print(f"{split}: auc {m['auc']:.4f} uauc {m['uauc']:.4f} ({m['rows']} rows)")
    test = scored["test"]
    print(f"finished: best epoch {selection.best_epoch} of {epoch + 1}, valid_full AUC {selection.best:.4f}; "
          f"test AUC {test['auc']:.4f} UAUC {test['uauc']:.4f} ({test['rows']} rows). Encoder: {ckpt}; "
          f"files: {run_dir.path}/")
    run_dir.close()
    return results
