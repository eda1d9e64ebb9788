"""The standard FID feature extractor: Inception v3 with the 2015-12-05 TensorFlow weights.

We use torchmetrics' `NoTrainInceptionV3`, the exact module inside its FrechetInceptionDistance
(torch-fidelity's port of the TF graph), so our features are the library's features; only the
statistics are kept by us, because the real side is computed once per dataset (reference.py).

Weights come from `evaluate.inception_weights`: a local file, or "download": fetched once into
the torch hub cache (torch.hub.download_url_to_file, which keeps a failed or corrupt download
out of the cache), and that file's sha256 checked against the published one before anything
reads it, also when it was already in the cache. A PyTorch weights file is a pickle, which can
run code when loaded; a file we fetched must be exactly the published one, and a local file
must pass torch.load(weights_only=True) (plain tensors only) before torch-fidelity loads it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.datasets import sha256_file

# torch-fidelity's release of the weights; pytorch-fid's pt_inception-2015-12-05-6726825d.pth holds
# the same converted TF weights under the same parameter names, so either file works.
WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_NAME = WEIGHTS_URL.rsplit("/", 1)[1]
# The release file's sha256 (95,628,359 bytes). Torch hub names a file after the first 8 hex
# digits of its sha256 (the "6726825d" above); this full digest is the one that projects pinning
# these weights record, and it starts with those 8 digits.
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
FEATURE_DIM = 2048


class InceptionWeightsError(RuntimeError):
    """The Inception weights cannot be found, fetched or loaded; the message says what to do."""


def _how_to_provide(reason: str) -> str:
    return (f"{reason}. Download {WEIGHTS_URL} on a machine with network (or use pytorch-fid's "
            f"pt_inception-2015-12-05-6726825d.pth, the same weights), then set "
            f"evaluate.inception_weights: /path/to/that/file in params.yaml; or set evaluate.inception: false "
            f"to skip the standard FID (fid_domain and the probe still run).")


def cached_weights() -> Path:
    """Where "download" keeps the weights: the torch hub cache ($TORCH_HOME/hub, ~/.cache/torch/hub)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


def fetch_weights() -> tuple[Path, str]:
    """(the published weights in the hub cache, their sha256): downloaded if absent, then checked.

    A file in the cache whose sha256 is not the published one (a truncated copy, another file
    under the same name) is an error: nothing is loaded from it."""
    path = cached_weights()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # hash_prefix = the full digest: torch checks it before moving the download into place.
            torch.hub.download_url_to_file(WEIGHTS_URL, str(path), hash_prefix=WEIGHTS_SHA256, progress=False)
        except OSError as exc:  # urllib's URLError is an OSError: no network, proxy, DNS
            raise InceptionWeightsError(_how_to_provide(f"cannot download the Inception weights ({exc})")) from None
        except RuntimeError as exc:  # torch's "invalid hash value"
            raise InceptionWeightsError(_how_to_provide(f"{WEIGHTS_URL}: the download is not the published "
                                                        f"file ({exc})")) from None
    sha = sha256_file(path)
    if sha != WEIGHTS_SHA256:
        raise InceptionWeightsError(
            f"{path}: sha256 {sha} is not the published {WEIGHTS_SHA256} of {WEIGHTS_NAME}; nothing was "
            f"loaded from it. Delete it to download again, or set evaluate.inception_weights to a verified copy.")
    return path, sha


def local_weights(setting: str) -> Path:
    """The local weights file that `evaluate.inception_weights` names."""
    path = Path(setting).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(_how_to_provide(f"params.yaml: evaluate.inception_weights: {path} not found"))
    return path


def load_inception(setting: str, *, antialias: bool, device: torch.device | str = "cpu",
                   feature: str = str(FEATURE_DIM)) -> tuple[nn.Module, str]:
    """(Inception feature extractor in eval mode on `device`, sha256 of its weights file).

    `antialias` is torchmetrics' switch: False resizes like the original TF FID code
    (torch-fidelity's bilinear), True uses torch's antialiased bilinear resize.
    """
    # Imported here so that a run with evaluate.inception: false never needs torch-fidelity's model.
    from torchmetrics.image.fid import NoTrainInceptionV3

    path, sha = fetch_weights() if setting == "download" else (local_weights(setting), None)
    try:
        # weights_only=True first: torch-fidelity loads with weights_only=False, which would run
        # whatever a pickled file contains; a file that passes this check is plain tensors.
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable weights file"
        raise InceptionWeightsError(_how_to_provide(f"{path}: not a PyTorch state dict ({exc})")) from None
    try:
        # Always our checked file: torch-fidelity never downloads (its own download checks no hash).
        model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[feature],
                                   feature_extractor_weights_path=str(path), antialias=antialias)
    except RuntimeError as exc:
        raise InceptionWeightsError(_how_to_provide(f"{path}: not the Inception v3 FID weights ({exc})")) from None
    return model.to(device), sha or sha256_file(path)


@torch.no_grad()
def inception_features(model: nn.Module, images: torch.Tensor, *, batch_size: int,
                       device: torch.device | str = "cpu", desc: str = "inception") -> np.ndarray:
    """uint8 N x C x H x W (C = 1 or 3) -> float32 N x d Inception features.

    Grayscale is tiled to three channels: the network wants RGB, and a gray RGB image is what a
    grayscale PNG turns into when a viewer shows it.
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 N x (1|3) x H x W images, got {images.dtype} {tuple(images.shape)}")
    out = []
    for batch in tqdm(images.split(batch_size), desc=desc, unit="batch", leave=False):
        if batch.shape[1] == 1:
            batch = batch.expand(-1, 3, -1, -1)
        out.append(model(batch.to(device)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)
