"""ingest_celeba: aligned CelebA -> data/datasets/celeba/ (64x64 RGB, official splits, 40 attributes).

`celeba.source` is one of the three ways people have CelebA:

* `download`: torchvision's Google Drive download (often over its quota; the error then says
  how to get the Kaggle zip instead);
* a folder in torchvision's layout: `img_align_celeba/` (or `img_align_celeba.zip`) with
  `list_attr_celeba.txt` and `list_eval_partition.txt` (torchvision's download root, which holds
  `celeba/`, works too);
* the Kaggle layout: `img_align_celeba.zip` (or the folder it extracts to, which nests
  `img_align_celeba/img_align_celeba/`) with `list_attr_celeba.csv` and `list_eval_partition.csv`
  next to it; the whole Kaggle archive, with the CSVs inside the zip, works too.

Images are read straight from the zip (no extraction of 200,000 files). Rows are ordered by
file name, so every layout gives the same arrays. JPEG decoding dominates the cost, so it uses
PIL's draft mode (libjpeg scales by 1/2, 1/4 or 1/8 in the DCT domain) and a process pool
whose workers return small uint8 chunks that the parent streams into the preallocated
memory-mapped `images.npy`. A corrupt image is skipped and counted, never fatal.
"""

from __future__ import annotations

import csv
import io
import math
import multiprocessing
import os
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.config import CelebaParams
from pipeline.datasets import SPLITS, DatasetWriter

ATTR_FILE = "list_attr_celeba"
PARTITION_FILE = "list_eval_partition"
IMAGE_DIR = "img_align_celeba"
DOWNLOAD_ROOT = Path("data/raw/celeba")  # torchvision puts its files under <root>/celeba/
# CelebA's partition file numbers the splits the way pipeline.datasets.SPLITS does.
PARTITION_TO_SPLIT = {0: SPLITS["train"], 1: SPLITS["valid"], 2: SPLITS["test"]}
CHUNK = 256  # images per pool task: large enough to amortise IPC, small enough for a smooth bar
# Errors PIL, zipfile and zlib raise for a damaged image; anything else is a bug and propagates.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile, zlib.error,
                 Image.DecompressionBombError)

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
        values.append(row)
    if not name.endswith(".csv") and int(lines[0]) != len(files):
        raise CelebaError(f"{name}: line 1 says {int(lines[0])} images, the file lists {len(files)}")
    attrs = (np.array(values, dtype=np.int8) > 0).astype(np.int8) if values else np.zeros((0, len(attr_names)), np.int8)
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


# --------------------------------------------------------------------------- preprocessing


class ImageTooSmall(ValueError):
    pass


def center_crop_resize(image: Image.Image, crop: int, size: int, *, draft: bool = True) -> np.ndarray:
    """torchvision's CenterCrop(crop) then an antialiased resize to size x size, as uint8 HxWx3.

    With `draft`, libjpeg decodes at the smallest DCT scale (1/2, 1/4, 1/8) that still leaves
    the crop at least `size` pixels wide, and the crop box is mapped into those scaled
    coordinates (fractional, which `resize(box=...)` handles), so the crop stays exact and only
    the downscaling filter differs from a full decode.
    """
    width, height = image.size
    if crop > min(width, height):
        raise ImageTooSmall(f"{width}x{height} is smaller than the {crop} px crop")
    # Integer offsets, rounded like torchvision.transforms.CenterCrop.
    left, top = int(round((width - crop) / 2)), int(round((height - crop) / 2))
    scale = 1.0
    if draft:
        request = (math.ceil(width * size / crop), math.ceil(height * size / crop))
        drafted = image.draft("RGB", request)
        if drafted is not None:  # None: not a JPEG, nothing to gain
            scale = width / drafted[1][2]
    box = (left / scale, top / scale, (left + crop) / scale, (top + crop) / scale)
    # resize(box=...) alone would let the filter read pixels outside the box, so cut first.
    # The cut is the whole-pixel box around `box`: exact whenever the offsets divide by the
    # scale (the default 178 crop of 178x218: offsets 0 and 20, scale 2); otherwise the filter
    # may reach half a scaled pixel past the crop edge.
    outer = (math.floor(box[0]), math.floor(box[1]), math.ceil(box[2]), math.ceil(box[3]))
    image = image.convert("RGB").crop(outer)  # convert: grayscale or CMYK JPEGs exist in the wild
    inner = (box[0] - outer[0], box[1] - outer[1], box[2] - outer[0], box[3] - outer[1])
    return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC, box=inner))


# --------------------------------------------------------------------------- the worker pool

_WORKER: dict = {}  # per-process state: each worker opens its own zip handle


def _init_worker(store: ImageStore, crop: int, size: int) -> None:
    _WORKER.clear()
    _WORKER.update(store=store, crop=crop, size=size,
                   zip=zipfile.ZipFile(store.path) if store.kind == "zip" else None)


def _read(location: str) -> bytes:
    if _WORKER["zip"] is not None:
        return _WORKER["zip"].read(location)
    return (_WORKER["store"].path / location).read_bytes()


def _decode_chunk(task: tuple[int, list[str]]) -> tuple[int, np.ndarray, list[str | None]]:
    """Decode one chunk -> (its start, uint8 images, per image None or why it was skipped)."""
    start, locations = task
    size = _WORKER["size"]
    out = np.zeros((len(locations), size, size, 3), dtype=np.uint8)
    failures: list[str | None] = [None] * len(locations)
    for i, location in enumerate(locations):
        try:
            with Image.open(io.BytesIO(_read(location))) as image:
                out[i] = center_crop_resize(image, _WORKER["crop"], size)
        except ImageTooSmall:
            failures[i] = "too_small"
        except DECODE_ERRORS:
            failures[i] = "corrupt"
    return start, out, failures


def decode_all(store: ImageStore, locations: list[str], crop: int, size: int, workers: int,
               mp_context: str | None = None) -> Iterator[tuple[int, np.ndarray, list[str | None]]]:
    """Decoded chunks in order. workers == 1 decodes in this process (no pool to start)."""
    tasks = [(s, locations[s:s + CHUNK]) for s in range(0, len(locations), CHUNK)]
    if workers == 1:
        _init_worker(store, crop, size)
        yield from map(_decode_chunk, tasks)
        return
    context = multiprocessing.get_context(mp_context)
    with context.Pool(workers, initializer=_init_worker, initargs=(store, crop, size)) as pool:
        # imap keeps the order, so rows land in file-name order whatever finishes first.
        yield from pool.imap(_decode_chunk, tasks)


def _truncate_npy_rows(path: Path, rows: int) -> None:
    """Shrink an .npy file to its first `rows` rows in place: rewrite the shape in the header
    (padded to its old length, so the data offset is unchanged) and cut the file.

    The row count is only known after decoding (corrupt images are skipped), and copying the
    2.5 GB array into a smaller one would double the disk use for the sake of a few rows.
    """
    with open(path, "r+b") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = read_header(handle)
        data_offset = handle.tell()
        prefix = 10 if version == (1, 0) else 12  # magic + version + header length field
        header = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
                       "shape": (rows, *shape[1:])})
        header = header.ljust(data_offset - prefix - 1) + "\n"
        handle.seek(prefix)
        handle.write(header.encode("latin1"))
        handle.truncate(data_offset + rows * int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)


# --------------------------------------------------------------------------- the stage


def resolve_workers(workers: int | None) -> int:
    """celeba.workers, or every core this process may run on."""
    if workers:
        return workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def ingest_celeba(params: CelebaParams, out_dir: Path, *, download_root: Path = DOWNLOAD_ROOT,
                  mp_context: str | None = None) -> Path:
    """Build the CelebA dataset folder at `out_dir` (atomically) and return it."""
    if params.crop != "center":
        raise CelebaError(f"params.yaml: celeba.crop: {params.crop!r} is not implemented yet; use 'center'")
    source = download(download_root) if params.source == "download" else Path(params.source)
    files = locate(source)
    ann = limit_per_split(read_annotations(files), params.limit)
    unknown = [a for a in params.probe_attributes if a not in ann.attr_names]
    if unknown:
        raise CelebaError(f"params.yaml: celeba.probe_attributes: {', '.join(unknown)} not among the "
                          f"attributes of {files.attr} ({', '.join(ann.attr_names)})")
    locations = image_locations(files.images, ann.names)
    workers = resolve_workers(params.workers)
    size, count = params.image_size, len(ann.names)

    kept = np.zeros(count, dtype=bool)
    skipped: dict[str, list[str]] = {}
    with DatasetWriter(out_dir, count, (size, size, 3), source="celeba") as writer:
        row = 0
        with tqdm(total=count, desc="celeba", unit="img", smoothing=0.05) as bar:
            for start, images, failures in decode_all(files.images, locations, params.center_crop,
                                                      size, min(workers, max(1, math.ceil(count / CHUNK))),
                                                      mp_context):
                good = [i for i, why in enumerate(failures) if why is None]
                writer.images[row:row + len(good)] = images[good]
                row += len(good)
                for i, why in enumerate(failures):
                    if why is None:
                        kept[start + i] = True
                    else:
                        skipped.setdefault(why, []).append(ann.names[start + i])
                bar.update(len(failures))
                if skipped:
                    bar.set_postfix(skipped=sum(map(len, skipped.values())))
        if row < count:
            # Skipped images leave unused rows at the end; cut them off before the commit hashes.
            writer.images.flush()
            writer.images = None  # drop the old mapping before the file shrinks under it
            _truncate_npy_rows(writer.tmp_dir / "images.npy", row)
            writer.images = np.load(writer.tmp_dir / "images.npy", mmap_mode="r+")
        writer.split = ann.split[kept]
        writer.attrs = ann.attrs[kept]
        writer.meta.update(
            params=params.model_dump(),
            layout=f"{files.layout} {files.images.kind}",
            images_from=str(files.images.path),
            attributes=ann.attr_names,
            probe_attributes=list(params.probe_attributes),
            # Share of positives per attribute on the kept train rows: how balanced each one is.
            attr_positive_fraction=dict(zip(ann.attr_names, np.round(
                ann.attrs[kept & (ann.split == SPLITS["train"])].mean(axis=0), 4).tolist())),
            listed=count,
            skipped={why: {"count": len(names), "first": names[:100]} for why, names in skipped.items()},
            crop={"method": params.crop, "center_crop": params.center_crop, "resize": "bicubic",
                  "jpeg_draft": True},
        )
    if skipped:
        total = sum(map(len, skipped.values()))
        detail = ", ".join(f"{len(v)} {k} (first: {v[0]})" for k, v in skipped.items())
        print(f"celeba: skipped {total} of {count} images: {detail}", file=sys.stderr)
    return Path(out_dir)
