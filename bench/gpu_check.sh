#!/usr/bin/env bash
# The GPU check, for a machine with one CUDA GPU (under 8 minutes on one H100):
#   1. the test suite's GPU-marked tests (bf16 vs fp32 vs CPU numerics, the auto settings);
#   2. bench/train_speed.py for the four default model shapes (ours vs the reference loop);
#   3. a short dcgan-mnist run on the GPU next to the same run on the CPU: losses per epoch.
# Run from the repository root after `make setup`:  bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PYEOF

echo "== 1. GPU-marked tests"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ 2>&1 | tail -5

echo "== 2. training-step throughput, ours vs the reference loop"
"$PY" bench/train_speed.py --device cuda --steps 200 --repeats 3 | tee "$OUT/train_speed.txt"

echo "== 3. a short dcgan-mnist run: GPU (auto settings) vs CPU"
"$PY" bench/loss_trend.py --out "$OUT/trend" | tee "$OUT/loss_trend.txt"
