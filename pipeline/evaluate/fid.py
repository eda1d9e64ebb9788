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
    return FrechetReference(mu1, sigma1).distance(mu2, sigma2)


class RankDeficient(ValueError):
    """Too few images for a Fréchet distance in this feature space; the message says why."""


def check_rank(n_fake: int, n_real: int, dim: int, space: str) -> None:
    """A d x d covariance from n <= d samples has rank n - 1 < d: the Fréchet distance then
    measures which directions the few samples happened to span, not the distributions.
    Raises RankDeficient with the reason (the caller writes null and this reason)."""
    n = min(n_fake, n_real)
    if n <= dim:
        side = "real" if n_real <= n_fake else "generated"
        raise RankDeficient(f"only {n} {side} images for {dim}-d {space} features: the covariance is rank-deficient "
                            f"(needs more than {dim}), so a Fréchet distance would be noise; KID is reported instead")


class FrechetReference:
    """One side of Fréchet distances, (mu, sigma), with sigma's square root computed once.

    The trace term only needs the square root of one of the two covariances; holding the real
    side fixed makes every bootstrap draw one covariance and one eigvalsh.
    """

    def __init__(self, mu: np.ndarray, sigma: np.ndarray, num: int | None = None):
        self.mu, self.sigma = _float64(mu), _float64(sigma)
        self.num = num  # images behind the statistics (check_rank), where known
        if self.sigma.shape != (len(self.mu), len(self.mu)):
            raise ValueError(f"statistics do not match: mu {self.mu.shape}, sigma {self.sigma.shape}")
        self.root = _psd_sqrt(self.sigma)
        self.trace = float(np.trace(self.sigma))

    def distance(self, mu: np.ndarray, sigma: np.ndarray) -> float:
        mu, sigma = _float64(mu), _float64(sigma)
        if mu.shape != self.mu.shape or sigma.shape != self.sigma.shape:
            raise ValueError(f"statistics do not match: mu {mu.shape} vs {self.mu.shape}, "
                             f"sigma {sigma.shape} vs {self.sigma.shape}")
        middle = self.root @ sigma @ self.root
        trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
        diff = self.mu - mu
        return float(diff @ diff + self.trace + np.trace(sigma) - 2 * trace_sqrt)

    def with_spread(self, fake: np.ndarray | torch.Tensor, *, draws: int, seed: int) -> tuple[float, float]:
        """(FID of `fake`, its sampling spread): the std of the FID over `draws` bootstrap
        resamples of the generated features (the real statistics are held fixed, as every run
        compares with the same reference)."""
        fake = _float64(fake)
        value = self.distance(*feature_statistics(fake))
        rng = np.random.default_rng(seed)
        boot = [self.distance(*feature_statistics(fake[rng.integers(0, len(fake), len(fake))])) for _ in range(draws)]
        return value, float(np.std(boot, ddof=1))


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


# KID and precision/recall compare sample sets (kernel sums, k-NN balls), quadratic in the set
# sizes; past this many images per side their sampling error is far below the seed spread, so
# both sides are capped (a seeded subset) and the cap is recorded with the numbers.
SET_METRIC_MAX = 10_000


def set_subset(features: np.ndarray, seed: int, limit: int = SET_METRIC_MAX) -> np.ndarray:
    """At most `limit` rows of `features`, a seeded random choice in the original order."""
    if len(features) <= limit:
        return features
    return features[np.sort(np.random.default_rng(seed).choice(len(features), limit, replace=False))]


def all_distances(fake: np.ndarray, real_set: np.ndarray, real: FrechetReference, *, space: str, kid_subset_size: int,
                  kid_subsets: int, pr_k: int, fid_draws: int, seed: int) -> tuple[dict, dict]:
    """Every distance of `fake` features to a real distribution in one feature space.

    Returns ({"fid", "fid_std", "kid", "kid_std", "precision", "recall"}, notes): FID against
    the real (mu, sigma), null with the reason in `notes["fid"]` when rank-deficient; KID and
    precision/recall against `real_set` (the stored real features), both capped at SET_METRIC_MAX.
    """
    notes: dict = {}
    out: dict = {"fid": None, "fid_std": None}
    try:
        check_rank(len(fake), real.num, fake.shape[1], space)
        out["fid"], out["fid_std"] = real.with_spread(fake, draws=fid_draws, seed=seed)
    except RankDeficient as exc:
        notes["fid"] = str(exc)
    fake_set = set_subset(fake, seed)
    out["kid"], out["kid_std"], notes["kid_subset_size"] = kid(fake_set, real_set, subset_size=kid_subset_size,
                                                               subsets=kid_subsets, seed=seed)
    out["precision"], out["recall"] = precision_recall(fake_set, real_set, k=pr_k)
    notes["set_sizes"] = {"generated": len(fake_set), "real": len(real_set)}
    return out, notes
