"""BinLLM / CoLLM recommendation with LLMs.

Importing the package imports nothing heavy: the named components (encoders, datasets, schedules, preparers)
register when `registry.get` / `registry.names` first asks for their kind, so a config can be checked before torch
and transformers load.

`minigpt4.Recommender`: the model a run trained, ready to score rows (`Recommender.from_run(run_dir)`)."""


def __getattr__(name):
    if name == "Recommender":  # imported on first use: it imports torch and transformers
        from minigpt4.recommender import Recommender

        return Recommender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
