#!/usr/bin/env bash
# The project's GPU check (scripts/gpu_check.py says what it measures). On the GPU machine, from the repository
# root, after scripts/gpu_pack.sh's pieces arrived (see there):
#   bash scripts/gpu_check.sh --stash     # keep the pieces carried by this call in gpu_cache/ (ignored), nothing else
#   bash scripts/gpu_check.sh [args]      # assemble, check and convert SmolLM2 once, then run the check (≈ 8 min)
# Writes runs/gpu_check/report.md and report.json, and copies them to $OUT when the device tool sets it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
mkdir -p gpu_cache
for d in gpu_pack/1 gpu_pack/2; do
  if [ -d "$d" ]; then cp -n "$d"/* gpu_cache/; fi
done
if [ "${1:-}" = "--stash" ]; then ls -la gpu_cache; exit 0; fi
if [ ! -f gpu_cache/smollm2/config.json ]; then
  for piece in gpu_cache/smollm2.gguf.00 gpu_cache/smollm2.gguf.01 gpu_cache/smollm2.gguf.sha256; do
    [ -f "$piece" ] || { echo "error: $piece is missing: carry gpu_pack/1 and gpu_pack/2 (scripts/gpu_pack.sh)" >&2; exit 2; }
  done
  cat gpu_cache/smollm2.gguf.00 gpu_cache/smollm2.gguf.01 > gpu_cache/smollm2.gguf
  (cd gpu_cache && sha256sum -c smollm2.gguf.sha256)
  "$PY" -m pip install -q --no-deps --target gpu_cache/pylib gpu_cache/gguf-*.whl
  # dequantise once into a plain Hugging Face directory, which the framework and benchmark.py load like any other
  PYTHONPATH=gpu_cache/pylib "$PY" - <<'PYEOF'
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained("gpu_cache", gguf_file="smollm2.gguf")
lm = AutoModelForCausalLM.from_pretrained("gpu_cache", gguf_file="smollm2.gguf", dtype=torch.float32)
lm.hf_quantizer = None
del lm.config.quantization_config
lm.save_pretrained("gpu_cache/smollm2")
tok.save_pretrained("gpu_cache/smollm2")
PYEOF
fi
[ -d gpu_cache/ml-1m ] || unzip -q -o gpu_cache/ml-1m.zip -d gpu_cache/
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
rc=0
"$PY" scripts/gpu_check.py "$@" || rc=$?
if [ -n "${OUT:-}" ]; then cp runs/gpu_check/report.md runs/gpu_check/report.json "$OUT"/ 2>/dev/null || true; fi
exit $rc
