"""Stage 2: BinLLM, LoRA with user/item codes written into the prompt (minigpt4/recipes/finetune_llm.py).

Usage: python train_binllm.py --cfg-path train_configs/X.yaml [--options key=value ...]"""

from minigpt4.cli import script_main

if __name__ == "__main__":
    script_main("llm", "Stage 2: BinLLM, LoRA with user/item codes written into the prompt")
