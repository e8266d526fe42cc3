"""BinLLM / CoLLM recommendation with LLMs.

Importing the package imports nothing heavy: the named components (encoders, datasets, tasks, the LLM model, the
runner, schedules, preparers) register when `registry.get` / `registry.names` first asks for their kind, so a
config can be checked before torch and transformers load."""
