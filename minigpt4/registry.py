"""Name -> object registry, so YAML configs can name models, datasets, tasks, runners and schedules, and
`prepare_data.py` can name the dataset preparers.

Kinds are fixed; a duplicate name or an unknown name is an error that lists what is registered.
Registration happens when the defining module is imported; `minigpt4/__init__.py` imports them all.
"""

KINDS = ("model", "rec_model", "dataset", "task", "runner", "lr_scheduler", "preparer")
_REGISTRY = {kind: {} for kind in KINDS}


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
    try:
        return _REGISTRY[kind][name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY.get(kind, {}))) or "none"
        raise KeyError(f"no {kind} named {name!r} is registered (known: {known})") from None


def names(kind):
    return sorted(_REGISTRY[kind])
