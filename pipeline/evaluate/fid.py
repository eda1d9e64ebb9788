"""Distances between a generated and a real feature distribution: FID, KID, precision/recall.

All three work on feature matrices (N x d), whatever network produced them (Inception or the
MNIST classifier), so the real side can be computed once per dataset (reference.py).
Precision/recall is torch-fidelity's implementation (the papers' reference code, ported). KID
draws exactly torch-fidelity's subsets and kernel (a test holds the two equal) but is computed
here, because its error is needed and torch-fidelity only returns the spread of single subsets;
the Fréchet distance is written here too, see `frechet_distance`.

Every spread returned here is the standard error of the number returned beside it, over new
generated sets with the real side held fixed (every run is compared with the same reference):
tests/evaluate/test_spreads.py checks each against independent draws, near the floor and far
from it.
"""

from __future__ import annotations

import numpy as np
import torch
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
        """(FID of the whole of `fake`, its standard error): the std of the FID over `draws`
        bootstrap resamples of the generated features (the real statistics are held fixed, as
        every run compares with the same reference). The value is the full set's FID, never the
        bootstrap mean (resampling duplicates images, which biases FID upwards).

        Far from the floor this matches the spread over independent generated sets; near it
        (a generator as good as real data) FID is a degenerate quadratic form and the bootstrap
        overstates the error, by about 1.4x at n = 1000, d = 16 (the safe side)."""
        fake = _float64(fake)
        value = self.distance(*feature_statistics(fake))
        rng = np.random.default_rng(seed)
        boot = [self.distance(*feature_statistics(fake[rng.integers(0, len(fake), len(fake))])) for _ in range(draws)]
        return value, float(np.std(boot, ddof=1))

    def at_count(self, fake: np.ndarray | torch.Tensor, count: int, *, draws: int, seed: int) -> tuple[float, float]:
        """(FID of `fake` extrapolated to `count` generated images, its standard error).

        FID is biased upwards by about c / n at n images (Chong & Forsyth 2020, "Effectively
        unbiased FID"), so a floor measured on fewer real images than a run's generated set sits
        too high. Fit FID = a + c / m over subsets of m images (m from n / 2, or just above the
        feature dimension, to n, evenly spaced in 1 / m) and read the line at 1 / count. The
        standard error is the std of the whole procedure over `draws` bootstrap resamples.
        """
        fake = _float64(fake)
        if count <= len(fake):
            return self.with_spread(fake[:count], draws=draws, seed=seed)
        rng = np.random.default_rng(seed)
        low = max(len(fake) // 2, fake.shape[1] + 2)
        sizes = np.unique(np.round(1 / np.linspace(1 / low, 1 / len(fake), 4)).astype(int))

        def extrapolate(features: np.ndarray) -> float:
            fids = [self.distance(*feature_statistics(features[rng.choice(len(features), m, replace=False)]))
                    for m in sizes]
            slope, intercept = np.polyfit(1 / sizes, fids, 1)
            return float(intercept + slope / count)

        value = extrapolate(fake)
        boot = [extrapolate(fake[rng.integers(0, len(fake), len(fake))]) for _ in range(draws)]
        return value, float(np.std(boot, ddof=1))


def fid_from_features(fake: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(fake), *feature_statistics(real))


def kid(fake: np.ndarray | torch.Tensor, real: np.ndarray | torch.Tensor, *, subset_size: int = 1000,
        subsets: int = 100, seed: int = 0, scale: float = 1.0) -> tuple[float, float | None, int]:
    """Kernel Inception Distance (Binkowski et al. 2018): (mean, its standard error, subset size).

    Unbiased MMD^2 with the cubic kernel k(x, y) = (x.y / d + 1)^3 on `features / scale`,
    averaged over `subsets` random subset pairs, drawn as torch-fidelity draws them (so the mean
    is torch-fidelity's KID); the subset size shrinks to the smaller set when a set is smaller.

    The standard error is that of the mean over new generated sets (real set fixed), not the
    spread of single subsets that torch-fidelity reports (about 4x larger at 10k vs 10k). Its
    square is the sum of two parts:
    - the mean's own subset noise: var(subset estimates) / subsets;
    - the generated set's sampling noise, from the U-statistic's linear (Hoeffding) term:
      4 var(h(x)) / N with h(x) = E k(x, x') - E k(x, y) over generated x' and real y. Each
      sample's h is estimated from the subsets it fell into; estimated that way it carries
      noise of its own, which near the floor (h constant) would dominate, so var(h) is the
      covariance of two independent estimates (even and odd subsets), which that noise does
      not enter. None with a single subset (nothing to estimate the noise from).
    """
    fake, real = _float64(fake) / scale, _float64(real) / scale
    size = min(subset_size, len(fake), len(real))
    dim = fake.shape[1]
    rng = np.random.RandomState(seed)  # torch-fidelity's generator and order of draws
    estimates = np.zeros(subsets)
    h_sum, h_count = np.zeros((2, len(fake))), np.zeros((2, len(fake)))
    for s in range(subsets):
        fi, ri = rng.choice(len(fake), size, replace=False), rng.choice(len(real), size, replace=False)
        x, y = fake[fi], real[ri]
        kxx, kyy, kxy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        np.fill_diagonal(kxx, 0)
        np.fill_diagonal(kyy, 0)
        estimates[s] = (kxx.sum() + kyy.sum()) / (size * (size - 1)) - 2 * kxy.mean()
        h_sum[s % 2, fi] += kxx.sum(axis=1) / (size - 1) - kxy.mean(axis=1)
        h_count[s % 2, fi] += 1
    if subsets < 2:
        return float(estimates.mean()), None, size
    both = (h_count > 0).all(axis=0)
    if both.sum() >= 3:
        h_even, h_odd = h_sum[:, both] / h_count[:, both]
        var_h = max(float(np.cov(h_even, h_odd)[0, 1]), 0.0)
    else:  # too few subsets to see a sample twice: the noisy estimate, which errs on the safe side
        seen = h_count.sum(axis=0) > 0
        var_h = float(np.var(h_sum.sum(axis=0)[seen] / h_count.sum(axis=0)[seen], ddof=1))
    se = np.sqrt(4 * var_h / len(fake) + estimates.var(ddof=1) / subsets)
    return float(estimates.mean()), float(se), size


def kid_scale(real: np.ndarray | torch.Tensor) -> float:
    """The root mean square coordinate of the real features, sqrt(mean ||y||^2 / d).

    KID's kernel (x.y / d + 1)^3 was designed for features of unit scale per coordinate, where
    x.y / d stays below about 1. The MNIST classifier's ReLU features are larger (x.y / d around
    3), so the cube amplifies a few large products and KID becomes heavy-tailed (its floor's
    spread was 7x its mean). Dividing both sides by this scale puts the kernel back in range; the
    scale is recorded with the numbers. Inception's KID is left unscaled (the standard KID).
    """
    real = _float64(real)
    return float(np.sqrt(np.mean(np.sum(real ** 2, axis=1)) / real.shape[1]))


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
                  kid_subsets: int, pr_k: int, fid_draws: int, seed: int, kid_feature_scale: float = 1.0,
                  fid_count: int | None = None) -> tuple[dict, dict]:
    """Every distance of `fake` features to a real distribution in one feature space.

    Returns ({"fid", "fid_std", "kid", "kid_std", "precision", "recall"}, notes): FID against
    the real (mu, sigma), null with the reason in `notes["fid"]` when rank-deficient, and read at
    `fid_count` images when given (the real-data floor with fewer images than the runs generate,
    `FrechetReference.at_count`); KID (on features / `kid_feature_scale`) and precision/recall
    against `real_set` (the stored real features), both capped at SET_METRIC_MAX. Each `*_std`
    is the standard error of its number.
    """
    notes: dict = {}
    out: dict = {"fid": None, "fid_std": None}
    try:
        check_rank(len(fake), real.num, fake.shape[1], space)
        if fid_count is not None and fid_count > len(fake):
            out["fid"], out["fid_std"] = real.at_count(fake, fid_count, draws=fid_draws, seed=seed)
            notes["fid_extrapolated"] = {"from": len(fake), "to": fid_count, "fit": "FID = a + c / n"}
        else:
            out["fid"], out["fid_std"] = real.with_spread(fake, draws=fid_draws, seed=seed)
    except RankDeficient as exc:
        notes["fid"] = str(exc)
    fake_set = set_subset(fake, seed)
    smallest = min(len(fake_set), len(real_set))
    out.update({"kid": None, "kid_std": None, "precision": None, "recall": None})
    notes["set_sizes"] = {"generated": len(fake_set), "real": len(real_set)}
    # A tiny set (a few crawled faces) has no KID (unbiased MMD needs 2 per side) and no k-NN
    # balls (they need k + 1 points): null with the reason, never an exception.
    if smallest < 2:
        notes["kid"] = f"only {smallest} images on one side: KID needs at least 2"
    else:
        out["kid"], out["kid_std"], notes["kid_subset_size"] = kid(
            fake_set, real_set, subset_size=kid_subset_size, subsets=kid_subsets, seed=seed, scale=kid_feature_scale)
    notes["kid_feature_scale"] = kid_feature_scale
    if smallest <= pr_k:
        notes["precision_recall"] = f"only {smallest} images on one side: k-NN balls with k = {pr_k} need {pr_k + 1}"
    else:
        out["precision"], out["recall"] = precision_recall(fake_set, real_set, k=pr_k)
    return out, notes
