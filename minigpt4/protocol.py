"""The paper's protocol as data: the upstream settings of each step of `reproduce.py --budget paper`, their sources,
the schedule they imply and a rough GPU-time estimate.

The settings live in `minigpt4/protocols/paper.yaml` (key -> [value, source]); this module turns them into the
`--options` of each step and writes docs/PAPER_PROTOCOL.md (`python -m minigpt4.protocol > docs/PAPER_PROTOCOL.md`).
"""

import json
from pathlib import Path

import yaml

from minigpt4 import stages

PROTOCOL_FILE = Path(__file__).resolve().parent / "protocols" / "paper.yaml"

# Per dataset: rows of each split (BINLLM_SPEC §1.2-1.3) and the prompt length the estimate assumes (~250 tokens
# for an ML-1M prompt with ten history titles and codes; Amazon's titles are longer).
SIZES = {"ml-1m": {"train": 33891, "valid_small": 5200, "test": 7331, "prompt_tokens": 250},
         "amazon-book": {"train": 727463, "valid_small": 6437, "test": 25747, "prompt_tokens": 300}}

# Dense bf16 peak of each GPU type (vendor data sheets, TFLOP/s, without sparsity). The estimate assumes the
# utilisation below; no 7B backbone has been measured here yet, so the estimate is a projection, not a measurement.
GPU_PEAK_TFLOPS = {"H100 SXM": 989, "H200": 989, "A100": 312, "L40S": 362, "A10G": 125}
ASSUMED_MFU = {"train": 0.40, "score": 0.50}
VICUNA_7B_BODY = 6.48e9  # parameters outside the embeddings: 32 x (4 x 4096^2 + 3 x 4096 x 11008)


# the sections of a dataset's settings that whole stages take (Stage.protocol), e.g. "llm" and "collab"
SECTIONS = tuple(dict.fromkeys(s.protocol for s in stages.STAGES.values()))


def load():
    """{dataset: {section: {key: (value, source)}, ..., "steps": {method: {...}}}}, a section per SECTIONS."""
    raw = yaml.safe_load(PROTOCOL_FILE.read_text(encoding="utf-8"))

    def table(section):
        return {k: (v[0], v[1]) for k, v in (section or {}).items()}

    return {ds: {**{sec: table(p.get(sec)) for sec in SECTIONS},
                 "steps": {m: table(s) for m, s in (p.get("steps") or {}).items()}} for ds, p in raw.items()}


def method_entry(protocol, method):
    """The settings of a method: its own entry, else the longest listed method it extends (binllm_ipv4 -> binllm)."""
    steps = protocol["steps"]
    if method in steps:
        return steps[method]
    parents = [m for m in steps if method.startswith(m + "_")]
    if not parents:
        raise KeyError(f"{PROTOCOL_FILE}: no entry for method {method!r} (nor for a method it extends)")
    return steps[max(parents, key=len)]


def settings(dataset, stage, method):
    """{key: (value, source)} the paper budget sets for one step, common keys first, the method's after."""
    protocol, st = load()[dataset], stages.get(stage)
    # the stage's section (eval: only the score, so a zero-shot row reads the same score as the trained ones)
    out = {k: v for k, v in protocol[st.protocol].items() if st.protocol_keys is None or k in st.protocol_keys}
    out.update(method_entry(protocol, method))
    return out


def option(key, value):
    """`key=value` as the command line writes it (lists as [a,b], booleans as True/False)."""
    if isinstance(value, list):
        return f"{key}=[{','.join(str(v) for v in value)}]"
    if isinstance(value, float):
        return f"{key}={value:g}"
    return f"{key}={value}"


def overrides(dataset, stage, method):
    return [option(k, v) for k, (v, _) in settings(dataset, stage, method).items()]


# ------------------------------------------------------------------------------------------------ schedule
def body_parameters(llama):
    """Parameters outside the embeddings of a backbone, with how it was found: from a Hugging Face directory's
    config.json (Llama-style shapes), the embedded backbones' known sizes, else Vicuna-7B's (the paper's)."""
    known = {"smollm2": 106e6, "gemma3-270m": 100.3e6}
    name = str(llama or "smollm2")
    if name in known:
        return known[name], f"{name}, {known[name] / 1e6:.0f} M outside the embeddings"
    cfg = Path(name) / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text(encoding="utf-8"))
        h, layers, ffn = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]
        heads = c["num_attention_heads"]
        kv = c.get("num_key_value_heads", heads) * c.get("head_dim", h // heads)
        n = layers * (2 * h * h + 2 * h * kv + 3 * h * ffn)
        return n, f"{cfg}: {n / 1e9:.2f} B outside the embeddings"
    return VICUNA_7B_BODY, (f"no config.json at {name}: assumed Vicuna-7B's shape, "
                            f"{VICUNA_7B_BODY / 1e9:.2f} B outside the embeddings")


def schedule(dataset, stage, cfg):
    """Upper bounds of one LLM step under the paper budget: optimizer steps, rows trained, rows scored."""
    size = SIZES[dataset]
    if not stages.get(stage).trains:
        return {"steps": 0, "train_rows": 0, "epochs": 0, "score_rows": size["test"]}
    run = cfg.run
    batch = run.global_batch_size or run.batch_size_train * run.accum_grad_iters
    steps = run.max_epoch * run.iters_per_epoch
    valid = size["valid_small"] * run.max_epoch if list(run.valid_splits) else 0
    return {"steps": steps, "train_rows": steps * batch, "epochs": run.max_epoch, "batch": batch,
            "patience": run.patience, "score_rows": valid + size["test"]}


def gpu_hours(dataset, train_rows, score_rows, body):
    """{gpu: hours} at the peak rate x ASSUMED_MFU. LoRA training costs ~2 forwards per token (activation
    gradients through the frozen weights), a forward 2 FLOPs per weight and token."""
    tokens = SIZES[dataset]["prompt_tokens"]
    out = {}
    for gpu, tflops in GPU_PEAK_TFLOPS.items():
        peak = tflops * 1e12
        train = train_rows * tokens * 4 * body / (peak * ASSUMED_MFU["train"])
        score = score_rows * tokens * 2 * body / (peak * ASSUMED_MFU["score"])
        out[gpu] = (train + score) / 3600
    return out


# --------------------------------------------------------------------------------------------------- docs
def markdown():
    protocol = load()
    lines = ["# The paper's protocol (`reproduce.py --budget paper`)", "",
             "Generated from `minigpt4/protocols/paper.yaml` (`python -m minigpt4.protocol > docs/PAPER_PROTOCOL.md`).",
             "Each row is an `--options` value the `paper` budget sets on top of the step's shipped config, and where",
             "the upstream code sets it: BinLLM (github zyang1580/BinLLM, commit b28bfc4, `B:`) and CoLLM (github",
             "zyang1580/CoLLM, commit 48042b1, `C:`); [UPSTREAM.md](UPSTREAM.md) has the upstream tables. "
             "It is the budget",
             "for a 7B backbone on GPUs (`--llama /path/to/vicuna-7b`). What it does not copy: the warm-up restarting",
             "every epoch (ours counts global steps), fp16 autocast with a loss scaler (ours: `run.dtype`, bf16 on",
             "GPUs that have it), and the early-stopping counter kept on rank 0 only (ours is broadcast).", ""]
    for dataset, p in protocol.items():
        lines += [f"## {dataset}", "", "| applies to | key | value | upstream source |", "|---|---|---|---|"]
        whole = [(f"every {st.title} step", p[st.protocol]) for st in stages.STAGES.values()
                 if st.protocol_keys is None]
        for where, table in whole + [(f"`{m}`", t) for m, t in p["steps"].items()]:
            for key, (value, source) in table.items():
                lines.append(f"| {where} | `{key}` | `{option(key, value).split('=', 1)[1]}` | {source} |")
        lines.append("")
    lines += ["Steps not listed (`binllm_io`, `binllm_it`, `binllm_ipv4`, `binllm16`, `binllm64`, `binmf16`, "
              "`binmf64`) read",
              "the entry of the method they extend; the code length of `binmf16`/`binllm16` etc. is set after it.", "",
              "## Time", "",
              "`--plan` prints each step's upper bounds (every epoch run; early stopping usually ends sooner) and an",
              "estimate per GPU type: FLOPs (4 per weight and token to train LoRA, 2 to score) over the dense "
              "bf16 peak",
              f"at {ASSUMED_MFU['train']:.0%} / {ASSUMED_MFU['score']:.0%} utilisation for training / scoring, with "
              "prompts of ~250 tokens. The utilisation is",
              "assumed: no 7B backbone has been measured here yet."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
