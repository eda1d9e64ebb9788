"""The standard-Inception path, offline: a local weights file of the right architecture.

The weights are random (conftest.inception_weights), so these tests prove loading and
preprocessing, not the FID number.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from pipeline.datasets import sha256_file
from pipeline.evaluate.inception import FEATURE_DIM, InceptionWeightsError, inception_features, load_inception


@pytest.fixture(scope="module")
def digits(mnist_dir) -> torch.Tensor:
    from pipeline.datasets import read_dataset
    from pipeline.evaluate.images import dataset_images

    dataset = read_dataset(mnist_dir)
    return dataset_images(dataset, dataset.indices("test")[:4])


@pytest.fixture(scope="module")
def plain(inception_weights, digits) -> tuple[torch.nn.Module, str, np.ndarray]:
    """(model, weights sha256, features of `digits`) with the TF1-compatible resize."""
    model, sha = load_inception(str(inception_weights), antialias=False)
    return model, sha, inception_features(model, digits, batch_size=3)


def test_features_equal_torchmetrics_fid_extractor_on_tiled_grayscale(inception_weights, digits, plain):
    _, sha, ours = plain
    assert sha == sha256_file(inception_weights)
    assert ours.shape == (4, FEATURE_DIM) and np.isfinite(ours).all()
    assert ours.std(axis=0).max() > 0  # different digits, different features

    # The library's own FID metric, same file, same resize switch, fed explicit RGB uint8.
    metric = FrechetInceptionDistance(feature=FEATURE_DIM, feature_extractor_weights_path=str(inception_weights),
                                      antialias=False)
    theirs = metric.inception(digits.expand(-1, 3, -1, -1).contiguous()).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_antialias_switch_is_honoured(inception_weights, digits, plain):
    smooth, _ = load_inception(str(inception_weights), antialias=True)
    b = inception_features(smooth, digits[:2], batch_size=2)
    assert not np.allclose(plain[2][:2], b)  # TF1-compatible resize vs torch's antialiased bilinear


def test_missing_weights_file_says_how_to_provide_it(tmp_path):
    with pytest.raises(InceptionWeightsError) as error:
        load_inception(str(tmp_path / "nope.pth"), antialias=False)
    message = str(error.value)
    assert "evaluate.inception_weights" in message and "evaluate.inception: false" in message
    assert "weights-inception-2015-12-05" in message


def test_a_file_of_another_network_is_refused(tmp_path):
    wrong = tmp_path / "lenet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), wrong)
    with pytest.raises(InceptionWeightsError, match="not the Inception v3 FID weights"):
        load_inception(str(wrong), antialias=False)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(InceptionWeightsError, match="not a PyTorch state dict"):
        load_inception(str(garbage), antialias=False)


def test_images_must_be_uint8(plain):
    model = plain[0]
    with pytest.raises(ValueError, match="uint8"):
        inception_features(model, torch.zeros(1, 3, 8, 8), batch_size=1)
