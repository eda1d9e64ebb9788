"""ingest_mnist: the original MNIST IDX files -> data/datasets/mnist/.

`mnist.source` is `download` (torchvision's MNIST mirrors, for users with network) or a folder
holding the four IDX files, gzipped or not. Each file is checked against the official MD5 of
its uncompressed bytes and its IDX header, so a truncated or foreign file is a clear error
instead of a silently wrong dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
from pathlib import Path

import numpy as np

from pipeline.config import MnistParams
from pipeline.datasets import SPLITS, write_dataset

# name -> (official MD5 of the uncompressed file, IDX magic number, expected shape)
FILES = {
    "train-images-idx3-ubyte": ("6bbc9ace898e44ae57da46a324031adb", 2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte": ("a25bea736e30d166cdddb491f175f624", 2049, (60000,)),
    "t10k-images-idx3-ubyte": ("2646ac647ad5339dbf082846283269ea", 2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": ("27ae3e4e09519cfbb04c329615203637", 2049, (10000,)),
}


class MnistError(ValueError):
    """A missing, truncated or foreign MNIST file; the message names it."""


def find_file(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise MnistError(f"{folder}: neither {name} nor {name}.gz found (mnist.source must be a folder "
                     "with the four MNIST IDX files)")


def read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip raises these on truncated/corrupt streams
        raise MnistError(f"{path}: cannot be read ({exc})") from None


def parse_idx(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Parse an unsigned-byte IDX file (magic 0x0801 or 0x0803) into a uint8 array."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise MnistError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim not in (1, 3) or len(data) < header:
        raise MnistError(f"{path}: IDX header declares {ndim} dimensions; expected 1 or 3")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise MnistError(f"{path}: {len(data)} bytes, but its header {shape} needs {expected} (truncated?)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path | str, *, verify_md5: bool = True) -> np.ndarray:
    """Read one of the four MNIST files, checking its header and (by name) its official MD5."""
    path = Path(path)
    data = read_bytes(path)
    array = parse_idx(data, path)
    name = path.name.removesuffix(".gz")
    if name in FILES:
        md5, magic, shape = FILES[name]
        if int.from_bytes(data[:4], "big") != magic or array.shape != shape:
            raise MnistError(f"{path}: header says {array.shape}, expected {shape} for {name}")
        if verify_md5 and hashlib.md5(data).hexdigest() != md5:
            raise MnistError(f"{path}: MD5 of the uncompressed bytes is not the official {md5}; "
                             "the file is altered or not the original MNIST")
    return array


def download(root: Path) -> Path:
    """Fetch MNIST with torchvision (for users with network); returns the folder of IDX files."""
    from torchvision.datasets import MNIST

    try:
        for train in (True, False):
            MNIST(root, train=train, download=True)
    # torchvision raises RuntimeError once every mirror failed (its message lists them); a
    # timeout or a full disk surfaces as an OSError.
    except (RuntimeError, OSError) as exc:
        detail = " ".join(str(exc).split())  # torchvision's message spans several lines
        raise MnistError(
            f"mnist.source is 'download', and the MNIST download failed ({type(exc).__name__}: {detail}). "
            f"Get the four IDX files ({', '.join(f'{name}.gz' for name in FILES)}) another way, e.g. from "
            f"another machine or a mirror, put them in one folder (gzipped or not), and set "
            f"mnist.source: /path/to/that/folder in params.yaml."
        ) from exc
    return root / "MNIST" / "raw"


def ingest_mnist(params: MnistParams, out_dir: Path) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        if params.source == "download":
            folder = download(Path(scratch))
        else:
            folder = Path(params.source).expanduser()
            if not folder.is_dir():
                raise MnistError(f"params.yaml: mnist.source: {folder} is not a folder (or use 'download')")
        arrays = {name: read_idx(find_file(folder, name)) for name in FILES}

    parts = []
    for prefix, split, limit in (("train", "train", params.limit_train), ("t10k", "test", params.limit_test)):
        images = arrays[f"{prefix}-images-idx3-ubyte"][:limit]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"][:limit]
        if labels.max() > 9:
            raise MnistError(f"{prefix}-labels-idx1-ubyte: label {labels.max()} outside 0-9")
        parts.append((images, labels, np.full(len(images), SPLITS[split], dtype=np.uint8)))
    images, labels, split = (np.concatenate(column) for column in zip(*parts))
    return write_dataset(
        out_dir, images[..., None], split, labels=labels.astype(np.int64), source="mnist",
        meta={"params": params.model_dump(), "label_names": [str(d) for d in range(10)]},
    )
