"""The DAG as DVC resolves it: a face run never reaches MNIST, training never reaches an evaluator."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.dvc_helpers import run
from pipeline.smoke import REPO


@pytest.fixture(scope="module")
def dag_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dag")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    run(["dvc", "init", "-q"], repo)
    return repo


def upstream(repo, target: str) -> str:
    """Every stage `dvc repro <target>` would run, as `dvc dag` draws them."""
    return run(["dvc", "dag", "--dot", target], repo).stdout


@pytest.mark.parametrize("target", ["train@dcgan-celeba", "evaluate@dcgan-celeba", "evaluate@dcgan-anime"])
def test_face_runs_never_need_mnist_or_its_classifier(dag_repo, target):
    stages = upstream(dag_repo, target)
    assert target in stages
    assert "mnist" not in stages, stages


@pytest.mark.parametrize("target", ["train@dcgan-mnist", "train@gan-mnist", "train@dcgan-celeba"])
def test_training_never_depends_on_an_evaluator(dag_repo, target):
    stages = upstream(dag_repo, target)
    assert "domain_evaluator" not in stages and "fid_reference" not in stages, stages


def test_mnist_evaluation_uses_the_classifier(dag_repo):
    stages = upstream(dag_repo, "evaluate@dcgan-mnist")
    assert "domain_evaluator@mnist" in stages and "fid_reference@mnist" in stages and "train@dcgan-mnist" in stages


def test_the_mnist_classifier_runs_after_the_mnist_ingest(dag_repo):
    # It trains on data/datasets/mnist: without that dep, `dvc repro` could order it first and
    # call it up to date after a new MNIST.
    assert "ingest_mnist" in upstream(dag_repo, "domain_evaluator@mnist")


def test_an_mnist_only_report_builds_nothing_for_faces(tmp_path):
    """`dvc repro report` (what `make repro` runs) reaches only what the runs need: with MNIST
    runs alone, no crawl, no CelebA, no face reference (a bare `dvc repro` would build every
    dataset stage: their foreach lists are fixed, docs/pipeline.md)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["runs"] = {name: run for name, run in params["runs"].items() if run["dataset"] == "mnist"}
    assert set(params["runs"]) == {"gan-mnist", "dcgan-mnist"}
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    run(["dvc", "init", "-q"], tmp_path)
    stages = upstream(tmp_path, "report")
    assert all(s in stages for s in ("ingest_mnist", "fid_reference@mnist", "evaluate@gan-mnist", "evaluate@dcgan-mnist"))
    assert not any(word in stages for word in ("crawl", "crop", "celeba", "anime")), stages
