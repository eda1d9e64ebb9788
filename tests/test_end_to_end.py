"""The real `dvc repro` of the smoke profile on real MNIST, in a temporary copy of the repo."""

import json
import math
import subprocess

import pytest
from PIL import Image

from pipeline.smoke import smoke_repo


@pytest.mark.slow
def test_dvc_repro_smoke_profile_end_to_end(tmp_path, mnist_source):
    def dvc(*args):
        return subprocess.run(["dvc", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    with smoke_repo(tmp_path) as (repo, env):
        dvc("repro")
    for run in ("gan-mnist", "dcgan-mnist"):
        run_dir = repo / "runs" / run
        for name in ("generator.pt", "discriminator.pt", "checkpoint.pt", "model.json", "samples/final.png"):
            assert (run_dir / name).is_file(), name
        final = json.loads((run_dir / "dvclive" / "metrics.json").read_text())
        assert all(math.isfinite(final[k]) for k in ("loss_d", "loss_g", "d_real", "d_fake"))
        assert Image.open(run_dir / "samples" / "final.png").size == (242, 242)

    # DVC sees the metrics of both runs, so `dvc exp show` / `dvc metrics diff` can compare them.
    shown = json.loads(dvc("metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert {"runs/gan-mnist/dvclive/metrics.json", "runs/dcgan-mnist/dvclive/metrics.json"} <= set(files)
    exp = dvc("exp", "show", "--no-pager", "--csv")
    assert "runs/dcgan-mnist/dvclive/metrics.json:loss_g" in exp

    # Nothing changed: a second repro runs no stage.
    again = dvc("repro")
    assert "Running stage" not in again
    assert "up to date" in dvc("status")

    # A params change re-runs only the affected run.
    params = (repo / "params.yaml").read_text().replace("ngf: 32", "ngf: 16", 1)
    (repo / "params.yaml").write_text(params)
    out = dvc("repro")
    assert "Running stage 'train@dcgan-mnist'" in out
    assert "Running stage 'train@gan-mnist'" not in out
    assert "starting over" in out  # the persisted checkpoint of the old params is not resumed
