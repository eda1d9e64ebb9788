"""The dataset format every stage shares (DESIGN.md, "Dataset on disk").

    data/datasets/<name>/
        images.npy   uint8  N x H x W x C   (C = 1 or 3)
        split.npy    uint8  N               (index into meta["splits"], e.g. 0=train, 2=test)
        labels.npy   int64  N               (optional: class labels, -1 = unknown; names in
                                             meta["label_names"])
        attrs.npy    int8   N x A           (optional: 0/1 attributes; names in meta["attr_names"])
        meta.json    source, counts, image size, sha256 of each array, the params used

One large array instead of many small files keeps DVC fast and lets training read it with
`mmap_mode="r"` or copy it to the GPU once. A dataset is written into a temporary folder
and renamed into place only when complete, so a killed stage never leaves a folder that
looks whole; readers check every array against the sha256 recorded in meta.json.

Hashing 2.5 GB of CelebA on every open costs seconds per stage, so an array is hashed once per
content change: after a successful check its file's identity (device, inode, size, mtime and
ctime in ns) is remembered beside the folder in `.<name>.verified.json` (outside the folder,
which DVC tracks), and an open whose files still have that identity skips the hash. Writing a
file changes its mtime and ctime (ctime cannot be set back by a user), and replacing it changes
its inode, so altered content is hashed again. `read_dataset(path, verify=True)` (and
`python -m pipeline verify-dataset <dir>`) hashes everything regardless.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from pipeline.atomic import write_json_atomic  # noqa: F401 (re-exported: stages import it from here)

SPLITS = {"train": 0, "valid": 1, "test": 2}
ARRAYS = ("images", "split", "labels", "attrs")
DTYPES = {"images": np.uint8, "split": np.uint8, "labels": np.int64, "attrs": np.int8}


class DatasetError(ValueError):
    """A dataset folder is missing, malformed or altered; the message names the file."""


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temporary folder into place, replacing any previous version.

    Also removes what writers killed earlier left beside `final`: their temporary folders
    (`.<name>.tmp-*`) and any previous version moved aside (`.<name>.old-*`)."""
    final = Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    os.rename(tmp, final)
    for stale in (*final.parent.glob(f".{final.name}.tmp-*"), *final.parent.glob(f".{final.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(final: Path | str) -> Iterator[Path]:
    """A temporary folder beside `final` to write into; on success it replaces `final`
    (replace_dir), on any error it is removed, so `final` is never half written.

        with staged_dir(out_dir) as tmp:
            write_json_atomic(tmp / "info.json", info)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp's 0700 would make the output unreadable to others
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass
class Dataset:
    path: Path
    images: np.ndarray  # memory-mapped, read-only
    split: np.ndarray
    meta: dict
    labels: np.ndarray | None = None
    attrs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        return np.flatnonzero(self.split == SPLITS[split])


class DatasetWriter:
    """Stream a dataset into a preallocated memory-mapped array, then commit it atomically.

        with DatasetWriter(out, n, (64, 64, 3), source="celeba") as w:
            w.images[i] = ...; w.split[i] = SPLITS["train"]
            w.labels = ...        # optional, a full array
            w.meta["params"] = {...}

    Nothing appears at `out` unless the block finishes without an exception.
    """

    def __init__(self, out_dir: Path | str, count: int, image_shape: tuple[int, int, int], *, source: str):
        if len(image_shape) != 3 or image_shape[2] not in (1, 3):
            raise ValueError(f"image shape must be H x W x C with C in (1, 3), got {image_shape}")
        self.out_dir = Path(out_dir)
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-", dir=self.out_dir.parent))
        self.tmp_dir.chmod(0o755)  # mkdtemp makes 0700; the finished dataset is an ordinary folder
        self.images = np.lib.format.open_memmap(
            self.tmp_dir / "images.npy", mode="w+", dtype=np.uint8, shape=(count, *image_shape)
        )
        self.split = np.zeros(count, dtype=np.uint8)
        self.labels: np.ndarray | None = None
        self.attrs: np.ndarray | None = None
        self.meta: dict[str, Any] = {"source": source}

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            del self.images
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            return
        self.commit()

    def commit(self) -> None:
        count, image_shape = len(self.images), self.images.shape[1:]
        self.images.flush()
        del self.images  # close the memmap before hashing and renaming
        arrays = {"split": self.split, "labels": self.labels, "attrs": self.attrs}
        for name, array in arrays.items():
            if array is None:
                continue
            array = np.asarray(array, dtype=DTYPES[name])
            if len(array) != count:
                raise ValueError(f"{name} has {len(array)} rows, images has {count}")
            np.save(self.tmp_dir / f"{name}.npy", array)
        split = np.asarray(self.split)
        names = {v: k for k, v in SPLITS.items()}
        meta = dict(self.meta)
        meta.update(
            count=count,
            counts={names[v]: int((split == v).sum()) for v in np.unique(split)},
            splits=SPLITS,
            sha256={p.stem: sha256_file(p) for p in sorted(self.tmp_dir.glob("*.npy"))},
        )
        meta["image_shape"] = list(image_shape)
        write_json_atomic(self.tmp_dir / "meta.json", meta)
        replace_dir(self.tmp_dir, self.out_dir)


def write_dataset(
    out_dir: Path | str,
    images: np.ndarray,
    split: np.ndarray,
    *,
    source: str,
    labels: np.ndarray | None = None,
    attrs: np.ndarray | None = None,
    meta: dict | None = None,
) -> Path:
    """Write in-memory arrays as a dataset folder (atomically)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    with DatasetWriter(out_dir, len(images), images.shape[1:], source=source) as writer:
        writer.images[:] = images
        writer.split = np.asarray(split)
        writer.labels = labels
        writer.attrs = attrs
        writer.meta.update(meta or {})
    return Path(out_dir)


def verified_record_path(path: Path) -> Path:
    """Where the identities of the arrays last found to match meta.json are kept."""
    return path.parent / f".{path.name}.verified.json"


# A file changed less than this before it was looked at is hashed again at the next open, as
# git treats "racily clean" files: the filesystem's clock ticks coarsely (a few ms), so a second
# write within the same tick could leave mtime and ctime as they were.
RACY_NS = 100_000_000


def _identity(file: Path) -> list[int] | None:
    """The file's identity, or None if it changed too recently to be trusted as one."""
    st = file.stat()
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(verified_record_path(path).read_text())
    except (OSError, ValueError):  # none yet, unreadable or damaged: hash again
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(path: Path, record: dict) -> None:
    try:
        write_json_atomic(verified_record_path(path), record)
    except OSError:  # a read-only location: every open hashes, as it did before the record
        pass


def read_dataset(path: Path | str, *, verify: bool | Literal["changed"] = "changed") -> Dataset:
    """Open a dataset folder; arrays are memory-mapped and checked against meta.json's sha256.

    `verify="changed"` hashes only arrays whose file changed since it last matched (see the
    module docstring), `True` hashes every array, `False` none."""
    path = Path(path)
    meta_file = path / "meta.json"
    if not meta_file.is_file():
        raise DatasetError(f"{meta_file}: not found; run the stage that builds this dataset first")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_file}: not valid JSON ({exc})") from None
    recorded = meta.get("sha256", {})
    record = _read_record(path) if verify else {}
    checked: dict[str, dict] = {}
    loaded: dict[str, np.ndarray | None] = {}
    for name in ARRAYS:
        file = path / f"{name}.npy"
        if name not in recorded:
            if name in ("images", "split"):
                raise DatasetError(f"{meta_file}: no sha256 recorded for {name}.npy")
            loaded[name] = None
            continue
        if not file.is_file():
            raise DatasetError(f"{file}: missing (meta.json lists it)")
        if verify:
            # The identity is taken before hashing: a write during the hash changes it.
            known = {"sha256": recorded[name], "file": _identity(file)}
            if verify is True or known["file"] is None or record.get(name) != known:
                if sha256_file(file) != recorded[name]:
                    raise DatasetError(f"{file}: sha256 does not match meta.json; the array was altered or truncated")
            if known["file"] is not None:
                checked[name] = known
        try:
            loaded[name] = np.load(file, mmap_mode="r")
        except ValueError as exc:
            raise DatasetError(f"{file}: not a valid .npy array ({exc})") from None
    if verify and checked != record:
        _write_record(path, checked)
    images = loaded["images"]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise DatasetError(f"{path / 'images.npy'}: expected uint8 N x H x W x C, got {images.dtype} {images.shape}")
    return Dataset(path=path, images=images, split=np.asarray(loaded["split"]), meta=meta,
                   labels=loaded["labels"], attrs=loaded["attrs"])
