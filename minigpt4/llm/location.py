"""Where a backbone's files are (`model.llama_model`): a Hugging Face directory, a `.gguf` file, or an embedded
backbone's name. No torch here, so the checks run before torch loads (minigpt4/preflight.py)."""

from minigpt4.config import ConfigError, resolve_path
from minigpt4.llm import embedded


def _path(llama_model):
    """(directory, gguf file name or None) of a path-valued llama_model, after checking it exists."""
    path = resolve_path(llama_model)
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if path.is_dir() and (path / "config.json").is_file():
        return str(path), None
    raise ConfigError(f"model.llama_model = {llama_model!r}: expected a Hugging Face model directory (with "
                      f"config.json), a .gguf file, or an embedded backbone ({', '.join(embedded.EMBEDDED)})")


def check_backbone(llama_model):
    """Fail fast, before anything loads: the path exists, or the embedded backbone's packages are installed."""
    if llama_model in embedded.EMBEDDED:
        embedded.check(llama_model)
    else:
        _path(llama_model)


def locate(llama_model):
    """Returns (directory, gguf file name or None); an embedded backbone is assembled and converted on first use."""
    if llama_model in embedded.EMBEDDED:
        return str(embedded.prepare(llama_model)), None
    return _path(llama_model)
