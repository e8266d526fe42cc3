"""Name -> object registry, for the kinds of which YAML configs choose one of several: collaborative encoders
(`model.rec_model`), datasets and schedules (`run.lr_sched`); and `prepare_data.py`'s dataset preparers. The task,
the LLM model and the training loop have one implementation each: the recipes import them directly, and the
upstream names a config gives them (`run.task`, `model.arch`, `run.runner`) are checked by minigpt4/preflight.py.

Kinds are fixed; a duplicate name or an unknown name is an error that lists what is registered.
Registration happens when the defining module is imported. `get` and `names` import the modules that define a
kind (MODULES) the first time that kind is asked for, so checking a config's dataset name does not import torch.
"""

import importlib

# kind -> the modules whose import registers its components (by name: they sit above this module's layer)
MODULES = {
    "rec_model": ("minigpt4.encoders",),
    "dataset": ("minigpt4.data.splits",),
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
