#!/usr/bin/env bash
# Packs into .gpu/ what bench/gpu_check.sh needs on a bare GPU machine that has Python and
# PyTorch but no network and none of this project's other dependencies:
#   .gpu/wheels/        the packages listed in bench/gpu_wheels.txt, at the versions this .venv
#                       holds (so the GPU runs what was tested here), built for that machine's Python;
#   .gpu/shared/data/   the MNIST IDX files from ../shared (tests and benchmarks read them there).
# Run here, where pip reaches the package index, after `make setup`:
#     bash bench/gpu_prepare.sh [PYTHON_VERSION]     # the GPU machine's python3, default 3.12
# then send the repository with .gpu/ (git ignores it) and run `bash bench/gpu_check.sh` there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYVER=${1:-3.12}
SHARED=${SHARED_DIR:-../shared}
rm -rf .gpu
mkdir -p .gpu/wheels .gpu/shared/data
specs=$("$PY" - <<'PYEOF'
import importlib.metadata as md
from pathlib import Path

names = [line.split("#")[0].strip() for line in Path("bench/gpu_wheels.txt").read_text().splitlines()]
print(" ".join(f"{name}=={md.version(name)}" for name in names if name))
PYEOF
)
for spec in $specs; do
    # A wheel for that Python and x86-64 Linux, or a pure-Python one.
    if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d .gpu/wheels "$spec"; then
        # No such wheel: build one from the sdist, which is right only for a pure-Python
        # package (a binary one built here would not load on that machine's Python).
        echo "$spec: no wheel to download; building one from its sdist"
        mkdir -p .gpu/built
        "$PY" -m pip wheel --quiet --no-deps -w .gpu/built "$spec"
        for wheel in .gpu/built/*.whl; do
            [[ $wheel == *-none-any.whl ]] || { echo "$wheel: not pure Python; cannot pack it for Python $PYVER" >&2; exit 1; }
            mv "$wheel" .gpu/wheels/
        done
    fi
done
rm -rf .gpu/built
cp -r "$SHARED/data/mnist" .gpu/shared/data/mnist
echo "$(ls .gpu/wheels | wc -l) wheels; $(du -sh .gpu | cut -f1) in .gpu/ (the GPU tool's carry limit is 64 MiB)"
