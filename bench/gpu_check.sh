#!/usr/bin/env bash
# The GPU check, for a machine with one CUDA GPU (estimated 5 to 7 minutes on one H100; not yet run on one):
#   1. the test suite's GPU-marked tests (bf16 vs fp32 vs CPU numerics, the auto settings);
#   2. bench/train_speed.py for the four default model shapes (ours vs the reference loop);
#   3. a short dcgan-mnist run on the GPU next to the same run on the CPU: losses per epoch;
#   4. bench/repro_time.py: the training time of each default run on this GPU;
#   5. last, as it may be slow to compile: whether `compile: true` (torch.compile) speeds a step up.
# Run from the repository root, after `make setup`, or on a bare machine with python3 and
# torch after `bash bench/gpu_prepare.sh` has packed .gpu/ beside it (see that script):
#     bash bench/gpu_check.sh
# Every step runs even when one before it failed; the summary at the end lists each step's
# exit status and seconds, and the script fails if any step did. Figures go to $OUT.
# `--dry-run` runs every step tiny on the CPU, to check the script itself where no GPU is.
set -uo pipefail
DEVICE=cuda SPEED=(--steps 200 --repeats 3) TREND=() REPRO=() COMPILE=(--steps 200)
if [ "${1:-}" = "--dry-run" ]; then
    DEVICE=cpu SPEED=(--steps 2 --repeats 1) TREND=(--epochs 1 --images 1024)
    REPRO=(--runs dcgan-celeba --max-images 256) COMPILE=(--steps 2)
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ -d .gpu/wheels ]; then
    rm -rf /tmp/gpu-site && "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/gpu-site .gpu/wheels/*.whl || exit 1
    export PYTHONPATH=/tmp/gpu-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -d .gpu/shared ] && export SHARED_DIR="$PWD/.gpu/shared"

DEVICE=$DEVICE "$PY" - <<'PYEOF' || exit 1
import os
import torch
if os.environ["DEVICE"] == "cuda":
    assert torch.cuda.is_available(), "no CUDA device: this script is for a GPU machine (or use --dry-run)"
    print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
import dvclive, pydantic, pipeline.train  # noqa: F401  (fail here, not in every step)
PYEOF

summary=()
step() {  # step NAME LOG COMMAND...: run it, keep its output in $OUT/LOG, record rc and seconds
    local name=$1 log=$2 start=$SECONDS rc
    shift 2
    echo "== $name"
    "$@" 2>&1 | tr '\r' '\n' | grep -v -E '\| *[0-9]+/[0-9]+ \[|^ *$' | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
    summary+=("$(printf '%-34s rc %-3s %5d s' "$name" "$rc" $((SECONDS - start)))")
}
# The GPU-marked tests live in tests/test_gpu.py; collecting all of tests/ would need scrapy,
# OpenCV and facenet-pytorch, which a bare GPU image lacks and these tests do not use.
step "1. GPU-marked tests" tests.txt "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
step "2. train_speed (ours vs reference)" train_speed.txt \
    "$PY" bench/train_speed.py --device "$DEVICE" "${SPEED[@]}"
step "3. loss trend, GPU vs CPU" loss_trend.txt "$PY" bench/loss_trend.py --out /tmp/gpu_check_trend "${TREND[@]}"
step "4. repro_time per default run" repro_time.txt "$PY" bench/repro_time.py --device "$DEVICE" --out "$OUT" "${REPRO[@]}"
step "5. torch.compile vs not" compile.txt timeout 300 "$PY" bench/train_speed.py --device "$DEVICE" \
    --shapes dcgan-mnist dcgan-celeba --repeats 1 --compile "${COMPILE[@]}"

echo "== summary"
failed=0
for line in "${summary[@]}"; do
    echo "$line"
    [[ $line == *" rc 0 "* ]] || failed=1
done
exit $failed
