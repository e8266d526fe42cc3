"""CTRL, first stage: align a DIN with the backbone's view of the train rows as text (minigpt4/recipes/align_ctrl.py).
The second stage is `pretrain_collab.py` with a `<dataset>_ctrl.yaml`, which starts the DIN from the aligned weights.

Usage: python align_ctrl.py --cfg-path train_configs/ml100k_ctrl_align.yaml [--options key=value ...]"""

from minigpt4.cli import script_main

if __name__ == "__main__":
    script_main("ctrl_align", "CTRL, first stage: align a DIN with the backbone's view of the samples as text")
