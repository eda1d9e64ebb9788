"""A work copy made by pipeline.smoke.smoke_repo is entered again by the next step of `python -m
pipeline results --workdir` (or `make smoke` into the same folder): what a killed stage left there
must not stop DVC from reproducing it, with real DVC and a real training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.smoke import SMOKE_PARAMS, smoke_repo

RUN = "gan-mnist"


def one_small_run(path: Path) -> Path:
    params = yaml.safe_load(SMOKE_PARAMS.read_text())
    params["runs"] = {RUN: {**params["runs"][RUN], "max_images": 512, "snapshot_every": None}}
    params["mnist"].update(limit_train=1000, limit_test=200)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.mark.slow
def test_outputs_of_a_training_killed_before_dvc_recorded_it_are_resumed_not_committed(tmp_path, mnist_source):
    profile = one_small_run(tmp_path / "params.yaml")

    def run(cwd: Path, env: dict, *cmd: str) -> str:
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out.stdout + out.stderr

    with smoke_repo(tmp_path, params_file=profile) as (repo, env):
        run(repo, env, "dvc", "repro", "ingest_mnist")
        # The training's outputs without DVC's bookkeeping (no dvc.lock entry, no .gitignore for
        # them): what `dvc repro` leaves when it is killed during the stage.
        run(repo, env, sys.executable, "-m", "pipeline", "train", RUN)
    checkpoint = repo / "runs" / RUN / "checkpoint.pt"
    assert checkpoint.is_file() and not (repo / "runs" / RUN / ".gitignore").exists()

    with smoke_repo(tmp_path, params_file=profile) as (again, env):
        assert again == repo
        tracked = run(repo, env, "git", "ls-files", "runs")
        assert tracked == "", tracked  # the copy's commit holds no stage output
        out = run(repo, env, "dvc", "repro", f"train@{RUN}")
        assert f"Running stage 'train@{RUN}'" in out
        assert "starting over" not in out  # the checkpoint left behind is resumed
        assert "up to date" in run(repo, env, "dvc", "status", f"train@{RUN}")
    # A third step with nothing changed still commits (an empty commit) and goes on.
    with smoke_repo(tmp_path, params_file=profile) as (third, env):
        assert run(third, env, "git", "ls-files", "runs") == ""
