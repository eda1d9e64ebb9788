"""Distances between a generated and a real feature distribution: FID, KID, precision/recall.

All three work on feature matrices (N x d), whatever network produced them (Inception or the
MNIST classifier), so the real side can be computed once per dataset (reference.py).
KID and precision/recall are torch-fidelity's implementations (the reference code of both
papers, ported); only the Fréchet distance is written here, see `frechet_distance`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric


def feature_statistics(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of N x d features, both float64 (the covariance uses N - 1)."""
    features = _float64(features)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need an N x d feature matrix with N >= 2, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    Written here rather than taken from torchmetrics/torch-fidelity because they take the
    eigenvalues of the non-symmetric product S1 S2, which turn slightly complex or negative when
    a covariance is rank-deficient (dead ReLU units, fewer samples than dimensions). S1 S2 is
    similar to the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which has the same eigenvalues, so
    `eigvalsh` gives them real and the trace of the square root is exact up to round-off.
    """
    mu1, mu2, sigma1, sigma2 = (_float64(a) for a in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"statistics do not match: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_from_features(fake: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(fake), *feature_statistics(real))


def kid(fake: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor, *, subset_size: int = 1000,
        subsets: int = 100, seed: int = 0) -> tuple[float, float, int]:
    """Kernel Inception Distance (Binkowski et al. 2018): (mean, std, subset size used).

    Unbiased MMD^2 with the cubic polynomial kernel, averaged over `subsets` random subsets;
    the subset size shrinks to the smaller set when a set is smaller than `subset_size`.
    """
    fake, real = torch.from_numpy(_float64(fake)), torch.from_numpy(_float64(real))
    size = min(subset_size, len(fake), len(real))
    out = kid_features_to_metric(fake, real, kid_subsets=subsets, kid_subset_size=size, rng_seed=seed, verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD], size


def precision_recall(fake: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor, *, k: int = 3,
                     batch_size: int = 10_000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls.

    precision: share of generated samples inside some real sample's k-NN ball (quality);
    recall: share of real samples inside some generated sample's k-NN ball (coverage).
    """
    fake, real = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (_float64(fake), _float64(real)))
    # save_cpu_ram: distances in blocks of `batch_size` rows, never the whole N x N matrix.
    out = prc_features_to_metric(fake, real, prc_neighborhood=k, prc_batch_size=batch_size, save_cpu_ram=True,
                                 verbose=False)
    return out[KEY_METRIC_PRECISION], out[KEY_METRIC_RECALL]


def _float64(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float64)
