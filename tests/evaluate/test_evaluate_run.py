"""evaluate@<run> and fid_reference end to end on tiny run folders and real MNIST."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.datasets import read_dataset
from pipeline.evaluate.classifier import classify, load_classifier
from pipeline.evaluate.fid import feature_statistics
from pipeline.evaluate.images import dataset_images, generate_uint8, sorted_subset, to_unit
from pipeline.evaluate.reference import ReferenceError, compute_reference, load_reference
from pipeline.evaluate.run import evaluate_run
from pipeline.models import build_models
from tests.evaluate.eval_helpers import TEST, make_params, make_run

INCEPTION_KEYS = {"fid", "fid_std", "kid", "kid_std", "precision", "recall"}
DOMAIN_KEYS = {"fid_domain", "fid_domain_std", "kid_domain", "kid_domain_std", "precision_domain", "recall_domain"}
FLAT_KEYS = INCEPTION_KEYS | DOMAIN_KEYS | {
    "mode_coverage", "mode_kl", "fid_floor", "fid_domain_floor", "num_samples", "num_real", "probe_acc",
    "probe_acc_random_d", "probe_acc_pixels", "probe_acc_n10", "probe_acc_all"}


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


def domain_features(classifier_path, images):
    return classify(load_classifier(classifier_path), images)[0]


def test_reference_holds_the_test_split_statistics_and_a_disjoint_real_floor(reference, mnist_dir, classifier):
    ref = load_reference(reference)
    assert ref.info["split"] == "test" and ref.info["num_real"] == TEST and ref.inception is None
    assert ref.info["protocol"] == "test10k" and ref.domain.num == TEST
    assert ref.domain.mu.dtype == np.float64 and ref.domain.sigma.dtype == np.float64
    dataset = read_dataset(mnist_dir)
    real = domain_features(classifier[0], dataset_images(dataset, dataset.indices("test")))
    np.testing.assert_allclose(ref.domain.mu, real.astype(np.float64).mean(0), rtol=1e-5)
    # The floor: 500 (= num_samples) train images against the test statistics.
    floor = ref.info["floor"]
    assert floor["split"] == "train" and floor["num_images"] == 500
    assert 0 < floor["domain"]["fid"] < 20 and floor["domain"]["fid_std"] > 0  # FID is biased up at n = 500
    assert floor["domain"]["recall"] > 0.8


def test_evaluate_writes_named_metrics_with_spreads_and_the_protocol(tmp_path, mnist_dir, reference, classifier):
    run = make_run(tmp_path / "runs" / "dcgan-tiny", "dcgan")
    metrics = evaluate_run("dcgan-tiny", run, mnist_dir, reference, make_params(), classifier_path=classifier[0])
    written = json.loads((run / "metrics.json").read_text())
    assert written == metrics and FLAT_KEYS <= set(written)
    # evaluate.inception: false: the Inception names stay empty, never filled from other features.
    assert all(written[k] is None for k in INCEPTION_KEYS) and written["fid_floor"] is None
    assert written["num_samples"] == 500 and written["num_real"] == TEST
    assert written["fid_domain"] > written["fid_domain_floor"] > 0 and written["fid_domain_std"] > 0
    assert written["kid_domain_std"] > 0 and 0 <= written["precision_domain"] <= 1
    assert 1 <= written["mode_coverage"] <= 10 and 0 <= written["mode_kl"] <= math.log(10) + 1e-9
    assert written["probe_acc"] == written["probe_acc_all"]
    protocol = json.loads((run / "eval" / "protocol.json").read_text())
    assert protocol["protocol"] == "test10k" and protocol["generated"]["sample_mode"] == "eval"
    assert protocol["generated"]["count"] == 500 and protocol["real"] == {"split": "test", "count": TEST,
                                                                           "dataset": "mnist"}
    assert "LeNet" in protocol["spaces"]["domain"]["extractor"] and "inception" not in protocol["spaces"]
    assert "evaluate.inception: false" in protocol["notes"]["fid"]
    # Every spread says what it is; KID (domain) ran on features scaled by the recorded RMS coordinate.
    assert protocol["spreads"]["fid_std"]["draws"] == 10 and "standard error" in protocol["spreads"]["kid_std"]["meaning"]
    scale = protocol["spaces"]["domain"]["kid_feature_scale"]
    assert scale == load_reference(reference).info["domain"]["kid_feature_scale"] > 0
    # D against its random D, paired on the same test images. The random D is the run's own D at
    # initialisation; this run was never trained (make_run: seeded random weights), so the two are
    # the same network and the paired difference is exactly 0 on every resample.
    assert protocol["random_d"] == {"seed": 0, "what": "D at initialisation"}
    assert protocol["probe_batchnorm"]["batch_size"] == make_params().evaluate.probe_bn_batch_size
    assert written["probe_acc"] == written["probe_acc_random_d"] and written["probe_acc_ci95"] > 0
    assert written["probe_vs_random_d"] == 0 and written["probe_vs_random_d_ci95"] == 0
    assert written["probe_vs_pixels"] == pytest.approx(written["probe_acc"] - written["probe_acc_pixels"])
    assert 0 < written["probe_vs_pixels_ci95"]
    # Each paired difference on every bootstrap resample, for the report's seed groups.
    paired = json.loads((run / "eval" / "details.json").read_text())["probe"]["paired"]
    assert paired["probe_vs_random_d"]["resamples"] == [0.0] * make_params().evaluate.probe_bootstrap
    pixels = np.array(paired["probe_vs_pixels"]["resamples"])
    assert abs(pixels.mean() - written["probe_vs_pixels"]) < written["probe_vs_pixels_ci95"]


def test_fid_spread_matches_the_spread_over_independent_real_sets(mnist_dir, reference, classifier):
    """The bootstrap std of one set is the sampling error one would see by drawing new sets:
    compare it with the std of FID over 6 disjoint sets of 500 real train images."""
    ref = load_reference(reference).domain.frechet()
    dataset = read_dataset(mnist_dir)
    train = dataset.indices("train")
    fids = [ref.distance(*feature_statistics(domain_features(classifier[0], dataset_images(dataset, chunk))))
            for chunk in np.array_split(train[:3000], 6)]
    observed = float(np.std(fids, ddof=1))
    one = domain_features(classifier[0], dataset_images(dataset, train[:500]))
    _, spread = ref.with_spread(one, draws=20, seed=0)
    assert observed / 3 < spread < observed * 3, (spread, observed, fids)


def test_domain_fid_separates_real_digits_from_a_collapsed_generator(mnist_dir, reference, classifier):
    dataset = read_dataset(mnist_dir)
    train = dataset.indices("train")
    ref = load_reference(reference).domain.frechet()

    def fid(generator):
        return ref.distance(*feature_statistics(domain_features(classifier[0], generate_uint8(generator, 1000, 16, 0, 250))))

    ideal = fid(Replay(dataset_images(dataset, train[:1000])))
    ones = train[np.asarray(dataset.labels)[train] == 1][:1]
    collapsed = fid(Replay(dataset_images(dataset, ones)))
    assert ideal < 0.1 * collapsed


def test_too_few_real_images_give_a_null_fid_with_the_reason_and_keep_kid(tmp_path, mnist_dir, classifier):
    params = make_params(num_real=100, num_samples=500, probe_per_class=[10])  # 100 < 128-d features
    ref_dir = tmp_path / "reference"
    compute_reference("mnist", mnist_dir, ref_dir, params, classifier_path=classifier[0])
    run = make_run(tmp_path / "gan-tiny", "gan")
    metrics = evaluate_run("gan-tiny", run, mnist_dir, ref_dir, params, classifier_path=classifier[0])
    assert metrics["fid_domain"] is None and metrics["fid_domain_std"] is None
    assert metrics["kid_domain"] is not None and np.isfinite(metrics["kid_domain"])
    note = json.loads((run / "eval" / "protocol.json").read_text())["notes"]["fid_domain"]
    assert "only 100 real images" in note and "rank-deficient" in note


def test_sample_mode_train_uses_batch_statistics_without_changing_g(mnist_dir):
    torch.manual_seed(0)
    G, _ = build_models("dcgan", image_size=28, channels=1, nz=16, ngf=8, ndf=8)
    with torch.no_grad():  # running statistics far from any batch's: the two modes must differ
        for m in G.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    eval_mode = generate_uint8(G, 64, 16, 0, 32, mode="eval")
    train_mode = generate_uint8(G, 64, 16, 0, 32, mode="train")
    assert not torch.equal(eval_mode, train_mode)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # running stats untouched
    assert torch.equal(eval_mode, generate_uint8(G, 64, 16, 0, 64, mode="eval"))  # batch size is irrelevant


def test_evaluate_with_the_standard_inception_path(tmp_path, mnist_dir, classifier, inception_weights):
    params = make_params(inception=True, inception_weights=str(inception_weights), num_real=8, num_samples=8,
                         probe_per_class=[10], kid_subset_size=8)
    ref_dir = tmp_path / "reference"
    info = compute_reference("mnist", mnist_dir, ref_dir, params, classifier_path=classifier[0])
    assert info["inception"]["antialias"] is False and info["num_real"] == 8
    run = make_run(tmp_path / "gan-tiny", "gan")
    metrics = evaluate_run("gan-tiny", run, mnist_dir, ref_dir, params, classifier_path=classifier[0])
    # 8 real images for 2048-d features: no FID (it would be noise), but KID and P/R are there.
    assert metrics["fid"] is None and metrics["fid_floor"] is None
    assert np.isfinite(metrics["kid"]) and 0 <= metrics["precision"] <= 1
    protocol = json.loads((run / "eval" / "protocol.json").read_text())
    assert "2048-d Inception" in protocol["notes"]["fid"]
    assert "no antialias" in protocol["spaces"]["inception"]["resize"]

    # A reference computed with the other resize is refused, before any work is done.
    stale = make_params(inception=True, inception_weights=str(inception_weights), antialias=True)
    with pytest.raises(ReferenceError, match="antialias"):
        evaluate_run("gan-tiny", run, mnist_dir, ref_dir, stale, classifier_path=classifier[0])
    # Compiled bf16 rounds differently from the reference's uncompiled fp32: refused by name, the
    # key being the run's alone (the reference has no `compiled`).
    compiled = make_params(inception=True, inception_weights=str(inception_weights),
                           inception_precision="bf16-compiled")
    with pytest.raises(ReferenceError, match="Inception compiled is None there, True now"):
        evaluate_run("gan-tiny", run, mnist_dir, ref_dir, compiled, classifier_path=classifier[0])


def test_a_reference_of_another_protocol_or_dataset_is_refused(tmp_path, mnist_dir, reference, classifier):
    run = make_run(tmp_path / "gan-run", "gan")
    with pytest.raises(ReferenceError, match="protocol 'test10k'"):
        evaluate_run("gan-run", run, mnist_dir, reference, make_params(protocol="train50k"),
                     classifier_path=classifier[0])
    spec = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**spec, "dataset": "celeba"}))
    with pytest.raises(ReferenceError, match="trained on 'celeba'"):
        evaluate_run("gan-run", run, mnist_dir, reference, make_params(), classifier_path=classifier[0])


def test_train50k_compares_with_the_whole_train_split(tmp_path, mnist_dir, classifier):
    """More generated images than the test split holds: the floor uses every test image and reads
    its FID at the generated count (extrapolated in 1 / n), never at the smaller one."""
    params = make_params(protocol="train50k", num_real=None, num_samples=3000, probe_per_class=[10])
    info = compute_reference("mnist", mnist_dir, tmp_path / "ref", params, classifier_path=classifier[0])
    dataset = read_dataset(mnist_dir)
    assert info["split"] == "train" and info["num_real"] == len(dataset.indices("train"))
    floor = info["floor"]
    assert floor["split"] == "test" and floor["num_images"] == TEST and floor["fid_at_count"] == 3000
    assert floor["domain"]["notes"]["fid_extrapolated"] == {"from": TEST, "to": 3000, "fit": "FID = a + c / n"}
    ref = load_reference(tmp_path / "ref").domain.frechet()
    test_features = domain_features(classifier[0], dataset_images(dataset, dataset.indices("test")))
    at_2000 = ref.distance(*feature_statistics(test_features))
    assert floor["domain"]["fid"] < at_2000  # FID's upward bias shrinks with n
