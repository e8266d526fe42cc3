"""Stage 0: pretrain a collaborative encoder (BinMF binary encoder; minigpt4/recipes/pretrain_encoder.py).

Usage: python pretrain_collab.py --cfg-path train_configs/X.yaml [--options key=value ...]"""

from minigpt4.cli import script_main

if __name__ == "__main__":
    script_main("collab", "Stage 0: pretrain a collaborative encoder (BinMF binary encoder)")
