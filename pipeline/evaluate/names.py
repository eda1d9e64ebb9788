"""Metric names: one place that says which feature space a name belongs to (DESIGN.md).

Plain names (fid, kid, precision, recall) are Inception features; the same measures on the
MNIST classifier's features carry `_domain`, so one `dvc exp show` column never mixes spaces.
"""

from __future__ import annotations

DISTANCES = ("fid", "fid_std", "kid", "kid_std", "precision", "recall")


def domain_name(key: str) -> str:
    """fid -> fid_domain, fid_std -> fid_domain_std, recall -> recall_domain."""
    return f"{key[:-4]}_domain_std" if key.endswith("_std") else f"{key}_domain"
