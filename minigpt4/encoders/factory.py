"""Build a collaborative encoder from `model.rec_model` / `model.rec_config`, load its pretrained state dict, give
a graph model its train graph. Used by stage 0 (`recipes/pretrain_encoder.py`), the CoLLM slots
(`llm/collab_tokens.py`) and BinLLM's code table (`recipes/derived.py`), so it sits below them. The user / item
counts come from the data: the callers pass them (`counts`), nothing writes them into the config."""

import torch
from omegaconf import OmegaConf

from minigpt4 import registry
from minigpt4.config import ConfigError, encoder_file
from minigpt4.encoders.lightgcn import bipartite_graph

# rec_model names that are prompt-tuning tables of the LLM stage, not encoders (upstream spells `personlized`)
PROMPT_TABLES = ("soft_prompt", "personlized_prompt", "personalized_prompt")


def encoder_class(model_cfg):
    try:
        return registry.get("rec_model", model_cfg.rec_model)
    except KeyError:
        table = model_cfg.rec_model in PROMPT_TABLES
        hint = " (a prompt-tuning table: it trains in the LLM stage, it has no stage 0)" if table else ""
        raise ConfigError(f"model.rec_model = {model_cfg.rec_model!r} is not a collaborative encoder{hint} "
                          f"(known: {', '.join(registry.names('rec_model'))})") from None


def sized_rec_config(rec_config, counts=None):
    """`model.rec_config` with the user / item counts an encoder is built for: `counts` = (user_num, item_num),
    derived from the data by the recipe, merged into a copy; None: the counts the config itself carries (a run's
    saved config.yaml, a hand-written one)."""
    if counts is None:
        return rec_config
    user_num, item_num = counts
    return OmegaConf.merge(rec_config, {"user_num": int(user_num), "item_num": int(item_num)})


def build_encoder(model_cfg, counts=None):
    """counts: (user_num, item_num), see `sized_rec_config`."""
    return encoder_class(model_cfg).from_config(sized_rec_config(model_cfg.rec_config, counts))


def load_pretrained_encoder(model_cfg, counts=None):
    """The configured encoder with the state dict of `rec_config.pretrained_path` (as pretrain_collab.py wrote
    it), checked strictly; a file made for other sizes is a ConfigError that says so."""
    rc = sized_rec_config(model_cfg.rec_config, counts)
    path = encoder_file(model_cfg)
    encoder = build_encoder(model_cfg, counts)
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
