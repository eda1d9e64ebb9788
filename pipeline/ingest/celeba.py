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
memory-mapped `images.npy`, a few chunks in flight at a time so memory stays flat. A corrupt
image is skipped and counted, never fatal.

`crop: mtcnn` decodes whole images in the workers and runs batched MTCNN (pipeline.faces) in
the parent; an image without a face gets the centre crop, and those are counted in meta.json.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import sys
import zipfile
import zlib
from contextlib import closing
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from pipeline.config import CelebaParams, result_keys
from pipeline.datasets import SPLITS, DatasetWriter
from pipeline.ingest.celeba_layout import (DOWNLOAD_ROOT, CelebaError, ImageStore, download,
                                           image_locations, limit_per_split, locate,
                                           read_annotations)
from pipeline.pool import ordered_map, resolve_workers

__all__ = ["CelebaError", "center_crop_resize", "ingest_celeba"]

CHUNK = 256  # images per pool task: large enough to amortise IPC, small enough for a smooth bar
# Errors PIL, zipfile and zlib raise for a damaged image; anything else is a bug and propagates.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, zipfile.BadZipFile, zlib.error,
                 Image.DecompressionBombError)


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


def _init_worker(store: ImageStore, crop: int, size: int, full: bool) -> None:
    _WORKER.clear()
    _WORKER.update(store=store, crop=crop, size=size, full=full,
                   zip=zipfile.ZipFile(store.path) if store.kind == "zip" else None)


def _read(location: str) -> bytes:
    if _WORKER["zip"] is not None:
        return _WORKER["zip"].read(location)
    return (_WORKER["store"].path / location).read_bytes()


def _decode_chunk(task: tuple[int, list[str]]) -> tuple[int, list[np.ndarray], list[str | None]]:
    """Decode one chunk -> (its start, the images that decoded, per image None or why skipped).

    The images are the size x size centre crops, or with `full` the whole decoded images (the
    parent runs MTCNN on them).
    """
    start, locations = task
    images, failures = [], []
    for location in locations:
        try:
            with Image.open(io.BytesIO(_read(location))) as image:
                if _WORKER["full"]:
                    images.append(np.asarray(image.convert("RGB")))
                else:
                    images.append(center_crop_resize(image, _WORKER["crop"], _WORKER["size"]))
            failures.append(None)
        except ImageTooSmall:
            failures.append("too_small")
        except DECODE_ERRORS:
            failures.append("corrupt")
    return start, images, failures


def decode_all(store: ImageStore, locations: list[str], *, crop: int, size: int, full: bool,
               workers: int, mp_context: str | None = None
               ) -> Iterator[tuple[int, list[np.ndarray], list[str | None]]]:
    """Decoded chunks in order. workers == 1 decodes in this process (no pool to start)."""
    tasks = [(s, locations[s:s + CHUNK]) for s in range(0, len(locations), CHUNK)]
    args = (store, crop, size, full)
    if workers == 1 or len(tasks) == 1:
        _init_worker(*args)
        yield from map(_decode_chunk, tasks)
        return
    context = multiprocessing.get_context(mp_context)
    workers = min(workers, len(tasks))
    with context.Pool(workers, initializer=_init_worker, initargs=args) as pool:
        # Rows land in file-name order; MTCNN in the parent (slower than decoding) never makes
        # the parent buffer the whole decoded set.
        yield from ordered_map(pool, _decode_chunk, tasks, workers)


class MtcnnCropper:
    """`crop: mtcnn`: batched MTCNN (facenet-pytorch) on the decoded images, a square crop around
    the best face (pipeline.faces, shared with the anime stage); the centre crop where MTCNN
    finds no face."""

    def __init__(self, params: CelebaParams):
        from pipeline.faces.detectors import make_detector

        self.params = params
        self.detector = make_detector("mtcnn", device=params.mtcnn_device, batch_size=params.mtcnn_batch_size,
                                      mtcnn_thresholds=params.mtcnn_thresholds)

    def __call__(self, images: list[np.ndarray]) -> tuple[list[np.ndarray | None], list[bool]]:
        """(crop per image, None where even the centre crop does not fit; face found per image)."""
        from pipeline.faces.images import best_faces, crop_square

        p = self.params
        crops: list[np.ndarray | None] = []
        found_face: list[bool] = []
        for image, best in zip(images, best_faces(images, self.detector)):
            if best is not None:
                crops.append(crop_square(image, best.box, p.mtcnn_margin, p.mtcnn_shift_up, p.image_size))
            else:
                # The stage's own centre crop (draft-aware rounding), as for crop: center.
                try:
                    crops.append(center_crop_resize(Image.fromarray(image), p.center_crop, p.image_size))
                except ImageTooSmall:
                    crops.append(None)
            found_face.append(best is not None)
        return crops, found_face


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


def _summary(names: list[str]) -> dict:
    return {"count": len(names), "first": names[:100]}


def ingest_celeba(params: CelebaParams, out_dir: Path, *, download_root: Path = DOWNLOAD_ROOT,
                  mp_context: str | None = None) -> Path:
    """Build the CelebA dataset folder at `out_dir` (atomically) and return it.

    `download_root` is where `celeba.source: download` puts torchvision's files; `mp_context`
    picks the process start method (None: the platform's default).
    """
    source = download(download_root) if params.source == "download" else Path(params.source)
    files = locate(source)
    ann = limit_per_split(read_annotations(files), params.limit)
    # celeba.probe_attributes are evaluate's (it checks them against the dataset's attr_names):
    # the ingest neither reads nor tracks them, so changing them never re-ingests.
    locations = image_locations(files.images, ann.names)
    cropper = MtcnnCropper(params) if params.crop == "mtcnn" else None
    size, count = params.image_size, len(ann.names)

    kept = np.zeros(count, dtype=bool)
    skipped: dict[str, list[str]] = {}
    no_face: list[str] = []
    chunks = decode_all(files.images, locations, crop=params.center_crop, size=size, full=cropper is not None,
                        workers=resolve_workers(params.workers), mp_context=mp_context)
    # closing(): on an error the pool is shut down at once, not whenever the generator is collected.
    with closing(chunks), DatasetWriter(out_dir, count, (size, size, 3), source="celeba") as writer:
        row = 0
        with tqdm(total=count, desc="celeba", unit="img", smoothing=0.05) as bar:
            for start, images, failures in chunks:
                indices = [start + i for i, why in enumerate(failures) if why is None]
                for i, why in enumerate(failures):
                    if why is not None:
                        skipped.setdefault(why, []).append(ann.names[start + i])
                if cropper is not None and images:
                    crops, found = cropper(images)
                    no_face += [ann.names[j] for j, face in zip(indices, found) if not face]
                    skipped.setdefault("too_small", []).extend(
                        ann.names[j] for j, crop in zip(indices, crops) if crop is None)
                    indices = [j for j, crop in zip(indices, crops) if crop is not None]
                    images = [crop for crop in crops if crop is not None]
                if images:
                    writer.images[row:row + len(images)] = np.stack(images)
                row += len(images)
                kept[indices] = True
                bar.update(len(failures))
                if any(skipped.values()) or no_face:
                    bar.set_postfix(skipped=sum(map(len, skipped.values())), no_face=len(no_face))
        if row < count:
            # Skipped images leave unused rows at the end; cut them off before the commit hashes.
            writer.images.flush()
            writer.images = None  # drop the old mapping before the file shrinks under it
            _truncate_npy_rows(writer.tmp_dir / "images.npy", row)
            writer.images = np.load(writer.tmp_dir / "images.npy", mmap_mode="r+")
        skipped = {why: names for why, names in skipped.items() if names}
        writer.split = ann.split[kept]
        writer.attrs = ann.attrs[kept]
        train = ann.attrs[kept & (ann.split == SPLITS["train"])]
        writer.meta.update(
            # The keys that made these bytes: not the speed-only ones nor probe_attributes
            # (evaluate's), which the stage does not track, so they cannot change its output.
            params=result_keys(params, also_exclude={"probe_attributes"}),
            layout=f"{files.layout} {files.images.kind}",
            images_from=str(files.images.path),
            attr_names=ann.attr_names,  # column names of attrs.npy (the datasets.py contract)
            # Share of positives per attribute on the train rows: how balanced each one is.
            attr_positive_fraction=dict(zip(ann.attr_names, np.round(train.mean(axis=0), 4).tolist()))
            if len(train) else {},
            listed=count,
            skipped={why: _summary(names) for why, names in skipped.items()},
            crop={"method": params.crop, "center_crop": params.center_crop, "resize": "bicubic",
                  "jpeg_draft": cropper is None},
        )
        if cropper is not None:
            writer.meta["crop"].update(mtcnn_no_face=_summary(no_face), margin=params.mtcnn_margin,
                                       shift_up=params.mtcnn_shift_up, resize="lanczos")
    if skipped:
        total = sum(map(len, skipped.values()))
        detail = ", ".join(f"{len(v)} {k} (first: {v[0]})" for k, v in skipped.items())
        print(f"celeba: skipped {total} of {count} images: {detail}", file=sys.stderr)
    if no_face:
        print(f"celeba: MTCNN found no face in {len(no_face)} of {count} images (first: {no_face[0]}); "
              f"they got the {params.center_crop} px centre crop", file=sys.stderr)
    return Path(out_dir)
