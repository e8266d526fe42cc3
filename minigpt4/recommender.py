"""The recommender a run uses, built in one place: `Recommender(cfg, task, derived, device, precision)` loads the
backbone, adds the LoRA adapter (and CoLLM's slot module with its encoder), and loads `model.ckpt`; it holds the
prompt, codes and run mode the rows are written with. The LLM stages' recipe builds its model with it, and
`Recommender.from_run(run_dir)` rebuilds the model a finished run trained (its config.yaml and checkpoint_best/)
to score rows outside any recipe:

    rec = Recommender.from_run("runs/ml1m/binllm")
    scores = rec.score(rec.rows("test"))  # the Yes (- No) logit of each row, as predictions_test.csv holds
"""

from pathlib import Path

from omegaconf import OmegaConf

from minigpt4 import stages
from minigpt4.config import ConfigError, load_config
from minigpt4.encoders.factory import attach_graph
from minigpt4.llm.recommender import LLMRecommender
from minigpt4.precision import resolve_precision
from minigpt4.recipes.derived import derive_llm, pick_device
from minigpt4.tasks import RecTask
from minigpt4.train.checkpoint import load_start, run_meta
from minigpt4.train.scoring import Scorer


class Recommender:
    """`model`: the LLMRecommender (a torch module: batch -> score); `derived`: the run's `Derived` (counts, mode,
    prompt, codes, LoRA shape); `task`: the dataset's rows; `meta`: what its checkpoints record."""

    def __init__(self, cfg, task, derived, device, precision):
        self.cfg, self.task, self.derived, self.device, self.precision = cfg, task, derived, device, precision
        d = derived
        # model.load_in_8bit / load_in_4bit / low_resource: the frozen backbone is stored in 8 or 4 bits on `device`
        model = LLMRecommender.from_config(cfg.model, dtype=precision.dtype, slots=d.mode == "slots", lora=d.lora,
                                           counts=d.counts, device=device)
        if model.collab is not None and model.collab.encoder is not None:
            attach_graph(model.collab.encoder, task.rows("train"))  # LightGCN propagates over the train graph
        self.model = model.to(device)
        self.meta = run_meta(cfg.model, self.model, d.mode, d.codes)  # beside each checkpoint, checked on loading
        if cfg.model.ckpt:
            load_start(self.model, cfg.model, self.meta, d.evaluate)  # stage 1's adapter for stage 2; eval's

    @classmethod
    def from_config(cls, cfg, device=None):
        """The model `cfg` scores with, as eval.py builds it (model.ckpt loaded), without a run directory."""
        cfg = OmegaConf.create(cfg) if not OmegaConf.is_readonly(cfg) else cfg
        OmegaConf.set_readonly(cfg, True)
        task = RecTask(cfg)
        derived = derive_llm(cfg, stages.SCORING, task, new_run=False)
        device = device or pick_device(cfg, 0)
        return cls(cfg, task, derived, device, resolve_precision(cfg.run, device))

    @classmethod
    def from_run(cls, run_dir, device=None, options=()):
        """The model an LLM run directory's config.yaml describes, with the adapter the run trained
        (`checkpoint_best/`; an eval run's: the checkpoint it scored). `options`: key=value overrides, e.g.
        the run's data moved (`datasets.movie_ood.path=...`) or `run.batch_size_eval=64`."""
        run_dir = Path(run_dir)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"{run_dir}: no config.yaml; not a run directory (a run writes one when it starts)")
        if (run_dir / "rec_model.pth").is_file():
            raise ConfigError(f"{run_dir} is a stage-0 encoder run (rec_model.pth); from_run rebuilds LLM runs")
        trained = run_dir / "checkpoint_best"
        own = [f"model.ckpt={trained}"] if trained.is_dir() else []
        return cls.from_config(load_config(saved, [*own, *options]), device)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def rows(self, split):
        """The rows of `split` the run uses: all of them, or its run.max_eval_rows / max_train_rows sample."""
        return self.task.sampled_rows(split)

    def token_splits(self, names):
        """{split: TokenizedSplit} of the named splits' rows as prompts (CoLLM's SASRec / DIN: with history ids)."""
        return {name: self.tokenize(self.rows(name), name) for name in dict.fromkeys(names)}

    def tokenize(self, rows, name="rows"):
        d = self.derived
        history_len = self.model.collab.history_len if self.model.collab is not None else 0
        return self.task.tokenize(rows, name, self.tokenizer, d.prompt, d.codes, history_len, d.mode)

    def score(self, rows, batch_size=None):
        """The score of each row (a split's DataFrame: uid, iid, his, his_title, title, label), in row order,
        computed as the run's evaluation computes it (run.batch_size_eval, the run's precision)."""
        split = self.tokenize(rows)
        scorer = Scorer(self.model, {split.name: split}, self.device, self.precision,
                        batch_size or self.cfg.run.batch_size_eval)
        return scorer.score(split.name)[0]
