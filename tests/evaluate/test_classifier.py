"""The MNIST classifier: trained on real MNIST, it must be accurate or the stage fails."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.datasets import read_dataset, sha256_file
from pipeline.evaluate.classifier import FEATURE_DIM, ClassifierAccuracyError, classify, load_classifier, train_mnist_classifier
from pipeline.evaluate.images import dataset_images
from tests.evaluate.eval_helpers import make_params


def test_one_epoch_on_6k_real_images_reaches_95_percent(classifier):
    path, metrics = classifier
    assert metrics["test_accuracy"] >= 0.95
    assert metrics["train_images"] == 6_000 and metrics["test_images"] == 2_000
    written = json.loads((path.parent / "metrics.json").read_text())
    assert written["test_accuracy"] == metrics["test_accuracy"]
    assert written["sha256"] == sha256_file(path)


def test_features_and_predictions_of_real_test_images(classifier, mnist_dir):
    model = load_classifier(classifier[0])
    dataset = read_dataset(mnist_dir)
    index = dataset.indices("test")[:300]
    features, predicted = classify(model, dataset_images(dataset, index), batch_size=64)
    assert features.shape == (300, FEATURE_DIM) and features.dtype == np.float32
    assert (predicted == dataset.labels[index]).mean() >= 0.93
    # Batching must not change anything (eval mode: dropout off, no batch statistics).
    again, _ = classify(model, dataset_images(dataset, index), batch_size=300)
    np.testing.assert_allclose(features, again, rtol=1e-5, atol=1e-6)


def test_classifier_below_the_bar_fails_loudly_and_writes_nothing(mnist_dir, tmp_path):
    out = tmp_path / "classifier"
    with pytest.raises(ClassifierAccuracyError, match="evaluate.classifier_min_accuracy"):
        train_mnist_classifier(mnist_dir, out, make_params(), limit_train=100, min_accuracy=0.99)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind


def test_classifier_accepts_generator_sized_images(classifier):
    # A generator may produce 32 x 32; the classifier resizes to its 28 x 28.
    model = load_classifier(classifier[0])
    features, predicted = classify(model, torch.zeros(4, 1, 32, 32, dtype=torch.uint8))
    assert features.shape == (4, FEATURE_DIM) and predicted.shape == (4,)
