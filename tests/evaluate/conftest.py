"""Fixtures for the evaluation tests: real MNIST, a quickly trained classifier, tiny runs.

Everything heavy is session-scoped and small so the suite stays within a few minutes on two
shared cores: a 12k/2k MNIST subset, one classifier epoch on 6k images, Inception on a dozen images.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

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
def inception_weights(tmp_path_factory) -> Path:
    """A weights file of the exact Inception architecture, with random weights.

    The real file cannot be downloaded in tests; this one proves the loading and preprocessing
    path, not the number. torch-fidelity's constructor always loads weights, so its loader is
    patched out for the one construction that creates the file. Conv weights get He-normal
    values so activations keep their scale through 90 layers (PyTorch's default init shrinks
    them to ~1e-8, where every image would look alike).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None), \
            mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", return_value={}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    state = net.state_dict()
    rng = torch.Generator().manual_seed(0)
    for name, value in state.items():
        if name.endswith("conv.weight"):
            value.normal_(0, (2 / value[0].numel()) ** 0.5, generator=rng)
    path = tmp_path_factory.mktemp("inception") / "weights-inception-random.pth"
    torch.save(state, path)
    return path
