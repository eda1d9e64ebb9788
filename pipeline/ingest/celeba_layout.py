"""Where a CelebA copy keeps its files, and what its two annotation files say.

Three layouts (see pipeline/ingest/celeba.py): torchvision's (`img_align_celeba/` or its zip,
`list_attr_celeba.txt`, `list_eval_partition.txt`), Kaggle's (`img_align_celeba.zip` or the
folder it extracts to, `list_attr_celeba.csv`, `list_eval_partition.csv`), and Kaggle's whole
archive (everything in one zip). Both annotation formats are parsed strictly: a malformed line
is an error naming the file and the line, never a silently shifted attribute.
"""

from __future__ import annotations

import csv
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from pipeline.datasets import SPLITS

ATTR_FILE = "list_attr_celeba"
PARTITION_FILE = "list_eval_partition"
IMAGE_DIR = "img_align_celeba"
DOWNLOAD_ROOT = Path("data/raw/celeba")  # torchvision puts its files under <root>/celeba/
# CelebA's partition file numbers the splits the way pipeline.datasets.SPLITS does.
PARTITION_TO_SPLIT = {0: SPLITS["train"], 1: SPLITS["valid"], 2: SPLITS["test"]}

KAGGLE_HINT = (
    "Get CelebA another way and point celeba.source at it: the Kaggle dataset "
    "'jessicali9530/celeba-dataset' (download its archive from kaggle.com or with "
    "`kaggle datasets download jessicali9530/celeba-dataset`) gives img_align_celeba.zip or its "
    "folder plus list_attr_celeba.csv and list_eval_partition.csv; or fetch the torchvision "
    "layout (img_align_celeba/ + list_attr_celeba.txt + list_eval_partition.txt) from the "
    "official CelebA page (mmlab.ie.cuhk.edu.hk/projects/CelebA.html). Then set "
    "celeba.source in params.yaml to that zip or folder."
)


class CelebaError(ValueError):
    """A missing or malformed CelebA file or a bad celeba.* param; the message names it."""


# --------------------------------------------------------------------------- locating the files


@dataclass(frozen=True)
class ImageStore:
    """Where the JPEGs are: a folder, or a zip read member by member."""

    kind: Literal["folder", "zip"]
    path: Path

    def describe(self) -> str:
        return f"{self.kind} {self.path}"


@dataclass(frozen=True)
class CelebaFiles:
    images: ImageStore
    attr: Path | str  # a file, or a member name of the zip (the full Kaggle archive)
    partition: Path | str
    layout: str  # "torchvision" (.txt annotations) or "kaggle" (.csv)


def _image_folder(folder: Path) -> Path | None:
    """The folder that holds the JPEGs: Kaggle's extraction nests img_align_celeba twice."""
    for candidate in (folder / IMAGE_DIR, folder):
        if candidate.is_dir() and next(candidate.glob("*.jpg"), None) is not None:
            return candidate
    return None


def _annotation(folder: Path, stem: str, zip_members: dict[str, str]) -> Path | str | None:
    for suffix in (".txt", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    for suffix in (".txt", ".csv"):
        if f"{stem}{suffix}" in zip_members:
            return zip_members[f"{stem}{suffix}"]
    return None


def locate(source: Path) -> CelebaFiles:
    """Find the images and the two annotation files for any of the supported layouts."""
    source = source.expanduser()
    if not source.exists():
        raise CelebaError(f"params.yaml: celeba.source: {source} does not exist (or use 'download')")
    if source.is_dir() and (source / "celeba").is_dir() and not any(source.glob(f"{ATTR_FILE}.*")):
        source = source / "celeba"  # torchvision's download root
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise CelebaError(f"params.yaml: celeba.source: {source} is a file but not a zip archive")
        folder, images = source.parent, ImageStore("zip", source)
    else:
        folder = source
        found = _image_folder(folder / IMAGE_DIR)
        if found is not None:
            images = ImageStore("folder", found)
        elif (folder / f"{IMAGE_DIR}.zip").is_file():
            images = ImageStore("zip", folder / f"{IMAGE_DIR}.zip")
        else:
            raise CelebaError(
                f"{folder}: neither {IMAGE_DIR}/ with .jpg files nor {IMAGE_DIR}.zip found "
                "(celeba.source must be a torchvision-layout folder or the Kaggle zip/folder)"
            )
    members: dict[str, str] = {}
    if images.kind == "zip":
        with zipfile.ZipFile(images.path) as archive:
            members = {Path(n).name: n for n in archive.namelist()
                       if Path(n).name.startswith((ATTR_FILE, PARTITION_FILE))}
    attr = _annotation(folder, ATTR_FILE, members)
    partition = _annotation(folder, PARTITION_FILE, members)
    for stem, found_file in ((ATTR_FILE, attr), (PARTITION_FILE, partition)):
        if found_file is None:
            raise CelebaError(
                f"{folder}: {stem}.txt (torchvision layout) or {stem}.csv (Kaggle layout) not found "
                f"next to the images ({images.describe()}); celeba.source must point at a folder "
                "or zip that has both annotation files beside it"
            )
    layout = "kaggle" if str(attr).endswith(".csv") else "torchvision"
    return CelebaFiles(images=images, attr=attr, partition=partition, layout=layout)


def download(root: Path = DOWNLOAD_ROOT) -> Path:
    """torchvision's CelebA download (Google Drive); returns the torchvision-layout folder."""
    try:
        from torchvision.datasets import CelebA

        CelebA(str(root), split="all", target_type="attr", download=True)
    except Exception as exc:  # gdown missing, Drive quota, network: all end the same way
        raise CelebaError(
            f"celeba.source is 'download', and torchvision's CelebA download failed "
            f"({type(exc).__name__}: {exc}). Google Drive often refuses it ('too many users have "
            f"viewed or downloaded this file'); torchvision also needs the gdown package. "
            f"{KAGGLE_HINT}"
        ) from exc
    return root / "celeba"


# --------------------------------------------------------------------------- annotations


def _read_text(files: CelebaFiles, which: Path | str) -> tuple[str, list[str]]:
    """The annotation's display name and lines, from disk or from inside the zip."""
    if isinstance(which, Path):
        name, data = str(which), which.read_bytes()
    else:
        with zipfile.ZipFile(files.images.path) as archive:
            name, data = f"{files.images.path}:{which}", archive.read(which)
    try:
        return name, data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise CelebaError(f"{name}: not a text file ({exc})") from None


def parse_attributes(lines: list[str], name: str) -> tuple[list[str], list[str], np.ndarray]:
    """Parse list_attr_celeba (.txt or .csv) -> (attribute names, file names, int8 0/1 matrix)."""
    if name.endswith(".csv"):
        rows = csv.reader(lines)
        header = next(rows, None)
        if not header or header[0] != "image_id":
            raise CelebaError(f"{name}: line 1: expected a header 'image_id,<attribute names>'")
        attr_names, first_line, body = header[1:], 2, rows
    else:
        # torchvision / official: a count line, a line of names, then "<file> <1|-1> x 40".
        if len(lines) < 2 or not lines[0].strip().isdigit():
            raise CelebaError(f"{name}: line 1: expected the image count")
        attr_names, first_line = lines[1].split(), 3
        body = (line.split() for line in lines[2:])
    if not attr_names:
        raise CelebaError(f"{name}: no attribute names in the header")
    files, values = [], []
    for number, fields in enumerate(body, start=first_line):
        if not fields or fields == [""]:
            continue  # a trailing blank line
        if len(fields) != len(attr_names) + 1:
            raise CelebaError(f"{name}: line {number}: expected a file name and {len(attr_names)} "
                              f"attribute values, got {len(fields) - 1} values")
        row = fields[1:]
        if any(v not in ("1", "-1") for v in row):
            bad = next(v for v in row if v not in ("1", "-1"))
            raise CelebaError(f"{name}: line {number}: attribute value {bad!r} is not 1 or -1")
        files.append(fields[0].strip())
        # 40 bytes a row rather than 40 str objects: 8 million of those would take ~400 MB.
        values.append(bytes(v == "1" for v in row))
    if not name.endswith(".csv") and int(lines[0]) != len(files):
        raise CelebaError(f"{name}: line 1 says {int(lines[0])} images, the file lists {len(files)}")
    attrs = np.frombuffer(b"".join(values), dtype=np.uint8).astype(np.int8).reshape(len(files), len(attr_names))
    return attr_names, files, attrs


def parse_partition(lines: list[str], name: str) -> dict[str, int]:
    """Parse list_eval_partition (.txt or .csv) -> {file name: split id}."""
    if name.endswith(".csv"):
        rows: Iterator[list[str]] = csv.reader(lines)
        if next(rows, None) != ["image_id", "partition"]:
            raise CelebaError(f"{name}: line 1: expected the header 'image_id,partition'")
        first_line = 2
    else:
        rows, first_line = (line.split() for line in lines), 1
    partition: dict[str, int] = {}
    for number, fields in enumerate(rows, start=first_line):
        if not fields or fields == [""]:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise CelebaError(f"{name}: line {number}: expected '<file> <0|1|2>', got {' '.join(fields)!r}")
        if fields[0] in partition:
            raise CelebaError(f"{name}: line {number}: {fields[0]} is listed twice")
        partition[fields[0]] = PARTITION_TO_SPLIT[int(fields[1])]
    return partition


@dataclass
class Annotations:
    names: list[str]  # image file names, sorted
    split: np.ndarray  # uint8 per image
    attrs: np.ndarray  # int8 0/1, N x A
    attr_names: list[str]


def read_annotations(files: CelebaFiles) -> Annotations:
    attr_name, attr_lines = _read_text(files, files.attr)
    attr_names, attr_files, attrs = parse_attributes(attr_lines, attr_name)
    part_name, part_lines = _read_text(files, files.partition)
    partition = parse_partition(part_lines, part_name)
    if len(set(attr_files)) != len(attr_files):
        raise CelebaError(f"{attr_name}: some images are listed more than once")
    missing = sorted(set(attr_files) ^ set(partition))
    if missing:
        raise CelebaError(f"{attr_name} and {part_name} list different images: {len(missing)} "
                          f"appear in only one of them (first: {missing[0]})")
    # File names are zero-padded numbers, so sorting by name is the official order.
    order = sorted(range(len(attr_files)), key=attr_files.__getitem__)
    names = [attr_files[i] for i in order]
    split = np.array([partition[n] for n in names], dtype=np.uint8)
    return Annotations(names=names, split=split, attrs=attrs[order], attr_names=attr_names)


def limit_per_split(ann: Annotations, limit: int | None) -> Annotations:
    """Keep the first `limit` images of every split (the smoke profile keeps all three splits)."""
    if limit is None:
        return ann
    keep = np.concatenate([np.flatnonzero(ann.split == s)[:limit] for s in sorted(SPLITS.values())])
    keep.sort()
    return Annotations(names=[ann.names[i] for i in keep], split=ann.split[keep],
                       attrs=ann.attrs[keep], attr_names=ann.attr_names)


def image_locations(store: ImageStore, names: list[str]) -> list[str]:
    """Each listed image's path inside the store; every listed image must be there."""
    if store.kind == "zip":
        with zipfile.ZipFile(store.path) as archive:
            # Keyed by base name: Kaggle's archive nests the folder once more than torchvision's zip.
            available = {Path(m).name: m for m in archive.namelist()
                         if m.lower().endswith(".jpg") and not m.startswith("__MACOSX/")}
    else:
        available = {entry.name: entry.name for entry in os.scandir(store.path)}
    absent = [n for n in names if n not in available]
    if absent:
        raise CelebaError(f"{store.describe()}: {len(absent)} images listed in the annotations are "
                          f"missing (first: {absent[0]}); the download or extraction is incomplete")
    return [available[n] for n in names]
