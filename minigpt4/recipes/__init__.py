"""One recipe per stage, each a single file to read top to bottom (config -> data -> model -> loop -> evaluation
-> files): `pretrain_encoder.py` (stage 0, pretrain_collab.py) and `finetune_llm.py` (stages 1 and 2, eval.py).
`derived.py` holds what a run derives from its read-only config and its data (`Derived`)."""
