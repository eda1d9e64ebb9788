"""`python -m pipeline results`: the README's Results, reproduced by one command.

Runs the real `dvc repro report` of `params.results.yaml` (the seed's MNIST experiments, a few
epochs, three seeds each, full real MNIST) in a fresh copy of the repo, as `make smoke` does
for its profile, then copies the report page with its sample grids and curves to
`docs/results/` so the README can show them. The copy is kept for `dvc exp show` /
`python -m pipeline compare` there.
"""

from __future__ import annotations

import shutil
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

from pipeline.config import ParamsError, load_params
from pipeline.datasets import staged_dir
from pipeline.smoke import REPO, run, smoke_repo

RESULTS_PARAMS = REPO / "params.results.yaml"
DOCS = REPO / "docs" / "results"


def results(workdir: Path | None = None, out: Path = DOCS, only: list[str] | None = None) -> Path:
    """`only`: shell patterns of run names. Those runs are reproduced (`dvc repro evaluate@<run>`)
    and the page is built from what is there, the rest shown as not trained yet, so a profile
    whose long runs take days is committed in steps; without it, `dvc repro report`."""
    started = time.perf_counter()
    with smoke_repo(workdir, params_file=RESULTS_PARAMS) as (dest, env):
        if only:
            names = [n for n in load_params(dest / "params.yaml").runs if any(fnmatch(n, p) for p in only)]
            if not names:
                raise ParamsError(f"{RESULTS_PARAMS}: no run matches --only {' '.join(only)}")
            run(["dvc", "repro", *(f"evaluate@{name}" for name in names)], dest, env)
            # The report stage would reproduce every run first: build the page directly.
            run([sys.executable, "-m", "pipeline", "report"], dest, env)
        else:
            run(["dvc", "repro", "report"], dest, env)
    with staged_dir(out) as tmp:
        shutil.copytree(dest / "reports", tmp, dirs_exist_ok=True)
    minutes = (time.perf_counter() - started) / 60
    print(f"\nresults copied to {out} ({minutes:.0f} min); the repo copy is kept at {dest}")
    return out
