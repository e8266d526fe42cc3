"""The recommendation task (upstream's `run.task: rec_pretrain`, the only one): the configured dataset's splits as
rows, the user / item counts they imply, and the token batches of an LLM stage. It reads the config and writes
nothing into it; what a run derives from it lives in `minigpt4.recipes.derived.Derived`."""

from minigpt4 import registry
from minigpt4.batching import TokenizedSplit
from minigpt4.config import dataset_cfg, dataset_dir
from minigpt4.data.splits import sample_split
from minigpt4.prompting import build_prompts


class RecTask:
    def __init__(self, cfg):
        self.cfg = cfg
        name, ds = dataset_cfg(cfg)
        # test_warm / test_cold follow run.warm_rule / run.cold_rule (splits.WARM_RULES, COLD_RULES)
        self.dataset = registry.get("dataset", name)(ds.path, cfg.run.warm_rule, cfg.run.cold_rule).ensure()
        dataset_dir(name, ds)
        self._frames = {}
        self.llm_mode = None  # token_splits' default run mode (text, slots or codes) when none is passed

    def rows(self, split):
        return self.dataset.load(split, self._frames)

    def warm_cold_rules(self):
        """{"warm_rule", "cold_rule"} that chose test_warm / test_cold (`dataset` resolved), for metrics.json."""
        return self.dataset.rules()

    def id_counts(self):
        """(user_num, item_num) = max id + 1 over train/valid/test (upstream rule)."""
        return self.dataset.id_counts(self._frames)

    def sampled_rows(self, split):
        """The rows of `split` an LLM run uses (run.max_train_rows / max_eval_rows: the same rows in every run of
        one run.sample_seed, which defaults to run.seed)."""
        run = self.cfg.run
        limit, per_user = (run.max_train_rows, 0) if split == "train" else (run.max_eval_rows,
                                                                            run.max_eval_rows_per_user)
        return sample_split(self.rows, split, limit, run.seed if run.sample_seed < 0 else run.sample_seed, per_user)

    def tokenize(self, rows, name, tokenizer, prompt, codes, history_len=0, mode=None):
        """`rows` as prompts in a TokenizedSplit called `name`.
        codes: BinLLM's CodeTable or None; history_len: ids of history each row carries for a slot encoder that
        reads it (SASRec, DIN); mode: the run mode (default `self.llm_mode`), `slots` marks the ID slots."""
        m = self.cfg.model
        slots = (mode or self.llm_mode) == "slots"
        return TokenizedSplit(tokenizer, build_prompts(rows, prompt, codes, slots), rows, m.max_txt_len, name=name,
                              slot_tokens=m.proj_token_num if slots else 0, history_len=history_len,
                              slot_layout=m.slot_layout, add_bos=m.add_bos)

    def token_splits(self, tokenizer, prompt, names, codes, history_len=0, mode=None):
        """Each named split's `sampled_rows` as a TokenizedSplit (see `tokenize`)."""
        return {split: self.tokenize(self.sampled_rows(split), split, tokenizer, prompt, codes, history_len, mode)
                for split in dict.fromkeys(names)}
