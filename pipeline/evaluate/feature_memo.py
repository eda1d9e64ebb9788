"""A memory of Inception features, keyed by the exact images and the exact extractor.

Inception features cost minutes per thousand images on a CPU (bench/inception_speed.py), and
they depend on nothing but the uint8 images and the extractor; the statistics, the probe and
the report built on them change far more often. So a re-evaluation after an evaluation-only
change (a probe setting, a statistics fix) reads the features back instead of recomputing them.

The key is the sha256 of the image bytes (shape included) together with everything that makes
the extractor's output: the weights' source sha256, the resize, the precision, the device kind
and the torch version. Same key, same features, so a hit returns exactly what a recomputation
would, and the stage stays a pure function of its declared inputs; the memory lives outside the
repository (like the torch hub cache), in $DCGAN_FEATURE_MEMO or $XDG_CACHE_HOME/dcgan-pipeline/features
(~/.cache/dcgan-pipeline/features);
DCGAN_FEATURE_MEMO=off turns it off. Files are written atomically, so a killed stage leaves
none half written; a file that does not read back as the expected array is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.atomic import write_bytes_atomic
from pipeline.config import user_cache_dir

ENV = "DCGAN_FEATURE_MEMO"


def memo_dir() -> Path | None:
    setting = os.environ.get(ENV, "")
    if setting.lower() == "off":
        return None
    return Path(setting).expanduser() if setting else user_cache_dir() / "features"


def images_key(images: torch.Tensor) -> str:
    digest = hashlib.sha256(f"{images.dtype} {tuple(images.shape)}".encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()


def remembered(images: torch.Tensor, extractor: dict, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """compute()'s features of `images`, read back when this extractor has seen these images before."""
    folder = memo_dir()
    if folder is None:
        return compute()
    key = {"images": images_key(images), "extractor": extractor, "torch": torch.__version__}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = folder / f"{name}.npy"
    if path.is_file():
        try:
            features = np.load(path, allow_pickle=False)
            if features.dtype == np.float32 and features.ndim == 2 and len(features) == len(images):
                return features
        except (OSError, ValueError):
            pass  # unreadable: recompute and overwrite
    features = np.ascontiguousarray(compute(), dtype=np.float32)
    buffer = io.BytesIO()
    np.save(buffer, features, allow_pickle=False)
    write_bytes_atomic(path, buffer.getvalue())
    return features
