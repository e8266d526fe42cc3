"""Stage 1: LoRA on text-only prompts (TALLRec); also any LLM stage (minigpt4/recipes/finetune_llm.py).

Usage: python train_collm_mf_din.py --cfg-path train_configs/X.yaml [--options key=value ...]"""

from minigpt4.cli import script_main

if __name__ == "__main__":
    script_main("llm", "Stage 1: LoRA on text-only prompts (TALLRec); also any LLM stage")
