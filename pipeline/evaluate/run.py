"""evaluate@<run>: every number for one trained run, written to runs/<run>/metrics.json.

Flat metric names (DESIGN.md) so that `dvc exp show` and `dvc metrics diff` line runs up:

    fid, fid_num_samples, fid_num_real, fid_antialias   standard FID (null with evaluate.inception: false)
    fid_domain                                          FID on the MNIST classifier's features (null elsewhere)
    kid, kid_std, precision, recall                     on the domain features, else on Inception's
    mode_coverage, mode_kl                              MNIST digit classes covered, KL from uniform
    probe_acc[_n10|_n100|_all]                          linear probe on the frozen D
    probe_acc_random_d[...], probe_acc_pixels[...]      the controls

Details (per-class shares, chosen C per probe, KID subset size, feature spaces) go to
runs/<run>/eval/details.json, and the class histogram to runs/<run>/eval/class_histogram.png.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.config import Params
from pipeline.datasets import read_dataset, sha256_file, write_json_atomic
from pipeline.device import resolve_device
from pipeline.evaluate.classifier import NUM_CLASSES, classify, load_classifier
from pipeline.evaluate.coverage import mode_coverage
from pipeline.evaluate.fid import feature_statistics, frechet_distance, kid, precision_recall
from pipeline.evaluate.images import dataset_images, generate_uint8, sorted_subset
from pipeline.evaluate.inception import inception_features, load_inception
from pipeline.evaluate.plots import class_histogram_figure, save_figure
from pipeline.evaluate.probe import (BN_RECALIBRATION_IMAGES, discriminator_features, pixel_features,
                                     recalibrate_batchnorm, run_probe)
from pipeline.evaluate.reference import FeatureSet, ReferenceError, load_reference
from pipeline.models import build_models, load_trained

METRICS_FILE = "metrics.json"
EVAL_DIR = "eval"


def _check_reference(reference, params: Params, spec: dict, classifier_path: Path | None, dataset) -> None:
    p, info = params.evaluate, reference.info
    stale = f"; rerun fid_reference@{info.get('dataset')} ({reference.path})"
    if info.get("dataset") != spec["dataset"]:
        raise ReferenceError(f"{reference.path}: statistics of {info.get('dataset')!r}, but the run was trained on "
                             f"{spec['dataset']!r}")
    if info.get("dataset_sha256") != dataset.meta.get("sha256", {}):
        raise ReferenceError(f"{reference.path}: computed from another version of {dataset.path}{stale}")
    if info.get("seed") != p.seed:
        raise ReferenceError(f"{reference.path}: computed with seed {info.get('seed')}, evaluate.seed is {p.seed}{stale}")
    if reference.domain is not None:
        if classifier_path is None:
            raise ReferenceError(f"{reference.path}: has domain features; pass the classifier that made them")
        if sha256_file(classifier_path) != info["domain"]["classifier_sha256"]:
            raise ReferenceError(f"{reference.path}: computed with another MNIST classifier than {classifier_path}{stale}")
    if p.inception:
        if reference.inception is None:
            raise ReferenceError(f"{reference.path}: no Inception statistics but evaluate.inception is true{stale}")
        if info["inception"]["antialias"] != p.antialias:
            raise ReferenceError(f"{reference.path}: computed with antialias={info['inception']['antialias']}, "
                                 f"but evaluate.antialias is {p.antialias}{stale}")


def _distances(fake: np.ndarray, real: FeatureSet, params: Params) -> dict:
    p = params.evaluate
    kid_mean, kid_std, subset = kid(fake, real.features, subset_size=p.kid_subset_size, subsets=p.kid_subsets,
                                    seed=p.seed)
    precision, recall = precision_recall(fake, real.features, k=p.pr_k)
    return {"kid": kid_mean, "kid_std": kid_std, "kid_subset_size": subset, "precision": precision, "recall": recall}


def evaluate_run(run_name: str, run_dir: Path | str, dataset_dir: Path | str, reference_dir: Path | str,
                 params: Params, classifier_path: Path | str | None = None) -> dict:
    """Evaluate one trained run; writes runs/<run>/metrics.json and eval/, returns the metrics."""
    p = params.evaluate
    run_dir = Path(run_dir)
    classifier_path = None if classifier_path is None else Path(classifier_path)
    device = resolve_device(p.device)
    generator, discriminator, spec = load_trained(run_dir, device)
    dataset = read_dataset(dataset_dir)
    if dataset.channels != spec["channels"]:
        raise ValueError(f"{run_dir}: the run has {spec['channels']} channels, {dataset.path} has {dataset.channels}")
    reference = load_reference(reference_dir)
    _check_reference(reference, params, spec, classifier_path, dataset)

    fakes = generate_uint8(generator, p.num_samples, spec["nz"], p.seed, p.batch_size, device)
    metrics: dict = {"fid": None, "fid_domain": None, "kid": None, "kid_std": None, "precision": None,
                     "recall": None, "mode_coverage": None, "mode_kl": None,
                     "fid_num_samples": len(fakes), "fid_num_real": reference.info["num_real"],
                     "fid_antialias": p.antialias if p.inception else None}
    details: dict = {"run": run_name, "reference": reference.info, "distances_feature": None}

    if reference.domain is not None:
        classifier = load_classifier(classifier_path, device)
        features, predicted = classify(classifier, fakes, batch_size=p.batch_size, device=device)
        metrics["fid_domain"] = frechet_distance(*feature_statistics(features), reference.domain.mu,
                                                 reference.domain.sigma)
        distances = _distances(features, reference.domain, params)
        details.update(distances_feature="domain", kid_subset_size=distances.pop("kid_subset_size"))
        metrics.update(distances)
        coverage = mode_coverage(predicted, NUM_CLASSES, p.coverage_min_share)
        details["class_shares"] = coverage.pop("class_shares")
        metrics.update(coverage)
        save_figure(class_histogram_figure(details["class_shares"], f"{run_name}: classes of {len(fakes)} samples"),
                    run_dir / EVAL_DIR / "class_histogram.png")

    if p.inception:
        model, weights_sha = load_inception(p.inception_weights, antialias=p.antialias, device=device)
        if weights_sha != reference.info["inception"]["weights_sha256"]:
            raise ReferenceError(f"{reference.path}: computed with other Inception weights than "
                                 f"evaluate.inception_weights; rerun fid_reference@{spec['dataset']}")
        features = inception_features(model, fakes, batch_size=p.batch_size, device=device, desc=f"inception {run_name}")
        del model
        metrics["fid"] = frechet_distance(*feature_statistics(features), reference.inception.mu,
                                          reference.inception.sigma)
        if reference.domain is None:  # no domain features: KID and P/R on Inception's
            distances = _distances(features, reference.inception, params)
            details.update(distances_feature="inception", kid_subset_size=distances.pop("kid_subset_size"))
            metrics.update(distances)

    # A random D of the same architecture, seeded: the control for "the architecture alone".
    torch.manual_seed(p.seed)
    _, random_d = build_models(spec["model"], image_size=spec["image_size"], channels=spec["channels"],
                               nz=spec["nz"], ngf=spec["ngf"], ndf=spec["ndf"])
    random_d = random_d.to(device).eval()

    # BatchNorm statistics of both Ds re-estimated on the same real train images (probe.py says why).
    calibration = dataset_images(dataset, sorted_subset(dataset, "train", BN_RECALIBRATION_IMAGES, p.seed))
    for net in (discriminator, random_d):
        recalibrate_batchnorm(net, calibration, image_size=spec["image_size"], batch_size=p.batch_size, device=device)

    def d_fn(net: nn.Module):
        return lambda images: discriminator_features(net, images, image_size=spec["image_size"],
                                                     batch_size=p.batch_size, device=device)

    probe, probe_details = run_probe(dataset, params, {"": d_fn(discriminator), "_random_d": d_fn(random_d),
                                                       "_pixels": pixel_features})
    metrics.update(probe)
    details["probe"] = probe_details
    write_json_atomic(run_dir / EVAL_DIR / "details.json", details)
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    return metrics


class DomainFID:
    """fid_domain of a generator during training, against a dataset's reference statistics.

        tracker = DomainFID(reference_dir, classifier_path, device)
        live.log_metric("fid_domain", tracker.score(G, n=2000, nz=100, seed=0))

    The same classifier, preprocessing and statistics as evaluate, so the curve ends where the
    final number starts (up to the sample count: FID is biased upwards at small n, so compare
    points of one curve, not a curve point with the 10k-sample metric).
    """

    def __init__(self, reference_dir: Path | str, classifier_path: Path | str, device: torch.device | str = "cpu",
                 batch_size: int = 500, coverage_min_share: float = 0.01):
        reference = load_reference(reference_dir)
        if reference.domain is None:
            raise ReferenceError(f"{reference.path}: no domain features (only MNIST has a domain classifier)")
        if sha256_file(classifier_path) != reference.info["domain"]["classifier_sha256"]:
            raise ReferenceError(f"{reference.path}: computed with another classifier than {classifier_path}")
        self.mu, self.sigma = reference.domain.mu, reference.domain.sigma
        self.device = torch.device(device)
        self.classifier = load_classifier(classifier_path, self.device)
        self.batch_size = batch_size
        self.coverage_min_share = coverage_min_share

    def scores(self, generator: nn.Module, n: int, nz: int, seed: int = 0) -> dict:
        """{"fid_domain", "mode_coverage", "mode_kl"} of `n` samples; G's train/eval mode is restored."""
        was_training = generator.training
        try:
            fakes = generate_uint8(generator, n, nz, seed, self.batch_size, self.device)
        finally:
            generator.train(was_training)
        features, predicted = classify(self.classifier, fakes, batch_size=self.batch_size, device=self.device)
        coverage = mode_coverage(predicted, NUM_CLASSES, self.coverage_min_share)
        return {"fid_domain": frechet_distance(*feature_statistics(features), self.mu, self.sigma),
                "mode_coverage": coverage["mode_coverage"], "mode_kl": coverage["mode_kl"]}

    def score(self, generator: nn.Module, n: int, nz: int, seed: int = 0) -> float:
        return self.scores(generator, n, nz, seed)["fid_domain"]
