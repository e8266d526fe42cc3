"""The recommendation task: config -> dataset rows -> prompt strings -> token batches, for each stage.

Every path a stage needs is checked here before any model is loaded. An LLM run has one of three modes:
`text` (titles only: TALLRec, ICL), `slots` (run.mode v2 with <UserID>/<TargetItemID> in the prompt: CoLLM, soft
prompt, PersonPrompt fill them with vectors) and `codes` (run.mode v3: BinLLM writes code strings)."""

from minigpt4 import registry
from minigpt4.batching import TokenizedSplit
from minigpt4.config import NOT_HAVE, ConfigError, dataset_cfg, require_path, run_mode
from minigpt4.data.splits import sample_split
from minigpt4.llm.collab_tokens import PROMPT_TABLES, is_slot_model
from minigpt4.prompting import build_prompts, load_prompt, uses_ids
from minigpt4.text_codes import CodeTable
from minigpt4.train import distributed as dist


@registry.register("task", "rec_pretrain")
class RecTask:
    def __init__(self, cfg):
        self.cfg = cfg
        name, ds = dataset_cfg(cfg)
        # test_warm / test_cold follow run.warm_rule / run.cold_rule (splits.WARM_RULES, COLD_RULES)
        self.dataset = registry.get("dataset", name)(ds.path, cfg.run.warm_rule, cfg.run.cold_rule).ensure()
        require_path(f"datasets.{name}.path", ds.path, "Unzip the processed dataset there (README, 'Data').", is_dir=True)
        self._frames = {}
        self.llm_mode = None  # text, slots or codes; set by check_llm_paths

    # ------------------------------------------------------------------------------------------------- rows
    def rows(self, split):
        return self.dataset.load(split, self._frames)

    def warm_cold_rules(self):
        """{"warm_rule", "cold_rule"} that chose test_warm / test_cold (`dataset` resolved), for metrics.json."""
        return self.dataset.rules()

    def set_id_counts(self):
        """user_num / item_num = max id + 1 over train/valid/test, written into the config (upstream rule)."""
        user_num, item_num = self.dataset.id_counts(self._frames)
        for section in (self.cfg.model, self.cfg.model.rec_config):
            section.user_num, section.item_num = user_num, item_num
        return user_num, item_num

    # ---------------------------------------------------------------------------------------------- checks
    def check_llm_paths(self, evaluate):
        """Fail before any heavy work when a file the LLM stage needs is missing."""
        from minigpt4.llm.backbone import check_backbone
        from minigpt4.train.checkpoint import find_checkpoint

        m = self.cfg.model
        prompt_file = require_path("model.prompt_path", m.prompt_path, "Prompt files ship in prompts/.", is_dir=False)
        check_backbone(m.llama_model)
        prompt = load_prompt(prompt_file, m.prompt_template)
        mode = run_mode(self.cfg)
        if mode == "codes":
            if not uses_ids(prompt):
                raise ConfigError(f"run.mode={self.cfg.run.mode} writes codes into <UserID>/<TargetItemID>, but "
                                  f"model.prompt_path = {m.prompt_path} has neither; use prompts/collm_movie.txt")
            if m.rec_model != "hash":
                raise ConfigError(f"run.mode={self.cfg.run.mode} (BinLLM codes) needs model.rec_model: hash, got {m.rec_model!r}")
            if m.rec_config.pretrained_path in ("", NOT_HAVE):
                raise ConfigError("BinLLM codes need a binary encoder: run `python pretrain_collab.py --cfg-path "
                                  "train_configs/<dataset>_binmf.yaml` and set model.rec_config.pretrained_path to "
                                  "the rec_model.pth it writes")
            require_path("model.rec_config.pretrained_path", m.rec_config.pretrained_path,
                         "Create it with pretrain_collab.py (it writes <run dir>/rec_model.pth).", is_dir=False)
        elif uses_ids(prompt):
            mode = "slots"
            if not is_slot_model(m.rec_model):
                raise ConfigError(f"model.prompt_path = {m.prompt_path} has <UserID>/<TargetItemID> slots and run.mode="
                                  f"{self.cfg.run.mode} fills them with vectors (CoLLM), but model.rec_model = "
                                  f"{m.rec_model!r} gives none: use run.mode v3 for BinLLM codes (rec_model hash), or "
                                  f"a slot model: {', '.join(n for n in registry.names('rec_model') if n != 'hash')}, "
                                  f"{', '.join(PROMPT_TABLES)}")
            if m.rec_model not in PROMPT_TABLES and m.rec_config.pretrained_path not in ("", NOT_HAVE):
                require_path("model.rec_config.pretrained_path", m.rec_config.pretrained_path,
                             "Create it with `python pretrain_collab.py` (it writes <run dir>/rec_model.pth).", is_dir=False)
        if m.ckpt:
            find_checkpoint(m.ckpt)
        elif evaluate:
            print("warning: model.ckpt is empty: evaluating the backbone without any trained adapter")
        self.llm_mode = mode
        return prompt

    # ------------------------------------------------------------------------------------------------ codes
    def code_table(self):
        """BinLLM codes from the pretrained binary encoder, computed once in fp32."""
        if run_mode(self.cfg) != "codes":
            return None
        from minigpt4.encoders.factory import load_pretrained_encoder

        encoder = load_pretrained_encoder(self.cfg.model)
        # every rank loads and checks the encoder (same errors everywhere); rank 0's bits are used by all
        user_bits, item_bits = dist.broadcast_object(encoder.code_bits())
        return CodeTable(user_bits, item_bits, mode=self.cfg.model.rec_config.code_mode)

    # ------------------------------------------------------------------------------------------ token splits
    def token_splits(self, tokenizer, prompt, names, codes, history_len=0):
        """history_len: ids of history each row carries for a slot encoder that reads it (SASRec, DIN)."""
        run = self.cfg.run
        slots = self.llm_mode == "slots"
        out = {}
        for split in dict.fromkeys(names):
            limit = run.max_train_rows if split == "train" else run.max_eval_rows
            rows = sample_split(self.rows, split, limit, run.seed)  # same rows in every run
            out[split] = TokenizedSplit(tokenizer, build_prompts(rows, prompt, codes, slots), rows,
                                        self.cfg.model.max_txt_len, name=split,
                                        slot_tokens=self.cfg.model.proj_token_num if slots else 0,
                                        history_len=history_len, slot_layout=self.cfg.model.slot_layout,
                                        add_bos=self.cfg.model.add_bos)
        return out
