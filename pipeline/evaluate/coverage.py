"""Mode coverage: which digit classes a generator draws, and how unevenly.

MNIST's ten classes are (almost) uniform, so a generator that matches the data produces a flat
class histogram. Mode collapse, as the seed saw in the MLP GAN, shows as few covered classes
and a large KL divergence from uniform (log 10 = 2.30 nats when every sample is one digit).
"""

from __future__ import annotations

import numpy as np


def class_histogram(predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of samples per class (sums to 1)."""
    predictions = np.asarray(predictions)
    if len(predictions) == 0:
        raise ValueError("no samples to count")
    if predictions.min() < 0 or predictions.max() >= num_classes:
        raise ValueError(f"class ids must be in [0, {num_classes}), got {predictions.min()}..{predictions.max()}")
    return np.bincount(predictions, minlength=num_classes) / len(predictions)


def mode_coverage(predictions: np.ndarray, num_classes: int = 10, min_share: float = 0.01) -> dict:
    """{"mode_coverage": classes with at least `min_share` of the samples,
        "mode_kl": KL(histogram || uniform) in nats, "class_shares": the histogram}.

    A share threshold rather than "at least one sample": with 10,000 samples a few stray
    misclassifications would otherwise count a missing digit as covered.
    """
    shares = class_histogram(predictions, num_classes)
    nonzero = shares[shares > 0]
    kl = float(np.sum(nonzero * np.log(nonzero * num_classes)))
    return {"mode_coverage": int((shares >= min_share).sum()), "mode_kl": kl, "class_shares": shares.tolist()}
