"""Build a collaborative encoder from `model.rec_model` / `model.rec_config`, load its pretrained state dict, give
a graph model its train graph. Used by stage 0 (`train/collab.py`), the CoLLM slots (`llm/collab_tokens.py`) and
BinLLM's code table (`tasks.py`), so it sits below all three."""

import torch

from minigpt4 import registry
from minigpt4.config import ConfigError, require_path
from minigpt4.encoders.lightgcn import bipartite_graph

# rec_model names that are prompt-tuning tables of the LLM stage, not encoders (upstream spells `personlized`)
PROMPT_TABLES = ("soft_prompt", "personlized_prompt", "personalized_prompt")


def encoder_class(model_cfg):
    try:
        return registry.get("rec_model", model_cfg.rec_model)
    except KeyError:
        hint = " (a prompt-tuning table: it trains in the LLM stage, it has no stage 0)" if model_cfg.rec_model in PROMPT_TABLES else ""
        raise ConfigError(f"model.rec_model = {model_cfg.rec_model!r} is not a collaborative encoder{hint} "
                          f"(known: {', '.join(registry.names('rec_model'))})") from None


def build_encoder(model_cfg):
    return encoder_class(model_cfg).from_config(model_cfg.rec_config)


def load_pretrained_encoder(model_cfg):
    """The configured encoder with the state dict of `rec_config.pretrained_path` (as pretrain_collab.py wrote
    it), checked strictly; a file made for other sizes is a ConfigError that says so."""
    rc = model_cfg.rec_config
    path = require_path("model.rec_config.pretrained_path", rc.pretrained_path,
                        f"Create it with `python pretrain_collab.py` for rec_model {model_cfg.rec_model} "
                        "(it writes <run dir>/rec_model.pth).", is_dir=False)
    encoder = build_encoder(model_cfg)
    try:
        encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except RuntimeError as err:
        raise ConfigError(f"model.rec_config.pretrained_path = {rc.pretrained_path}: does not fit rec_model "
                          f"{model_cfg.rec_model} (embedding_size {rc.embedding_size}) for {rc.user_num} users / "
                          f"{rc.item_num} items: {str(err).splitlines()[0]} (was it trained on another dataset or "
                          "with other sizes?)") from None
    return encoder


def attach_graph(model, train_df):
    """Give a graph model (LightGCN) the normalised bipartite graph of the positive train rows."""
    if hasattr(model, "set_graph"):
        model.set_graph(bipartite_graph(train_df["uid"].to_numpy(), train_df["iid"].to_numpy(),
                                        train_df["label"].to_numpy(), model.user_num, model.item_num))
