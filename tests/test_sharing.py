"""Two clones share runs through a git server and a DVC remote (docs/sharing.md), with real DVC.

Clone A runs a trimmed smoke profile (one MNIST run; the whole DAG, the crawl of the mock board
and the face crop included) and pushes: git, `dvc push`, and `dvc exp push` for an experiment.
Clone B, on the same "server" (a bare git repo) and remote (a local directory, which is a real
DVC remote: the cloud ones differ only in the URL), pulls and, without training anything, has
a clean `dvc status`, A's numbers in `python -m pipeline compare`, A's experiment, and a
`dvc repro` that runs nothing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.smoke import SMOKE_PARAMS, smoke_repo

RUN = "gan-mnist"


def trimmed_profile(path: Path) -> Path:
    """The smoke profile cut to what sharing needs: one small MNIST run, the fastest anime
    detector, a smaller MNIST, no Inception (the MNIST classifier's distances are numbers enough
    to compare across clones, and the Inception's passes were most of this test's minutes).
    Every stage of the DAG still runs (so `dvc status` in the other clone covers them all);
    their own results are the end-to-end test's business."""
    params = yaml.safe_load(SMOKE_PARAMS.read_text())
    params["runs"] = {RUN: {**params["runs"][RUN], "max_images": 1024}}
    params["mnist"].update(limit_train=3000, limit_test=1000)
    params["anime"]["faces"]["detector"] = "anime_cascade"
    params["evaluate"].update(inception=False, classifier_min_accuracy=0.5, num_samples=500, num_real=500, curve_samples=300,
                              probe_max_train=500, probe_max_test=300, probe_val_size=200)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_run_made_in_one_clone_is_compared_in_another(tmp_path, mnist_source):
    server, remote = tmp_path / "server.git", tmp_path / "dvc-remote"
    subprocess.run(["git", "init", "-q", "--bare", str(server)], check=True)

    def runner(cwd: Path, env: dict):
        def run(*cmd: str) -> str:
            cmd = [sys.executable, *cmd[1:]] if cmd[0] == "python" else list(cmd)
            out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, f"{' '.join(cmd)} in {cwd}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
            return out.stdout
        return run

    with smoke_repo(tmp_path / "a", params_file=trimmed_profile(tmp_path / "params.yaml")) as (a, env):
        in_a = runner(a, env)
        in_a("git", "remote", "add", "origin", str(server))
        in_a("dvc", "remote", "add", "-d", "store", str(remote))
        in_a("dvc", "repro")
        in_a("git", "add", "-A")
        in_a("git", "commit", "-q", "-m", "results")
        in_a("git", "push", "-q", "origin", "HEAD")
        in_a("dvc", "push")
        a_compare = in_a("python", "-m", "pipeline", "compare")
        a_weights = sha256(a / "runs" / RUN / "generator.pt")
        # An experiment: a variation that is not a commit, shared by name.
        in_a("dvc", "exp", "run", "-n", "faster-lr", "-S", f"runs.{RUN}.lr=0.001")
        in_a("dvc", "exp", "push", "origin", "faster-lr")
        a_exp_compare = in_a("python", "-m", "pipeline", "compare", "faster-lr")
        a_exp_weights = sha256(a / "runs" / RUN / "generator.pt")
    assert a_exp_weights != a_weights  # the experiment trained something else

    b = tmp_path / "b"
    subprocess.run(["git", "clone", "-q", str(server), str(b)], check=True, env=env)
    in_b = runner(b, env)
    in_b("dvc", "pull")
    assert "Data and pipelines are up to date" in in_b("dvc", "status")
    assert sha256(b / "runs" / RUN / "generator.pt") == a_weights
    # The remote holds the crawl's store and the detection memory (docs/sharing.md says why).
    assert (b / "data" / "raw" / "anime" / "manifest.jsonl").stat().st_size > 0
    assert any((b / "data" / "cache" / "anime-faces").iterdir())

    b_compare = in_b("python", "-m", "pipeline", "compare")
    assert b_compare == a_compare and f"| {RUN} " in b_compare

    in_b("dvc", "exp", "pull", "origin", "faster-lr")
    assert "faster-lr" in in_b("dvc", "exp", "list")
    assert in_b("python", "-m", "pipeline", "compare", "faster-lr") == a_exp_compare

    # Nothing to do in B: no stage runs, no weight changes.
    assert "Running stage" not in in_b("dvc", "repro")
    assert sha256(b / "runs" / RUN / "generator.pt") == a_weights
    # The experiment's outputs came with it: applying it checks out A's experiment weights.
    in_b("dvc", "exp", "apply", "faster-lr")
    assert sha256(b / "runs" / RUN / "generator.pt") == a_exp_weights
    assert "Data and pipelines are up to date" in in_b("dvc", "status")
