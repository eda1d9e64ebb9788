"""Mode coverage and KL from uniform: unit cases and the real classifier on real digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.datasets import read_dataset
from pipeline.evaluate.classifier import classify, load_classifier
from pipeline.evaluate.coverage import mode_coverage
from pipeline.evaluate.images import dataset_images


def test_uniform_and_collapsed_histograms():
    uniform = mode_coverage(np.repeat(np.arange(10), 50))
    assert uniform["mode_coverage"] == 10 and uniform["mode_kl"] == pytest.approx(0.0, abs=1e-12)
    collapsed = mode_coverage(np.full(500, 7))
    assert collapsed["mode_coverage"] == 1 and collapsed["mode_kl"] == pytest.approx(math.log(10))
    assert collapsed["class_shares"][7] == 1.0


def test_stray_samples_below_the_share_do_not_count_as_covered():
    predictions = np.concatenate([np.full(995, 3), np.arange(5, 10)])  # five strays (5..9), 0.1 % each
    assert mode_coverage(predictions, min_share=0.01)["mode_coverage"] == 1
    assert mode_coverage(predictions, min_share=0.0005)["mode_coverage"] == 6


def test_out_of_range_classes_are_an_error():
    with pytest.raises(ValueError, match="class ids"):
        mode_coverage(np.array([0, 10]))


def test_real_digits_cover_ten_classes_and_three_digits_cover_three(classifier, mnist_dir):
    model = load_classifier(classifier[0])
    dataset = read_dataset(mnist_dir)
    test = dataset.indices("test")
    _, predicted = classify(model, dataset_images(dataset, test))
    full = mode_coverage(predicted)
    assert full["mode_coverage"] == 10 and full["mode_kl"] < 0.01

    # A generator that only draws 0, 1 and 2 (real images of them, equally many).
    labels = dataset.labels[test]
    few = np.concatenate([test[labels == d][:150] for d in (0, 1, 2)])
    _, predicted = classify(model, dataset_images(dataset, few))
    collapsed = mode_coverage(predicted)
    assert collapsed["mode_coverage"] == 3
    # log(10/3) = 1.20 for a perfect classifier; the quick one-epoch classifier's few percent of
    # errors spread some mass over other classes, which lowers the KL a little.
    assert collapsed["mode_kl"] == pytest.approx(math.log(10 / 3), abs=0.15)
