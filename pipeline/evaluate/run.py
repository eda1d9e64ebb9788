"""evaluate@<run>: every number for one trained run, written to runs/<run>/metrics.json.

Flat metric names (DESIGN.md) so that `dvc exp show` and `dvc metrics diff` line runs up; a
name says which features it was measured in:

    fid, fid_std, kid, kid_std, precision, recall   Inception pool3 features (null with
                                                    evaluate.inception: false)
    fid_domain, fid_domain_std, kid_domain,         the MNIST classifier's features (null for
    kid_domain_std, precision_domain, recall_domain datasets without a domain classifier)
    mode_coverage, mode_kl                          MNIST digit classes covered, KL from uniform
    fid_floor, fid_domain_floor                     the same FID between two disjoint real sets
    num_samples, num_real                           the counts behind every distance
    probe_acc[_n10|_n100|_all], probe_acc_ci95      linear probe on the frozen D (probe.py)
    probe_acc_random_d[...], probe_acc_pixels[...]  its controls

Every `*_std` is the standard error of the number beside it over new generated sets (the real
reference held fixed): FID's from a bootstrap over the generated features, KID's from its
U-statistic (fid.kid); `probe_acc*_ci95` is the half-width of a 95% bootstrap interval over the
test images. `probe_vs_random_d` is the paired difference probe_acc - probe_acc_random_d on the
same test images, with `probe_vs_random_d_ci95` from the same (joint) bootstrap resamples; the
random D is the run's own D at initialisation (built with the run's training seed). The protocol behind the numbers (extractor, counts, real split,
resize, how G was sampled, and why a number is null) goes to runs/<run>/eval/protocol.json;
per-class shares and the probe's details to eval/details.json; the curves of FID (Inception) and
fid_domain over G's training snapshots, each point with its spread, to runs/<run>/curve.tsv (a
DVC plot; protocol.json's "curve" says at how many samples, and which epoch was best).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.atomic import write_bytes_atomic
from pipeline.config import Params
from pipeline.datasets import read_dataset, sha256_file, write_json_atomic
from pipeline.device import resolve_device
from pipeline.evaluate.classifier import NUM_CLASSES, classify, load_classifier
from pipeline.evaluate.coverage import mode_coverage
from pipeline.evaluate.fid import SET_METRIC_MAX, FrechetReference, RankDeficient, all_distances, check_rank, \
    feature_statistics
from pipeline.evaluate.images import dataset_images, generate_uint8, sample_batch_size, sorted_subset
from pipeline.evaluate.inception import evaluate_extractor, remembered_features
from pipeline.evaluate.names import DISTANCES, domain_name
from pipeline.evaluate.plots import class_histogram_figure, save_figure
from pipeline.evaluate.probe import (discriminator_features, pixel_features,
                                     recalibrate_batchnorm, run_probe)
from pipeline.evaluate.reference import FeatureSet, ReferenceError, load_reference
from pipeline.models import build_models, list_snapshots, load_trained

METRICS_FILE = "metrics.json"
EVAL_DIR = "eval"
PROTOCOL_FILE = "protocol.json"
CURVE_FILE = "curve.tsv"
CURVE_COLUMNS = ("epoch", "fid", "fid_std", "fid_domain", "fid_domain_std", "mode_coverage", "mode_kl")


def _check_reference(reference, params: Params, spec: dict, classifier_path: Path | None, dataset) -> None:
    p, info = params.evaluate, reference.info
    stale = f"; rerun fid_reference@{info.get('dataset')} ({reference.path})"
    if info.get("dataset") != spec["dataset"]:
        raise ReferenceError(f"{reference.path}: statistics of {info.get('dataset')!r}, but the run was trained on "
                             f"{spec['dataset']!r}")
    if info.get("dataset_sha256") != dataset.meta.get("sha256", {}):
        raise ReferenceError(f"{reference.path}: computed from another version of {dataset.path}{stale}")
    if info.get("protocol") != p.protocol:
        raise ReferenceError(f"{reference.path}: computed for protocol {info.get('protocol')!r}, evaluate.protocol "
                             f"is {p.protocol!r}{stale}")
    if info.get("seed") != p.seed:
        raise ReferenceError(f"{reference.path}: computed with seed {info.get('seed')}, evaluate.seed is {p.seed}{stale}")
    if reference.domain is not None:
        if reference.domain.kid_scale is None:
            raise ReferenceError(f"{reference.path}: computed before KID's feature scale was recorded{stale}")
        if classifier_path is None:
            raise ReferenceError(f"{reference.path}: has domain features; pass the classifier that made them")
        if sha256_file(classifier_path) != info["domain"]["classifier_sha256"]:
            raise ReferenceError(f"{reference.path}: computed with another MNIST classifier than {classifier_path}{stale}")
    if p.inception:
        if reference.inception is None:
            raise ReferenceError(f"{reference.path}: no Inception statistics but evaluate.inception is true{stale}")


def _check_extractor(reference, identity: dict, dataset: str) -> None:
    """The run's Inception must be the reference's: same weights, resize and precision (and, in
    bf16, compilation). The device kind may differ (a reference made on a GPU box serves a
    laptop): CUDA's and the CPU's features agree to about 1e-6, far below any FID spread."""
    theirs = reference.info["inception"]
    for key in sorted({*identity, "compiled"} - {"device"}):
        if theirs.get(key) != identity.get(key):
            raise ReferenceError(f"{reference.path}: Inception {key} is {theirs.get(key)!r} there, "
                                 f"{identity.get(key)!r} now (evaluate.inception_weights / antialias / "
                                 f"inception_precision); rerun fid_reference@{dataset}")


def _distances(features: np.ndarray, real: FeatureSet, frechet: FrechetReference, space: str,
               params: Params) -> tuple[dict, dict]:
    p = params.evaluate
    return all_distances(features, real.features, frechet, space=space, kid_subset_size=p.kid_subset_size,
                         kid_subsets=p.kid_subsets, pr_k=p.pr_k, fid_draws=p.fid_bootstrap, seed=p.seed,
                         kid_feature_scale=real.kid_scale)


def training_seed(run_name: str, spec: dict, params: Params) -> int:
    """The seed the run was trained with: model.json's, else params.yaml's runs.<run>.seed (a run
    trained before model.json recorded it)."""
    if "seed" in spec:
        return int(spec["seed"])
    if run_name in params.runs:
        return params.runs[run_name].seed
    raise ValueError(f"{run_name}: model.json has no seed and params.yaml has no runs.{run_name}; the random-D "
                     "control is the run's D at initialisation and needs the training seed")


def spread_protocol(p) -> dict:
    """What each `*_std` / `*_ci95` is, with the counts the report needs for its critical values."""
    return {
        "fid_std": {"meaning": "standard error of FID over new generated sets (real statistics fixed)",
                    "method": "std over bootstrap resamples of the generated features", "draws": p.fid_bootstrap},
        "kid_std": {"meaning": "standard error of KID over new generated sets (real set fixed)",
                    "method": "U-statistic linear term + subset noise (evaluate/fid.py kid)",
                    "subsets": p.kid_subsets},
        "probe_acc_ci95": {"meaning": "half-width of a 95% interval over the test images",
                           "method": "percentile bootstrap", "draws": p.probe_bootstrap},
        "probe_vs_random_d_ci95": {"meaning": "half-width of a 95% interval of the paired difference D - random D",
                                   "method": "percentile bootstrap, the same resamples for both",
                                   "draws": p.probe_bootstrap},
    }


def training_curve(run_dir: Path, spec: dict, params: Params, device: torch.device,
                   domain: tuple[nn.Module, FrechetReference] | None,
                   inception: tuple[nn.Module, dict, bool | str, FrechetReference] | None) -> list[dict]:
    """FID (Inception, the standard features) with its spread, fid_domain with its spread,
    mode_coverage and mode_kl of every training snapshot of G (the averaged G for an EMA run).

    `evaluate.curve_samples` samples per point, the same noise at every point (fewer than the
    headline's: FID is biased upwards at small n, so compare the points of one curve with each
    other, not a point with the headline). A space whose features outnumber the samples gives an
    empty cell (check_rank). `domain` is (classifier, its reference), `inception` is (network,
    extractor identity, compile setting, its reference); None leaves those columns empty."""
    p = params.evaluate
    rows = []
    generator, _ = build_models(spec["model"], image_size=spec["image_size"], channels=spec["channels"],
                                nz=spec["nz"], ngf=spec["ngf"], ndf=spec["ndf"])
    generator.to(device)

    def fid(features: np.ndarray, real: FrechetReference, space: str) -> tuple[float | None, float | None]:
        try:
            check_rank(len(features), real.num, features.shape[1], space)
        except RankDeficient:
            return None, None
        return real.with_spread(features, draws=p.fid_bootstrap, seed=p.seed)

    for epoch, path in list_snapshots(run_dir):
        generator.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        fakes = generate_uint8(generator, p.curve_samples, spec["nz"], p.seed, sample_batch_size(p, spec), device,
                               p.sample_mode)
        row = dict.fromkeys(CURVE_COLUMNS)
        row["epoch"] = epoch
        if domain is not None:
            classifier, real = domain
            features, predicted = classify(classifier, fakes, batch_size=p.batch_size, device=device)
            row["fid_domain"], row["fid_domain_std"] = fid(features, real, "MNIST-classifier")
            coverage = mode_coverage(predicted, NUM_CLASSES, p.coverage_min_share)
            row["mode_coverage"], row["mode_kl"] = coverage["mode_coverage"], coverage["mode_kl"]
        if inception is not None and len(fakes) > len(inception[3].mu):
            # (At no more samples than the Inception's dimensions the FID is undefined: the
            # network's minutes are not spent on an empty cell.)
            model, identity, compile_setting, real = inception
            features = remembered_features(model, identity, fakes, batch_size=p.batch_size, device=device,
                                           compile=compile_setting, desc=f"inception epoch {epoch}")
            row["fid"], row["fid_std"] = fid(features, real, "Inception")
        rows.append(row)
    return rows


def best_epoch(rows: list[dict], metric: str = "fid") -> dict | None:
    """The curve's point with the lowest `metric` (None without one). Chosen on the test
    reference, it is a description of the curve, never a headline: picking it would select on
    the test set."""
    points = [r for r in rows if r.get(metric) is not None]
    return min(points, key=lambda r: r[metric]) if points else None


def write_curve(path: Path, rows: list[dict]) -> None:
    """The curve as a TSV for `dvc plots` (a header alone when the run has no snapshots)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in CURVE_COLUMNS})
    write_bytes_atomic(path, buffer.getvalue().encode())


def scored_generator(spec: dict) -> dict:
    """Which G the numbers are of: G as trained, or its average (runs.<run>.ema)."""
    if spec.get("ema") is None:
        return {"weights": spec["scored_generator"], "what": "G as trained"}
    return {"weights": spec["scored_generator"], "ema_decay": spec["ema"],
            "what": f"exponential moving average of G's weights (decay {spec['ema']} per G update, "
                    "torch.optim.swa_utils.AveragedModel), BatchNorm statistics recomputed from its own samples "
                    f"(update_bn, {spec.get('ema_bn_batches')} noise batches); the probe still reads D"}


def _floor(reference, space: str) -> dict | None:
    return (reference.info.get("floor") or {}).get(space)


def evaluate_run(run_name: str, run_dir: Path | str, dataset_dir: Path | str, reference_dir: Path | str,
                 params: Params, classifier_path: Path | str | None = None) -> dict:
    """Evaluate one trained run; writes runs/<run>/metrics.json, curve.tsv and eval/; returns the metrics."""
    run_dir = Path(run_dir)
    classifier_path = None if classifier_path is None else Path(classifier_path)
    device = resolve_device(params.evaluate.device)
    generator, discriminator, spec = load_trained(run_dir, device)
    params = params.for_dataset(spec["dataset"])  # the dataset's protocol (evaluate.protocol_per_dataset)
    p = params.evaluate
    dataset = read_dataset(dataset_dir)
    if dataset.channels != spec["channels"]:
        raise ValueError(f"{run_dir}: the run has {spec['channels']} channels, {dataset.path} has {dataset.channels}")
    reference = load_reference(reference_dir)
    _check_reference(reference, params, spec, classifier_path, dataset)

    fakes = generate_uint8(generator, p.samples, spec["nz"], p.seed, sample_batch_size(p, spec), device, p.sample_mode)
    metrics: dict = {key: None for key in (*DISTANCES, *map(domain_name, DISTANCES))}
    metrics.update({"mode_coverage": None, "mode_kl": None, "fid_floor": None, "fid_domain_floor": None,
                    "num_samples": len(fakes), "num_real": reference.info["num_real"]})
    protocol: dict = {
        "protocol": p.protocol,
        "generated": {"count": len(fakes), "sample_mode": p.sample_mode, "noise": "N(0, 1), seeded",
                      "seed": p.seed, **({"batch_size": spec["batch_size"]} if p.sample_mode == "train" else {}),
                      "quantised": "uint8, as a saved PNG",
                      "generator": scored_generator(spec)},
        "real": {"split": reference.info["split"], "count": reference.info["num_real"], "dataset": spec["dataset"]},
        "set_metrics_max": SET_METRIC_MAX,
        "spreads": spread_protocol(p),
        "floor": reference.info.get("floor"),
        "spaces": {}, "notes": {},
    }
    details: dict = {"run": run_name, "reference": reference.info}
    domain_space = inception_space = None

    if reference.domain is not None:
        classifier = load_classifier(classifier_path, device)
        features, predicted = classify(classifier, fakes, batch_size=p.batch_size, device=device)
        frechet = reference.domain.frechet()  # its square root serves the distances and the curve
        values, notes = _distances(features, reference.domain, frechet, "MNIST-classifier", params)
        metrics.update({domain_name(key): value for key, value in values.items()})
        protocol["spaces"]["domain"] = {"extractor": "MNIST LeNet, 128-d penultimate layer (evaluate/classifier.py)",
                                        "resize": "bilinear, antialiased, to 28 x 28 when needed",
                                        "classifier_sha256": reference.info["domain"]["classifier_sha256"], **notes}
        if notes.get("fid"):
            protocol["notes"]["fid_domain"] = notes["fid"]
        floor = _floor(reference, "domain")
        metrics["fid_domain_floor"] = floor and floor["fid"]
        coverage = mode_coverage(predicted, NUM_CLASSES, p.coverage_min_share)
        details["class_shares"] = coverage.pop("class_shares")
        metrics.update(coverage)
        save_figure(class_histogram_figure(details["class_shares"], f"{run_name}: classes of {len(fakes)} samples"),
                    run_dir / EVAL_DIR / "class_histogram.png")
        domain_space = (classifier, frechet)

    if p.inception:
        model, source, identity, compile_setting = evaluate_extractor(p, device)
        _check_extractor(reference, identity, spec["dataset"])
        features = remembered_features(model, identity, fakes, batch_size=p.batch_size, device=device,
                                       compile=compile_setting,
                                       desc=f"inception {run_name}")
        inception_frechet = reference.inception.frechet()
        inception_space = (model, identity, compile_setting, inception_frechet)
        values, notes = _distances(features, reference.inception, inception_frechet, "Inception", params)
        metrics.update(values)
        protocol["spaces"]["inception"] = {
            "extractor": "Inception v3 pool3 (2048-d), TF 2015-12-05 weights, torchmetrics/torch-fidelity's network",
            "weights": source.protocol(), "precision": p.inception_precision,
            "resize": f"to 299 x 299, {'antialiased bilinear' if p.antialias else 'TF-FID bilinear (no antialias)'}",
            "grayscale": "tiled to 3 channels", **notes}
        if notes.get("fid"):
            protocol["notes"]["fid"] = notes["fid"]
        floor = _floor(reference, "inception")
        metrics["fid_floor"] = floor and floor["fid"]
    else:
        protocol["notes"]["fid"] = "evaluate.inception: false (no Inception weights): standard FID not computed"
    if reference.domain is None:
        protocol["notes"]["fid_domain"] = (f"no domain classifier for {spec['dataset']} (only MNIST has one): "
                                           "fid_domain and the *_domain measures are not defined")

    curve = training_curve(run_dir, spec, params, device, domain_space, inception_space)
    model = inception_space = None  # the Inception's memory back before the probe
    best = best_epoch(curve)
    protocol["curve"] = {
        "samples": p.curve_samples, "noise_seed": p.seed, "spreads": "fid_std / fid_domain_std: bootstrap std over "
        f"{p.fid_bootstrap} resamples of the generated features, as the headline's",
        "generator": "the snapshots of the scored G (runs/<run>/snapshots)",
        "best_epoch_fid": None if best is None else {"epoch": best["epoch"], "fid": best["fid"]},
        "note": "compare points of one curve with each other: at this sample count FID sits above the headline's "
                "10,000-sample value; the best epoch is chosen on the test reference, so it describes the run and "
                "is never reported as its result"}

    # The control for "the architecture alone": the run's own D at initialisation, rebuilt as
    # train builds it (seed, then build_models), so each seed of a group has its own random D.
    protocol["random_d"] = {"seed": training_seed(run_name, spec, params), "what": "D at initialisation"}
    torch.manual_seed(protocol["random_d"]["seed"])
    _, random_d = build_models(spec["model"], image_size=spec["image_size"], channels=spec["channels"],
                               nz=spec["nz"], ngf=spec["ngf"], ndf=spec["ndf"])
    random_d = random_d.to(device).eval()

    # BatchNorm statistics of both Ds re-estimated on the same real train images (probe.py says why).
    # Its batch is its own key, not the speed-only batch_size: train-mode BatchNorm makes it part of the result.
    protocol["probe_batchnorm"] = {"images": p.probe_bn_images, "batch_size": p.probe_bn_batch_size, "split": "train",
                                   "what": "both Ds' BatchNorm statistics re-estimated on real images (update_bn)"}
    calibration = dataset_images(dataset, sorted_subset(dataset, "train", p.probe_bn_images, p.seed))
    for net in (discriminator, random_d):
        recalibrate_batchnorm(net, calibration, image_size=spec["image_size"], batch_size=p.probe_bn_batch_size,
                              device=device)

    def d_fn(net: nn.Module):
        return lambda images: discriminator_features(net, images, image_size=spec["image_size"],
                                                     batch_size=p.batch_size, device=device)

    probe, probe_details = run_probe(dataset, params, {"": d_fn(discriminator), "_random_d": d_fn(random_d),
                                                       "_pixels": pixel_features})
    metrics.update(probe)
    details["probe"] = probe_details
    write_curve(run_dir / CURVE_FILE, curve)
    write_json_atomic(run_dir / EVAL_DIR / PROTOCOL_FILE, protocol)
    write_json_atomic(run_dir / EVAL_DIR / "details.json", details)
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    return metrics
