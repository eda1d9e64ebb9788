"""Fixtures shared by the whole suite: paths to the real data in ../shared, small real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# SHARED_DIR: where bench/gpu_check.sh points it on a machine that has no ../shared.
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
MNIST_DIR = SHARED / "data" / "mnist"


def require(path: Path) -> Path:
    # Fail, don't skip: CI always has ../shared, and a silently skipped suite proves nothing.
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests read real data from ../shared (see its README)")
    return path


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    return require(MNIST_DIR)


@pytest.fixture(scope="session")
def mnist_small(tmp_path_factory, mnist_source) -> Path:
    """A real-MNIST dataset folder with the first 2,048 train and 512 test images."""
    from pipeline.config import MnistParams
    from pipeline.ingest.mnist import ingest_mnist

    out = tmp_path_factory.mktemp("datasets") / "mnist"
    ingest_mnist(MnistParams(source=str(mnist_source), limit_train=2048, limit_test=512), out)
    return out


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests need CUDA; elsewhere they are skipped (bench/gpu_check.sh runs them).
    `manual` ones (a whole run of minutes) run only when asked for: `pytest -m manual`."""
    import torch

    if "manual" not in (config.option.markexpr or ""):
        for item in items:
            if "manual" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="a whole run of minutes: pytest -m manual runs it"))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run bench/gpu_check.sh on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """The suite's own torch hub cache and Inception feature memory: tests never read a user's
    cached features or conversions (a hit would hide a bug), nor leave theirs behind. Stage
    subprocesses (dvc repro) inherit them."""
    saved = {name: os.environ.get(name) for name in ("TORCH_HOME", "DCGAN_FEATURE_MEMO")}
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))
    os.environ["DCGAN_FEATURE_MEMO"] = str(tmp_path_factory.mktemp("feature-memo"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
