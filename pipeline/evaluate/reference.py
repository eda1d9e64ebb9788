"""fid_reference@<dataset>: real-image statistics, computed once per dataset and reused by every run.

    <out_dir>/reference.json  what was computed from what (protocol, split, counts, seed, antialias,
                              the sha256 of the dataset, the classifier and the Inception weights)
                              and the real-data floor of every distance (below)
    <out_dir>/domain.npz      MNIST classifier features: mean and covariance of every real image of
                              the protocol's split (float64), and a capped set of the features
                              themselves for KID and precision/recall; only for datasets with a
                              domain classifier
    <out_dir>/inception.npz   the same for Inception's 2048-d pool features (evaluate.inception)

The real-data floor: the same distances between the reference and a disjoint set of real images
(test10k: 10,000 train images vs the test reference; train50k: the whole test split vs the train
statistics). A generator cannot be expected to get closer to the reference than other real
images do, so the report shows it beside the runs. FID is biased upwards by about c / n at n
images, so the floor's FID is read at the generated set's size: measured directly where there
are that many disjoint real images, else extrapolated in 1 / n (train50k: 10,000 MNIST or
19,962 CelebA test images, read at 50,000; `fid.FrechetReference.at_count`). KID is unbiased
and precision/recall compare sets capped at fid.SET_METRIC_MAX on both sides, so neither needs it.

KID in the domain space runs on features divided by `kid_feature_scale` (fid.kid_scale, from the
real features of the split), stored here so that every run and the floor use the same one.

The folder is written under a temporary name and renamed, and evaluate refuses a reference
whose settings differ from the current params.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import Params
from pipeline.datasets import read_dataset, sha256_file, staged_dir, write_json_atomic
from pipeline.device import resolve_device
from pipeline.evaluate.classifier import classify, load_classifier
from pipeline.evaluate.fid import FrechetReference, all_distances, feature_statistics, kid_scale, set_subset
from pipeline.evaluate.images import dataset_images, sorted_subset
from pipeline.evaluate.inception import evaluate_extractor, remembered_features

INFO_FILE = "reference.json"
# Datasets with a domain classifier (and so fid_domain, KID, precision/recall, mode coverage).
# CelebA and anime have none: see docs/evaluation.md for why fid_domain is null there.
DOMAIN_DATASETS = ("mnist",)
# The real split each protocol compares with, and the one its floor draws from.
FLOOR_SPLIT = {"test": "train", "train": "test"}


class ReferenceError(ValueError):
    """A reference folder is missing or was computed with other settings; the message says which."""


@dataclass
class FeatureSet:
    features: np.ndarray  # float32, at most fid.SET_METRIC_MAX rows: KID and precision/recall
    mu: np.ndarray  # float64 d, of every real image of the split
    sigma: np.ndarray  # float64 d x d
    num: int  # real images behind mu and sigma
    kid_scale: float | None = 1.0  # KID runs on features / kid_scale (None: a reference from before it)

    def frechet(self) -> FrechetReference:
        return FrechetReference(self.mu, self.sigma, self.num)


@dataclass
class Reference:
    path: Path
    info: dict
    domain: FeatureSet | None
    inception: FeatureSet | None


def reference_split(dataset, wanted: str) -> str | None:
    """`wanted` (the protocol's split) when the dataset has it, else None (= every image)."""
    return wanted if len(dataset.indices(wanted)) >= 2 else None


def _feature_set(features: np.ndarray, seed: int, *, scale_kid: bool = False) -> FeatureSet:
    mu, sigma = feature_statistics(features)
    return FeatureSet(features=set_subset(features, seed).astype(np.float32), mu=mu, sigma=sigma, num=len(features),
                      kid_scale=kid_scale(features) if scale_kid else 1.0)


def _save(path: Path, fs: FeatureSet) -> None:
    np.savez(path, features=fs.features, mu=fs.mu, sigma=fs.sigma, num=fs.num, kid_scale=fs.kid_scale)


def _floor(floor_features: np.ndarray, real: FeatureSet, space: str, params: Params) -> dict:
    p = params.evaluate
    values, notes = all_distances(floor_features, real.features, real.frechet(), space=space,
                                  kid_subset_size=p.kid_subset_size, kid_subsets=p.kid_subsets, pr_k=p.pr_k,
                                  fid_draws=p.fid_bootstrap, seed=p.seed, kid_feature_scale=real.kid_scale,
                                  fid_count=p.samples)
    return {**values, "notes": notes}


def reference_index(dataset, p) -> tuple[np.ndarray, np.ndarray, str | None]:
    """(the real images' indices, the floor's, the split): which real images the statistics and
    the floor are made of, under `evaluate` params `p` (also what `python -m pipeline sample
    --real` writes out)."""
    split = reference_split(dataset, p.real_split)
    if split is None:
        index = np.arange(len(dataset))
        if p.real_limit is not None and len(index) > p.real_limit:
            index = np.sort(np.random.default_rng(p.seed).choice(index, p.real_limit, replace=False))
        return index, np.zeros(0, np.int64), None  # no disjoint real set to compare with
    return (sorted_subset(dataset, split, p.real_limit, p.seed),
            sorted_subset(dataset, FLOOR_SPLIT[split], p.samples, p.seed + 1), split)


def compute_reference(dataset_name: str, dataset_dir: Path | str, out_dir: Path | str, params: Params,
                      classifier_path: Path | str | None = None) -> dict:
    """Compute the real-image features, statistics and floor of one dataset; returns reference.json's content."""
    params = params.for_dataset(dataset_name)
    p = params.evaluate
    device = resolve_device(p.device)
    dataset = read_dataset(dataset_dir)
    index, floor_index, split = reference_index(dataset, p)
    images = dataset_images(dataset, index)
    floor_images = dataset_images(dataset, floor_index) if len(floor_index) >= 2 else None
    info: dict = {
        "dataset": dataset_name,
        "dataset_sha256": dataset.meta.get("sha256", {}),  # every array: a new split is other data
        "protocol": p.protocol,
        "split": split or "all",
        "num_real": len(images),
        "seed": p.seed,
        "domain": None,
        "inception": None,
        "floor": {"split": FLOOR_SPLIT[split] if floor_images is not None else None,
                  "num_images": 0 if floor_images is None else len(floor_images),
                  "fid_at_count": p.samples,  # the generated set's size (see the module's docstring)
                  "domain": None, "inception": None},
    }
    with staged_dir(out_dir) as tmp:
        if dataset_name in DOMAIN_DATASETS:
            if classifier_path is None:
                raise ReferenceError(f"fid_reference@{dataset_name}: the domain features need the MNIST classifier; "
                                     f"pass its classifier.pt (stage domain_evaluator@{dataset_name})")
            classifier = load_classifier(classifier_path, device)
            real = _feature_set(classify(classifier, images, batch_size=p.batch_size, device=device)[0], p.seed,
                                scale_kid=True)
            _save(tmp / "domain.npz", real)
            info["domain"] = {"feature": "mnist_lenet_penultimate", "dim": int(real.mu.shape[0]),
                              "classifier_sha256": sha256_file(classifier_path), "kid_feature_scale": real.kid_scale}
            if floor_images is not None:
                floor = classify(classifier, floor_images, batch_size=p.batch_size, device=device)[0]
                info["floor"]["domain"] = _floor(floor, real, "MNIST-classifier", params)
        if p.inception:
            model, _, identity, compile_setting = evaluate_extractor(p, device)
            real = _feature_set(remembered_features(model, identity, images, batch_size=p.batch_size, device=device,
                                                    compile=compile_setting,
                                                    desc=f"inception {dataset_name}"), p.seed)
            _save(tmp / "inception.npz", real)
            info["inception"] = {"feature": "pool3_2048", "dim": int(real.mu.shape[0]), **identity}
            if floor_images is not None:
                floor = remembered_features(model, identity, floor_images, batch_size=p.batch_size, device=device,
                                            compile=compile_setting,
                                            desc=f"inception {dataset_name} (floor)")
                info["floor"]["inception"] = _floor(floor, real, "Inception", params)
        write_json_atomic(tmp / INFO_FILE, info)
    return info


def _load_set(path: Path) -> FeatureSet | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        scale = float(data["kid_scale"]) if "kid_scale" in data else None
        return FeatureSet(features=data["features"], mu=data["mu"], sigma=data["sigma"], num=int(data["num"]),
                          kid_scale=scale)


def load_reference(reference_dir: Path | str) -> Reference:
    reference_dir = Path(reference_dir)
    info_file = reference_dir / INFO_FILE
    if not info_file.is_file():
        raise ReferenceError(f"{info_file}: not found; run the fid_reference stage for this dataset first")
    info = json.loads(info_file.read_text())
    return Reference(path=reference_dir, info=info, domain=_load_set(reference_dir / "domain.npz"),
                     inception=_load_set(reference_dir / "inception.npz"))
