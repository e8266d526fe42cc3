"""Name -> object registry, so YAML configs can name models, datasets, tasks, runners and schedules, and
`prepare_data.py` can name the dataset preparers.

Kinds are fixed; a duplicate name or an unknown name is an error that lists what is registered.
Registration happens when the defining module is imported. `get` and `names` import the modules that define a
kind (MODULES) the first time that kind is asked for, so checking a config's dataset name does not import torch.
"""

import importlib

# kind -> the modules whose import registers its components (by name: they sit above this module's layer)
MODULES = {
    "model": ("minigpt4.llm.recommender",),
    "rec_model": ("minigpt4.encoders",),
    "dataset": ("minigpt4.data.splits",),
    "task": ("minigpt4.tasks",),
    "runner": ("minigpt4.recipes.finetune_llm",),
    "lr_scheduler": ("minigpt4.train.optim",),
    "preparer": ("minigpt4.data.prepare",),
}
KINDS = tuple(MODULES)
_REGISTRY = {kind: {} for kind in KINDS}
_LOADED = set()


def _load(kind):
    if kind in MODULES and kind not in _LOADED:
        _LOADED.add(kind)
        for module in MODULES[kind]:
            importlib.import_module(module)


def register(kind, name):
    """Decorator: `@register("rec_model", "hash")` makes the class reachable as `rec_model: hash`."""
    if kind not in _REGISTRY:
        raise KeyError(f"unknown registry kind {kind!r}; kinds are {KINDS}")

    def wrap(obj):
        if name in _REGISTRY[kind]:
            raise KeyError(f"{kind} {name!r} is registered twice ({_REGISTRY[kind][name]} and {obj})")
        _REGISTRY[kind][name] = obj
        return obj

    return wrap


def get(kind, name):
    _load(kind)
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY.get(kind, {}))) or "none"
        raise KeyError(f"no {kind} named {name!r} is registered (known: {known})") from None


def names(kind):
    _load(kind)
    return sorted(_REGISTRY[kind])
