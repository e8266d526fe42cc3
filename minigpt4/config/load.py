"""Reading a config: the YAML file (with the files its `defaults:` list names), `--options` overrides, merged into the
typed schema and checked before any heavy work, with errors that name the key and how to fix it.

OmegaConf would reject a bad value too, but in its own words ("Value 'ten' of type 'str' could not be converted to
Integer"); the checks here run first and say it as the docs and the tests do, with "did you mean" for typos."""

from pathlib import Path

import omegaconf
from omegaconf import OmegaConf

from minigpt4 import registry
from minigpt4.config.derived import load_in_bits
from minigpt4.config.schema import Config, DatasetConfig, ModelConfig, RunConfig, default, is_section, keys, kind
from minigpt4.errors import ConfigError

SECTIONS = keys(Config)


def parse_options(options):
    """`--options a.b=c d.e=f` or upstream's alternating `a.b c` pairs -> dot-list strings."""
    options = list(options or [])
    if all("=" in o for o in options):
        return options
    if len(options) % 2 or any("=" in o for o in options):
        raise ConfigError(f"--options must be `key=value` tokens (or `key value` pairs), got {options}")
    return [f"{k}={v}" for k, v in zip(options[::2], options[1::2])]


# A config may start from other files: `defaults: [base/llm.yaml, datasets/ml1m.yaml]` merges those (paths relative
# to the including file, each itself possibly layered) in order, then the file's own keys on top, like Hydra's
# defaults list with `_self_` last. Upstream YAMLs have no such key and load as they are.
INCLUDE_KEY = "defaults"


def compose(cfg_path):
    """The YAML file with the files its `defaults:` list names merged under it, unresolved and not yet validated
    (`${backbone:...}` still to resolve): what `OmegaConf.load` returns for a file without that key."""
    return _compose(Path(cfg_path), ())


def _compose(path, chain):
    if chain:  # an included file: name it and its includer in any error (the top file's errors say it themselves)
        try:
            raw = OmegaConf.load(path)
        except Exception as err:
            raise ConfigError(f"{chain[-1]}: {INCLUDE_KEY}: {path} cannot be read as YAML: {err}") from None
    else:
        raw = OmegaConf.load(path)
    if not isinstance(raw, omegaconf.DictConfig) or INCLUDE_KEY not in raw:
        return raw
    entries = raw.pop(INCLUDE_KEY)
    if isinstance(entries, omegaconf.Container):
        entries = OmegaConf.to_container(entries)
    if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
        raise ConfigError(f"{path}: `{INCLUDE_KEY}:` must be a list of YAML files relative to {path.parent}, e.g. "
                          f"[base/llm.yaml, datasets/ml1m.yaml]; got {entries!r}")
    chain = chain + (path,)
    layers = []
    for entry in entries:
        target = path.parent / entry
        if not target.is_file():
            raise ConfigError(f"{path}: {INCLUDE_KEY}: {entry!r}: no such file {target} (entries are relative to "
                              f"the including file's folder, {path.parent})")
        if any(target.resolve() == seen.resolve() for seen in chain):
            raise ConfigError(f"{path}: {INCLUDE_KEY}: {entry!r} is already being read, a cycle: "
                              f"{' -> '.join(map(str, chain + (target,)))}")
        layers.append(_compose(target, chain))
    return OmegaConf.merge(*layers, raw)


def load_config(cfg_path, options=()):
    """Read YAML (with the files its `defaults:` names), apply overrides, validate. Returns a typed OmegaConf object
    (`OmegaConf.structured(Config)` underneath) with every key present and nothing left to resolve, so it can be
    saved, reloaded and frozen as it is."""
    cfg_path = Path(cfg_path)
    if not cfg_path.is_file():
        raise ConfigError(f"--cfg-path {cfg_path}: no such file (configs live in train_configs/)")
    try:
        raw = OmegaConf.merge(compose(cfg_path), OmegaConf.from_dotlist(parse_options(options)))
        given, interpolated = _check_keys(raw, str(cfg_path))
        cfg = OmegaConf.merge(OmegaConf.structured(Config), given)
        # after the merge, so `${...}` sees the schema's defaults and each result is converted to its key's type
        OmegaConf.resolve(cfg)
    except ConfigError:
        raise
    except omegaconf.errors.InterpolationValidationError as err:
        raise _wrong_interpolated_type(err, given, interpolated, cfg_path) from None
    except Exception as err:  # yaml syntax, bad interpolation, bad dot-list
        cause = err
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:  # raised inside the ${backbone:...} resolver
            raise ConfigError(f"{cfg_path}: {cause}") from None
        raise ConfigError(f"{cfg_path}: cannot be read as YAML with the given --options: {err}") from None
    for where, f in interpolated.items():  # typed by the merge; their choices and nulls are checked here
        value = OmegaConf.select(cfg, where)
        _coerce(OmegaConf.to_container(value) if isinstance(value, omegaconf.Container) else value, f, where)
    (name, ds), = cfg.datasets.items()
    ds.path = ds.path or ds.build_info.storage
    if not ds.path:
        raise ConfigError(f"datasets.{name}.path is empty: set it to the directory holding train_ood2.pkl etc.")
    _check_values(cfg)
    return cfg


def _closest(name, options):
    match = min(options, key=lambda o: _distance(str(name), str(o)), default=None)
    if match is not None and _distance(str(name), str(match)) <= max(1, len(str(name)) // 2):
        return f" (did you mean {match!r}?)"
    return f" (valid keys: {', '.join(sorted(options))})"


# Names other trainers (Hugging Face, PyTorch Lightning, upstream scripts) use for keys this schema names otherwise.
# A misspelled alias still finds its key: candidates are ranked by edit distance to the alias too.
ALIASES = {
    "run.lr": "run.init_lr", "run.learning_rate": "run.init_lr", "run.base_lr": "run.init_lr",
    "run.max_lr": "run.init_lr", "run.peak_lr": "run.init_lr", "run.final_lr": "run.min_lr",
    "run.epochs": "run.max_epoch", "run.num_epochs": "run.max_epoch", "run.max_epochs": "run.max_epoch",
    "run.n_epochs": "run.max_epoch", "run.num_train_epochs": "run.max_epoch",
    "run.batch_size": "run.batch_size_train", "run.train_batch_size": "run.batch_size_train",
    "run.per_device_train_batch_size": "run.batch_size_train", "run.eval_batch_size": "run.batch_size_eval",
    "run.per_device_eval_batch_size": "run.batch_size_eval",
    "run.gradient_accumulation_steps": "run.accum_grad_iters", "run.grad_accum": "run.accum_grad_iters",
    "run.warmup": "run.warmup_steps", "run.num_warmup_steps": "run.warmup_steps", "run.wd": "run.weight_decay",
    "run.early_stopping_patience": "run.patience", "run.out_dir": "run.output_dir", "run.run_name": "run.job_id",
    "run.precision": "run.dtype", "run.resume": "run.resume_ckpt_path", "run.resume_from_checkpoint":
    "run.resume_ckpt_path", "run.logging_steps": "run.log_freq", "run.steps_per_epoch": "run.iters_per_epoch",
    "model.lora": "model.lora_config", "model.lora_config.rank": "model.lora_config.r",
    "model.lora_config.lora_r": "model.lora_config.r", "model.lora_config.lora_alpha": "model.lora_config.alpha",
    "model.lora_config.lora_dropout": "model.lora_config.dropout", "model.lora_r": "model.lora_config.r",
    "model.lora_alpha": "model.lora_config.alpha", "model.rec": "model.rec_config",
    "model.backbone": "model.llama_model", "model.llm": "model.llama_model", "model.base_model": "model.llama_model",
    "model.model_name_or_path": "model.llama_model", "model.prompt": "model.prompt_path",
    "model.checkpoint": "model.ckpt", "model.max_length": "model.max_txt_len",
    "model.rec_config.pretrained": "model.rec_config.pretrained_path",
}


def _distance(a, b):
    """Levenshtein distance: insertions, deletions and substitutions of one character."""
    if len(a) < len(b):
        a, b = b, a
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _schema_paths(section, prefix):
    for name, f in keys(section).items():
        yield f"{prefix}{name}"
        if is_section(f):
            yield from _schema_paths(kind(f.type)[0], f"{prefix}{name}.")


def _did_you_mean(path, where, known):
    """The " (did you mean ...?)" of the unknown key `path` (dotted, in section `where`): the schema's key paths and
    ALIASES ranked by edit distance to the whole path. The key is named relative to `where` when it lies there."""
    sections = [("model.", ModelConfig), ("run.", RunConfig)]
    if where.startswith("datasets."):
        sections.append((".".join(where.split(".")[:2]) + ".", DatasetConfig))
    paths = {p: p for prefix, section in sections for p in _schema_paths(section, prefix)}
    paths.update(ALIASES)
    name = path.rsplit(".", 1)[1]
    best = min(paths, key=lambda p: (_distance(path, p), p in ALIASES))
    if _distance(path, best) <= max(1, len(name) // 2) and _distance(path, best) < len(name):
        target = paths[best]
    else:  # the right name in the wrong section, e.g. model.init_lr or model.lr
        same = {paths[p] for p in paths if p.rsplit(".", 1)[1] == name}
        if len(same) != 1:
            return f" (valid keys: {', '.join(sorted(known))})"
        (target,) = same
    return f" (did you mean {target.removeprefix(where + '.')!r}?)"


def _check_keys(raw, source):
    """The keys the YAML and --options set, checked against the schema: (a plain dict to merge into it, the fields of
    the keys that hold a `${...}`, by dotted name, checked once resolved)."""
    if not isinstance(raw, omegaconf.DictConfig):
        raise ConfigError(f"{source}: the top level must be a mapping with `model`, `datasets` and `run` sections")
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {name!r}{_closest(name, SECTIONS)}")
    for name in SECTIONS:
        if name not in raw:
            raise ConfigError(f"{source}: missing section `{name}:` (see train_configs/ for complete examples)")
    interpolated = {}
    given = {"model": _check_section(raw.model, ModelConfig, "model", interpolated),
             "run": _check_section(raw.run, RunConfig, "run", interpolated)}
    datasets = raw.datasets
    if not isinstance(datasets, omegaconf.DictConfig) or len(datasets) != 1:
        raise ConfigError(f"{source}: `datasets:` must hold exactly one dataset entry such as `movie_ood: {{path: "
                          "data/ml-1m/}}`")
    (name,) = datasets
    if name not in registry.names("dataset"):
        raise ConfigError(f"unknown dataset builder datasets.{name}{_closest(name, registry.names('dataset'))}")
    given["datasets"] = {name: _check_section(datasets[name], DatasetConfig, f"datasets.{name}", interpolated)}
    return given, interpolated


def _check_section(node, section, where, interpolated):
    if node is None:  # `rec_config:` with nothing under it
        return {}
    if not isinstance(node, omegaconf.DictConfig):
        raise ConfigError(f"{where} must be a mapping of keys, got {node!r}")
    known = keys(section)
    values = OmegaConf.to_container(node, resolve=False)  # a `${...}` stays as its text, a `???` is kept
    for name in values:
        if name not in known:
            raise ConfigError(f"unknown key {where}.{name}{_did_you_mean(f'{where}.{name}', where, known)}")
    out = {}
    for name, f in known.items():
        if name not in values:
            continue
        path = f"{where}.{name}"
        if OmegaConf.is_missing(node, name):
            raise ConfigError(f"{path} is ??? (OmegaConf's mark for a value still to give): set it")
        if OmegaConf.is_interpolation(node, name):
            out[name], interpolated[path] = values[name], f
        elif is_section(f):
            out[name] = _check_section(node[name], kind(f.type)[0], path, interpolated)
        else:
            out[name] = _coerce(values[name], f, path)
    return out


def _coerce(value, f, where):
    """`value` as the type of field `f`, with the conversions YAML needs; a wrong type, choice or null is an error."""
    want, nullable, item = kind(f.type)
    choices = f.metadata["choices"]
    if value is None:
        if nullable:
            return None
        if default(f) == "":
            return ""  # `ckpt:` in YAML or `model.ckpt=` on the command line: empty, i.e. not set
        raise ConfigError(f"{where} is null; it must be a {want.__name__} (default {default(f)!r})")
    if want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    elif want is float and isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads `1e-4` as a string
        except ValueError:
            pass
    if want is str and isinstance(value, bool) and choices:
        # YAML 1.1 reads an unquoted yes/no as a boolean
        for yes, no in (("yes", "no"), ("true", "false")):
            if yes in choices or no in choices:
                value = yes if value else no
                break
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be a {want.__name__}, got {value!r} ({type(value).__name__})")
    if item is not None and not all(isinstance(v, item) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{where} must be a list of {item.__name__}, got {value!r}")
    if choices and value not in choices:
        raise ConfigError(f"{where} must be one of {list(choices)}, got {value!r}")
    return value


def _wrong_interpolated_type(err, given, interpolated, source):
    """A `${...}` gave a value its key's type cannot hold: the error a literal value would get, from the value the
    interpolation gives without the schema's types."""
    f = interpolated.get(err.full_key)
    try:
        untyped = OmegaConf.merge(OmegaConf.to_container(OmegaConf.structured(Config)), given)
        _coerce(OmegaConf.select(untyped, err.full_key), f, err.full_key)
    except ConfigError as ours:
        return ours
    except Exception:  # it fails untyped too: OmegaConf's words below say why
        pass
    return ConfigError(f"{source}: {err.full_key}: {err.msg}")


def _check_values(cfg):
    run, model, rc = cfg.run, cfg.model, cfg.model.rec_config
    positive = {"run.max_epoch": run.max_epoch, "run.iters_per_epoch": run.iters_per_epoch,
                "run.batch_size_train": run.batch_size_train, "run.batch_size_eval": run.batch_size_eval,
                "run.accum_grad_iters": run.accum_grad_iters, "model.lora_config.r": model.lora_config.r,
                "model.rec_config.embedding_size": rc.embedding_size,
                "model.max_txt_len": model.max_txt_len, "model.proj_token_num": model.proj_token_num,
                "model.proj_mid_times": model.proj_mid_times, "model.ctrl.tau": model.ctrl.tau,
                "model.ctrl.proj_dim": model.ctrl.proj_dim, "model.ctrl.subspaces": model.ctrl.subspaces,
                "model.ctrl.sub_dim": model.ctrl.sub_dim, "run.rank_negatives": run.rank_negatives}
    for where, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{where} must be > 0, got {value}")
    for name in ("init_lr", "min_lr", "warmup_lr", "weight_decay", "patience", "warmup_steps", "max_train_rows",
                 "max_eval_rows", "max_eval_rows_per_user", "global_batch_size", "length_buckets", "save_every_steps",
                 "rank_users", "rank_positives", "rank_seed"):
        if run[name] < 0:
            raise ConfigError(f"run.{name} must be >= 0, got {run[name]}")
    if rc.code_mode == "ipv4" and rc.embedding_size % 8:
        raise ConfigError(f"model.rec_config.embedding_size={rc.embedding_size} must be a multiple of 8 for code_mode "
                          "ipv4")
    _check_rec_config(model.rec_model, rc)
    if run.sample_seed < -1:
        raise ConfigError(f"run.sample_seed must be >= 0, or -1 for run.seed; got {run.sample_seed}")
    if run.dist_timeout_minutes <= 0:
        raise ConfigError(f"run.dist_timeout_minutes must be > 0, got {run.dist_timeout_minutes}")
    if run.evaluate and not run.test_splits:
        raise ConfigError("run.test_splits is empty but run.evaluate is True: name the splits to score, e.g. [test]")
    load_in_bits(model)  # 8 and 4 bits both asked for: an error before anything loads
    if run.resume_ckpt_path and run.fsdp:
        raise ConfigError("run.resume_ckpt_path with run.fsdp: resuming a sharded run is not supported yet; resume "
                          "it without FSDP or start again")
    if run.compile_train and run.fsdp:
        raise ConfigError("run.compile_train with run.fsdp: compiling a sharded model's training is not supported; "
                          "set run.compile_train: False, or train without FSDP (DDP)")


def _check_rec_config(rec_model, rc):
    """Sizes the chosen encoder needs; other encoders' keys are left alone (upstream YAMLs carry them all)."""
    where = "model.rec_config"
    if rec_model == "lightgcn":
        if rc["embed_size"] != rc["embedding_size"]:
            raise ConfigError(f"{where}.embed_size={rc['embed_size']} must equal {where}.embedding_size="
                              f"{rc['embedding_size']} for lightgcn (the projector reads embedding_size): set both")
        if rc["gcn_layers"] < 0 or rc["init_emb"] <= 0:
            raise ConfigError(f"{where}: lightgcn needs gcn_layers >= 0 and init_emb > 0, got {rc['gcn_layers']}, "
                              f"{rc['init_emb']}")
    if rec_model == "sasrec":
        if rc["hidden_units"] != rc["embedding_size"]:
            raise ConfigError(f"{where}.hidden_units={rc['hidden_units']} must equal {where}.embedding_size="
                              f"{rc['embedding_size']} for sasrec (the projector reads embedding_size): set both")
        if rc["num_blocks"] < 1 or rc["num_heads"] < 1 or rc["hidden_units"] % rc["num_heads"]:
            raise ConfigError(f"{where}: sasrec needs num_blocks >= 1 and num_heads >= 1 dividing hidden_units="
                              f"{rc['hidden_units']}, got num_blocks={rc['num_blocks']}, num_heads={rc['num_heads']}")
        if not 0 <= rc["dropout_rate"] < 1:
            raise ConfigError(f"{where}.dropout_rate must be in [0, 1), got {rc['dropout_rate']}")
    if rec_model == "DIN":
        if rc["embedding_size"] % 3:
            raise ConfigError(f"{where}.embedding_size={rc['embedding_size']} must be a multiple of 3 for DIN "
                              "(user, item and history vectors of embedding_size // 3 each)")
        if not 0 <= rc["drop"] < 1:
            raise ConfigError(f"{where}.drop must be in [0, 1), got {rc['drop']}")
    if rec_model in ("sasrec", "DIN") and rc["maxlen"] < 1:
        raise ConfigError(f"{where}.maxlen must be >= 1 for {rec_model}, got {rc['maxlen']}")
