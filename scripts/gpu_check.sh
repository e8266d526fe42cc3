#!/usr/bin/env bash
# The project's GPU check (scripts/gpu_check.py says what it measures). On the GPU machine, from the repository
# root, with scripts/gpu_pack.sh's pieces carried there (see there for the calls):
#   bash scripts/gpu_check.sh --stash                  # keep the pieces carried by this call in gpu_cache/ and stop
#   bash scripts/gpu_check.sh --stash --parts 7b,rank  # keep them, then run the parts that need no SmolLM2 weights
#   bash scripts/gpu_check.sh [args]                   # assemble and convert SmolLM2 once, then run the check
# Writes runs/gpu_check/report.md and report.json after each part, and copies them to $OUT when the device tool
# sets it, so a call stopped at its time limit still brings back the parts that finished.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
mkdir -p gpu_cache
for d in gpu_pack/1 gpu_pack/2; do
  if [ -d "$d" ]; then cp -rn "$d"/* gpu_cache/; fi
done
if [ "${1:-}" = "--stash" ]; then
  shift
  ls -la gpu_cache
  [ $# -gt 0 ] || exit 0
fi
# what the framework needs beyond torch, transformers and peft, from the carried wheels (no network there)
if [ ! -d gpu_cache/pylib ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target gpu_cache/pylib gpu_cache/*.whl
fi
export PYTHONPATH="$PWD/gpu_cache/pylib${PYTHONPATH:+:$PYTHONPATH}"
if [ ! -f gpu_cache/smollm2/config.json ] && [ -f gpu_cache/smollm2.gguf.01 ]; then
  for piece in gpu_cache/smollm2.gguf.00 gpu_cache/smollm2.gguf.sha256; do
    [ -f "$piece" ] || { echo "error: $piece is missing: carry gpu_pack/1 and gpu_pack/2 (scripts/gpu_pack.sh)" >&2; exit 2; }
  done
  cat gpu_cache/smollm2.gguf.00 gpu_cache/smollm2.gguf.01 > gpu_cache/smollm2.gguf
  (cd gpu_cache && sha256sum -c smollm2.gguf.sha256)
  # dequantise once into a plain Hugging Face directory, which the framework and benchmark.py load like any other
  "$PY" - <<'PYEOF'
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("gpu_cache", gguf_file="smollm2.gguf")
lm = AutoModelForCausalLM.from_pretrained("gpu_cache", gguf_file="smollm2.gguf", dtype=torch.float32)
lm.hf_quantizer = None
if hasattr(lm.config, "quantization_config"):
    del lm.config.quantization_config
lm.save_pretrained("gpu_cache/smollm2")
tok.save_pretrained("gpu_cache/smollm2")
PYEOF
fi
[ -d gpu_cache/ml-1m ] || "$PY" -m zipfile -e gpu_cache/ml-1m.zip gpu_cache/  # no unzip there
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_check.py "$@" ${OUT:+--mirror "$OUT"}
