"""fid_reference@<dataset>: real-image statistics, computed once per dataset and reused by every run.

    <out_dir>/reference.json  what was computed from what (split, count, seed, antialias, the
                              sha256 of the dataset, the classifier and the Inception weights)
    <out_dir>/domain.npz      MNIST classifier features of the real images, their mean and
                              covariance (float64); only for datasets with a domain classifier
    <out_dir>/inception.npz   the same for Inception's 2048-d pool features (evaluate.inception)

The features themselves are kept, not only (mean, covariance): KID and precision/recall
compare sample sets, not Gaussians. The folder is written under a temporary name and renamed,
and evaluate refuses a reference whose settings differ from the current params.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.datasets import read_dataset, replace_dir, sha256_file, write_json_atomic
from pipeline.device import resolve_device
from pipeline.evaluate.classifier import classify, load_classifier
from pipeline.evaluate.fid import feature_statistics
from pipeline.evaluate.images import dataset_images, sorted_subset
from pipeline.evaluate.inception import inception_features, load_inception

INFO_FILE = "reference.json"
# Datasets with a domain classifier (and so fid_domain, KID, precision/recall, mode coverage).
# CelebA and anime have none: see README "Evaluation" for why fid_domain is null there.
DOMAIN_DATASETS = ("mnist",)


class ReferenceError(ValueError):
    """A reference folder is missing or was computed with other settings; the message says which."""


@dataclass
class FeatureSet:
    features: np.ndarray  # float32 N x d
    mu: np.ndarray  # float64 d
    sigma: np.ndarray  # float64 d x d


@dataclass
class Reference:
    path: Path
    info: dict
    domain: FeatureSet | None
    inception: FeatureSet | None


def reference_split(dataset) -> str | None:
    """The test split when the dataset has one, else None (= every image)."""
    return "test" if len(dataset.indices("test")) >= 2 else None


def _save(path: Path, features: np.ndarray) -> None:
    mu, sigma = feature_statistics(features)
    np.savez(path, features=features.astype(np.float32), mu=mu, sigma=sigma)


def compute_reference(dataset_name: str, dataset_dir: Path | str, out_dir: Path | str, params: Params,
                      classifier_path: Path | str | None = None) -> dict:
    """Compute the real-image features and statistics of one dataset; returns reference.json's content."""
    p = params.evaluate
    device = resolve_device(p.device)
    dataset = read_dataset(dataset_dir)
    split = reference_split(dataset)
    if split is None:
        index = np.arange(len(dataset))
        if len(index) > p.num_real:
            index = np.sort(np.random.default_rng(p.seed).choice(index, p.num_real, replace=False))
    else:
        index = sorted_subset(dataset, split, p.num_real, p.seed)
    images = dataset_images(dataset, index)
    info: dict = {
        "dataset": dataset_name,
        "dataset_sha256": dataset.meta.get("sha256", {}),  # every array: a new split is other data
        "split": split or "all",
        "num_real": len(images),
        "seed": p.seed,
        "domain": None,
        "inception": None,
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        if dataset_name in DOMAIN_DATASETS:
            if classifier_path is None:
                raise ReferenceError(f"fid_reference@{dataset_name}: the domain features need the MNIST classifier; "
                                     f"pass its classifier.pt (stage train_classifier)")
            classifier = load_classifier(classifier_path, device)
            features, _ = classify(classifier, images, batch_size=p.batch_size, device=device)
            _save(tmp / "domain.npz", features)
            info["domain"] = {"feature": "mnist_lenet_penultimate", "dim": int(features.shape[1]),
                              "classifier_sha256": sha256_file(classifier_path)}
        if p.inception:
            model, weights_sha = load_inception(p.inception_weights, antialias=p.antialias, device=device)
            features = inception_features(model, images, batch_size=p.batch_size, device=device,
                                          desc=f"inception {dataset_name}")
            _save(tmp / "inception.npz", features)
            info["inception"] = {"feature": "pool3_2048", "dim": int(features.shape[1]),
                                 "antialias": p.antialias, "weights_sha256": weights_sha}
        write_json_atomic(tmp / INFO_FILE, info)
        tmp.chmod(0o755)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _load_set(path: Path) -> FeatureSet | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        return FeatureSet(features=data["features"], mu=data["mu"], sigma=data["sigma"])


def load_reference(reference_dir: Path | str) -> Reference:
    reference_dir = Path(reference_dir)
    info_file = reference_dir / INFO_FILE
    if not info_file.is_file():
        raise ReferenceError(f"{info_file}: not found; run the fid_reference stage for this dataset first")
    info = json.loads(info_file.read_text())
    return Reference(path=reference_dir, info=info, domain=_load_set(reference_dir / "domain.npz"),
                     inception=_load_set(reference_dir / "inception.npz"))
