"""Evaluate a checkpoint (model.ckpt) on run.test_splits (minigpt4/recipes/finetune_llm.py).

Usage: python eval.py --cfg-path train_configs/X.yaml [--options key=value ...]"""

from minigpt4.cli import script_main

if __name__ == "__main__":
    script_main("eval", "Evaluate a checkpoint (model.ckpt) on run.test_splits")
