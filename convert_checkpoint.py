"""Convert an upstream CoLLM / BinLLM `checkpoint_best.pth` into this framework's checkpoint directory, once.

`model.ckpt` accepts the .pth file itself too (it is then converted into `<file>.converted/` beside it); this
command is for when that place is not writable, or to look at what the file holds. The directory loads with the
run's config like any checkpoint written here, and peft reads its adapter (`PeftModel.from_pretrained`).

Usage: python convert_checkpoint.py path/to/checkpoint_best.pth [--out DIR]"""

import argparse
import json
import sys


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", help="upstream's checkpoint_best.pth")
    p.add_argument("--out", help="the directory to write (default: <file>.converted beside the file)")
    args = p.parse_args(argv)
    from minigpt4.config import ConfigError
    from minigpt4.train.checkpoint import converted_upstream, read_meta

    try:
        out = converted_upstream(args.file, where="checkpoint file", out=args.out)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    meta = read_meta(out)
    print(json.dumps({k: meta[k] for k in ("mode", "prompt_path", "lora", "epoch") if k in meta}))
    print(f"score it with the config of the stage that trained it: python eval.py --cfg-path <config> --options "
          f"model.ckpt={out}")
    return out


if __name__ == "__main__":
    main()
