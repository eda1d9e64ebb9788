"""evaluate@<run> end to end on tiny run folders, and the training-time DomainFID tracker."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.datasets import read_dataset
from pipeline.evaluate.images import dataset_images, to_unit
from pipeline.evaluate.reference import ReferenceError, compute_reference, load_reference
from pipeline.evaluate.run import DomainFID, evaluate_run
from tests.evaluate.eval_helpers import TEST, make_params, make_run

FLAT_KEYS = {"fid", "fid_domain", "kid", "precision", "recall", "mode_coverage", "mode_kl", "probe_acc",
             "probe_acc_random_d", "probe_acc_pixels", "probe_acc_n10", "probe_acc_all", "fid_num_samples",
             "fid_num_real", "fid_antialias"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mnist_dir, classifier):
    out = tmp_path_factory.mktemp("reference") / "mnist"
    compute_reference("mnist", mnist_dir, out, make_params(), classifier_path=classifier[0])
    return out


class Replay(nn.Module):
    """A "generator" that returns given real images in turn: the ideal GAN, or a collapsed one."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.images, self.cursor = to_unit(images), 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        index = (torch.arange(len(z)) + self.cursor) % len(self.images)
        self.cursor += len(z)
        return self.images[index]


def test_reference_holds_float64_statistics_of_the_test_split(reference):
    ref = load_reference(reference)
    assert ref.info["split"] == "test" and ref.info["num_real"] == TEST and ref.inception is None
    assert ref.domain.features.shape == (TEST, 128)
    assert ref.domain.mu.dtype == np.float64 and ref.domain.sigma.dtype == np.float64
    np.testing.assert_allclose(ref.domain.mu, ref.domain.features.astype(np.float64).mean(0), rtol=1e-12)


def test_evaluate_writes_flat_metrics_and_matches_the_training_tracker(tmp_path, mnist_dir, reference, classifier):
    run = make_run(tmp_path / "runs" / "dcgan-tiny", "dcgan")
    params = make_params()
    metrics = evaluate_run("dcgan-tiny", run, mnist_dir, reference, params, classifier_path=classifier[0])
    written = json.loads((run / "metrics.json").read_text())
    assert written == metrics and FLAT_KEYS <= set(written)
    assert written["fid"] is None and written["fid_antialias"] is None  # evaluate.inception: false
    assert written["fid_num_samples"] == 500 and written["fid_num_real"] == TEST
    assert written["fid_domain"] > 0 and 0 <= written["precision"] <= 1 and 0 <= written["recall"] <= 1
    assert 1 <= written["mode_coverage"] <= 10 and 0 <= written["mode_kl"] <= math.log(10) + 1e-9
    for key in ("probe_acc", "probe_acc_random_d", "probe_acc_pixels"):
        assert 0.1 < written[key] <= 1
    assert written["probe_acc"] == written["probe_acc_all"]
    assert (run / "eval" / "class_histogram.png").stat().st_size > 1000
    details = json.loads((run / "eval" / "details.json").read_text())
    assert details["distances_feature"] == "domain" and len(details["class_shares"]) == 10

    # Training's tracker: same classifier, statistics, noise; another batch size, same number.
    G = make_run(tmp_path / "again", "dcgan")  # same seed, same weights
    from pipeline.models import load_trained
    generator, _, _ = load_trained(G)
    tracker = DomainFID(reference, classifier[0], "cpu", batch_size=128)
    generator.train()
    assert tracker.score(generator, n=500, nz=16, seed=0) == pytest.approx(metrics["fid_domain"], rel=1e-6)
    assert generator.training  # the tracker gives G back in the mode it found it


def test_domain_fid_separates_real_digits_from_a_collapsed_generator(mnist_dir, reference, classifier):
    dataset = read_dataset(mnist_dir)
    train = dataset.indices("train")
    tracker = DomainFID(reference, classifier[0])
    ideal = tracker.scores(Replay(dataset_images(dataset, train[:1000])), n=1000, nz=16)
    ones = train[np.asarray(dataset.labels)[train] == 1][:1]
    collapsed = tracker.scores(Replay(dataset_images(dataset, ones)), n=1000, nz=16)
    assert ideal["mode_coverage"] == 10 and ideal["mode_kl"] < 0.05
    assert collapsed["mode_coverage"] == 1 and collapsed["mode_kl"] == pytest.approx(math.log(10))
    assert ideal["fid_domain"] < 0.1 * collapsed["fid_domain"]


def test_evaluate_with_the_standard_inception_path(tmp_path, mnist_dir, classifier, inception_weights):
    params = make_params(inception=True, inception_weights=str(inception_weights), num_real=8, num_samples=8,
                         probe_per_class=[10], kid_subset_size=8)
    ref_dir = tmp_path / "reference"
    info = compute_reference("mnist", mnist_dir, ref_dir, params, classifier_path=classifier[0])
    assert info["inception"]["antialias"] is False and info["num_real"] == 8
    run = make_run(tmp_path / "gan-tiny", "gan")
    metrics = evaluate_run("gan-tiny", run, mnist_dir, ref_dir, params, classifier_path=classifier[0])
    assert np.isfinite(metrics["fid"]) and metrics["fid"] > 0
    assert metrics["fid_antialias"] is False and metrics["fid_num_samples"] == 8

    # A reference computed with the other resize is refused, before any work is done.
    stale = make_params(inception=True, inception_weights=str(inception_weights), antialias=True)
    with pytest.raises(ReferenceError, match="antialias"):
        evaluate_run("gan-tiny", run, mnist_dir, ref_dir, stale, classifier_path=classifier[0])


def test_reference_for_another_dataset_is_refused(tmp_path, mnist_dir, reference, classifier):
    run = make_run(tmp_path / "celeba-run", "gan")
    spec = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**spec, "dataset": "celeba"}))
    with pytest.raises(ReferenceError, match="trained on 'celeba'"):
        evaluate_run("celeba-run", run, mnist_dir, reference, make_params(), classifier_path=classifier[0])
