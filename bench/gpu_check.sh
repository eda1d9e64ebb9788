#!/usr/bin/env bash
# The GPU check, for a machine with one CUDA GPU (estimated 5 to 7 minutes on one H100; not
# yet run on one; each step has a time limit, 9.5 minutes in all):
#   1. the test suite's GPU-marked tests (bf16 vs fp32 vs CPU numerics, the auto settings);
#   2. bench/train_speed.py for the four default model shapes (ours vs the reference loop);
#   3. a short dcgan-mnist run on the GPU next to the same run on the CPU: losses per epoch, and
#      each run's train.json record (GPU name, the precision and layout `auto` chose, versions, img/s);
#   4. bench/repro_time.py: the training time of each default run on this GPU;
#   5. last, as it may be slow to compile: whether `compile: true` (torch.compile) speeds a step up.
# Run from the repository root, after `make setup`, or on a bare machine with python3 and
# torch after `bash bench/gpu_prepare.sh` has packed .gpu/ beside it (see that script):
#     bash bench/gpu_check.sh
# Every step runs even when one before it failed; the summary at the end lists each step's
# exit status (124: out of time) and seconds, and the script fails if any step did. Each
# step's output goes to $OUT/<step>.txt as it comes, so a kill loses nothing already printed.
# `--dry-run` runs every step tiny on the CPU, to check the script itself where no GPU is.
set -uo pipefail
DEVICE=cuda SPEED=(--steps 200 --repeats 3) TREND=(--epochs 3) REPRO=(--epochs 1 4) COMPILE=(--steps 200)
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
# The packed wheels only where the packages are missing (a .venv has them; and wheels packed
# for the GPU machine's Python would not install into another one).
if [ -d .gpu/wheels ] && ! "$PY" -c "import dvclive, pydantic" 2>/dev/null; then
    rm -rf /tmp/gpu-site
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/gpu-site .gpu/wheels/*.whl || exit 1
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
step() {  # step NAME LOG SECONDS COMMAND...: run it under a time limit, output to $OUT/LOG too
    local name=$1 log=$2 limit=$3 start=$SECONDS rc
    shift 3
    echo "== $name"
    # tqdm redraws its bar after '\r': make those separate lines and strip the bars, keeping
    # whatever else shares a line with one (a warning); unbuffered, so a kill loses nothing.
    timeout "$limit" "$@" 2>&1 | sed -u 's/\r/\n/g' \
        | sed -u -E 's/[^|]*\|[^|]*\| *[0-9]+\/[0-9]+ \[[^]]*\]//g; /^ *$/d' | tee "$OUT/$log"
    rc=${PIPESTATUS[0]}
    summary+=("$(printf '%-34s rc %-3s %5d s' "$name" "$rc" $((SECONDS - start)))")
}
# The GPU-marked tests live in tests/test_gpu.py; collecting all of tests/ would need scrapy
# and facenet-pytorch, which a bare GPU image lacks and these tests do not use.
step "1. GPU-marked tests" tests.txt 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
step "2. train_speed (ours vs reference)" train_speed.txt 90 \
    "$PY" bench/train_speed.py --device "$DEVICE" "${SPEED[@]}"
step "3. loss trend, GPU vs CPU" loss_trend.txt 60 \
    "$PY" bench/loss_trend.py --out /tmp/gpu_check_trend "${TREND[@]}"
step "4. repro_time per default run" repro_time.txt 210 \
    "$PY" bench/repro_time.py --device "$DEVICE" --out "$OUT" "${REPRO[@]}"
step "5. torch.compile vs not" compile.txt 120 \
    "$PY" bench/train_speed.py --device "$DEVICE" --shapes dcgan-mnist dcgan-celeba --repeats 1 --compile "${COMPILE[@]}"

echo "== summary"
failed=0
for line in "${summary[@]}"; do
    echo "$line"
    [[ $line == *" rc 0 "* ]] || failed=1
done
exit $failed
