"""`python -m pipeline results`: the README's Results, reproduced by one command.

Runs the real `dvc repro report` of `params.results.yaml` (the seed's MNIST experiments, a few
epochs, three seeds each, full real MNIST) in a fresh copy of the repo, as `make smoke` does
for its profile, then copies the report page with its sample grids and curves to
`docs/results/` so the README can show them. The copy is kept for `dvc exp show` /
`python -m pipeline compare` there.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pipeline.datasets import staged_dir
from pipeline.smoke import REPO, run, smoke_repo

RESULTS_PARAMS = REPO / "params.results.yaml"
DOCS = REPO / "docs" / "results"


def results(workdir: Path | None = None, out: Path = DOCS) -> Path:
    started = time.perf_counter()
    with smoke_repo(workdir, params_file=RESULTS_PARAMS) as (dest, env):
        run(["dvc", "repro", "report"], dest, env)
    with staged_dir(out) as tmp:
        shutil.copytree(dest / "reports", tmp, dirs_exist_ok=True)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nresults copied to {out} ({minutes:.0f} min); the repo copy is kept at {dest}")
    return out
