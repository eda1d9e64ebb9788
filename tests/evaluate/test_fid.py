"""FID, KID and precision/recall against independent references and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.neighbors import NearestNeighbors
from torchmetrics.image.fid import FrechetInceptionDistance

from pipeline.evaluate.fid import feature_statistics, fid_from_features, frechet_distance, kid, precision_recall


def correlated(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mixing + shift


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root (the pytorch-fid way)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_scipy_sqrtm_reference():
    a, b = correlated(800, 24, 0), correlated(900, 24, 1, shift=0.3) * 1.5
    assert fid_from_features(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-6)
    assert fid_from_features(a, b) > 1.0


class Identity(torch.nn.Flatten):
    """A "feature extractor" that hands torchmetrics the features themselves."""

    num_features = 16


def test_fid_matches_torchmetrics_on_the_same_features():
    a, b = correlated(500, 16, 2), correlated(600, 16, 3, shift=0.5)
    # torchmetrics with an identity extractor: its own float64 statistics and formula.
    metric = FrechetInceptionDistance(feature=Identity(), normalize=True)
    metric.update(torch.from_numpy(b).float()[:, :, None, None], real=True)
    metric.update(torch.from_numpy(a).float()[:, :, None, None], real=False)
    expected = float(metric.compute())
    ours = fid_from_features(a.astype(np.float32), b.astype(np.float32))
    assert ours == pytest.approx(expected, rel=1e-5)


def test_statistics_are_float64():
    mu, sigma = feature_statistics(correlated(50, 4, 0).astype(np.float32))
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (4, 4)


def test_fid_of_a_set_against_itself_is_zero():
    a = correlated(400, 32, 4)
    assert abs(fid_from_features(a, a)) < 1e-8 * np.trace(np.cov(a, rowvar=False))


def test_fid_of_an_affine_copy_has_the_closed_form():
    # Y = s X + m: cov_Y = s^2 S and (S cov_Y)^(1/2) = s S, so
    # FID = ||(s - 1) mu_X + m||^2 + (1 - s)^2 tr(S), exactly, for the sample statistics too.
    x = correlated(1000, 20, 5)
    m = np.linspace(-1, 1, 20)
    for s in (1.0, 0.5, 2.0):
        y = s * x + m
        mu, sigma = feature_statistics(x)
        expected = float((((s - 1) * mu + m) ** 2).sum() + (1 - s) ** 2 * np.trace(sigma))
        assert fid_from_features(y, x) == pytest.approx(expected, rel=1e-9)


def test_fid_of_two_gaussians_has_the_closed_form():
    # Population statistics: N(0, I) vs N(m, 4 I) in d dims: ||m||^2 + d (1 - 2)^2.
    d = 10
    m = np.full(d, 0.5)
    assert frechet_distance(np.zeros(d), np.eye(d), m, 4 * np.eye(d)) == pytest.approx(d * 0.25 + d, rel=1e-12)


def test_fid_handles_rank_deficient_covariances():
    # Fewer samples than dimensions (as with Inception's 2048-d features on a small set).
    a, b = correlated(30, 64, 6), correlated(30, 64, 7, shift=1.0)
    value = fid_from_features(a, b)
    assert np.isfinite(value) and value == pytest.approx(scipy_fid(a, b), rel=1e-4)


def numpy_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written from the paper's definition."""
    d, m = x.shape[1], len(x)
    kxx, kyy, kxy = ((p @ q.T / d + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2 * kxy.mean())


def test_kid_matches_an_independent_reference():
    a, b = correlated(300, 12, 8), correlated(300, 12, 9, shift=0.4)
    # One subset of the whole set: no sampling, so the number is exact.
    mean, se, size = kid(a, b, subset_size=300, subsets=1)
    assert size == 300 and se is None  # one subset: nothing to estimate its noise from
    assert mean == pytest.approx(numpy_kid(a, b), rel=1e-6)


def test_kid_is_near_zero_for_the_same_distribution_and_grows_with_a_shift():
    data = correlated(1200, 12, 10)  # one distribution (one mixing matrix), two halves
    same, _, _ = kid(data[:600], data[600:], subset_size=200, subsets=20)
    shifted, _, _ = kid(data[:600], data[600:] + 1.0, subset_size=200, subsets=20)
    assert abs(same) < 0.02 < shifted


def test_kid_shrinks_the_subset_to_the_smaller_set():
    _, _, size = kid(correlated(50, 4, 0), correlated(80, 4, 1), subset_size=1000, subsets=2)
    assert size == 50


def reference_precision_recall(fake: np.ndarray, real: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):  # distance to the k-th neighbour, the point itself excluded
        return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]

    def inside(points, centres, r):
        dist = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=2)
        return (dist <= r[None, :]).any(axis=1).mean()

    return float(inside(fake, real, radii(real))), float(inside(real, fake, radii(fake)))


def test_precision_recall_match_a_sklearn_reference():
    real = correlated(400, 8, 12).astype(np.float32)
    fake = (correlated(300, 8, 13) * 0.5 + 0.8).astype(np.float32)  # narrower and shifted: both < 1
    precision, recall = precision_recall(fake, real, k=3, batch_size=128)
    ref_precision, ref_recall = reference_precision_recall(fake, real, 3)
    assert precision == pytest.approx(ref_precision, abs=1e-6)  # < 1 sample in 300
    assert recall == pytest.approx(ref_recall, abs=1e-6)
    assert 0 < precision < 1 and 0 < recall < 1


def test_precision_recall_extremes():
    real = correlated(200, 8, 14).astype(np.float32)
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real + 1000, real, k=3) == (0.0, 0.0)


def test_tiny_sets_give_null_set_metrics_with_reasons_not_an_exception():
    """A few crawled faces (the smoke profile's anime set): KID needs 2 images a side, k-NN
    balls k + 1; below that the numbers are null with the reason."""
    from pipeline.evaluate.fid import FrechetReference, all_distances, feature_statistics

    rng = np.random.default_rng(0)
    real = rng.normal(size=(3, 4))
    reference = FrechetReference(*feature_statistics(real), len(real))
    args = dict(space="test", kid_subset_size=10, kid_subsets=5, pr_k=3, fid_draws=5, seed=0)
    values, notes = all_distances(rng.normal(size=(3, 4)), real, reference, **args)
    assert values["precision"] is None and values["recall"] is None and "k = 3" in notes["precision_recall"]
    assert values["kid"] is not None
    values, notes = all_distances(rng.normal(size=(1, 4)), real, reference, **args)
    assert values["kid"] is None and "at least 2" in notes["kid"]
