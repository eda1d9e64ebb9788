"""The crop_anime_faces stage: crawled illustrations in, a square face dataset out.

    data/raw/anime/images/<sha256>.<ext> + manifest.jsonl
        -> data/datasets/anime/  images.npy, split.npy, labels.npy (hair colour), meta.json,
                                 faces.jsonl (every face found: kept, or why dropped),
                                 tags.json (the post's tags for each crop), contact_sheet.png
        -> data/cache/anime-faces/  the detection memory (persists): a refresh detects new pages only

Pages are decoded and detected on every core (pages.py); what depends on the order of all
pages (near duplicates, crop indices) is done here, in page order, so the dataset is the same
for any number of workers and whether a page's faces came from memory or a fresh detection.

The geometry (`square_window`, `crop_square`) is shared with CelebA's `crop: mtcnn`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from crawlers.manifest import read_log
from pipeline.config import DATASETS_DIR, RAW_ANIME_DIR, AnimeFacesParams
from pipeline.datasets import SPLITS, DatasetWriter
from pipeline.faces.detection_cache import DetectionCache, detection_settings
from pipeline.faces.detectors import Detection, Detector
from pipeline.faces.hygiene import HAIR_COLOURS, Deduplicator, hair_colour_label, parse_tags

logger = logging.getLogger(__name__)

# The detection memory: a `persist: true` output of the stage (dvc.yaml), so DVC keeps it
# between runs; see detection_cache.py.
FACES_CACHE_DIR = Path("data/cache/anime-faces")
CACHE_SAVE_SECONDS = 60.0

# --------------------------------------------------------------------------- geometry


def square_window(box: Sequence[float], width: int, height: int, *, margin: float,
                  shift_up: float) -> tuple[int, int, int, int]:
    """The square (x0, y0, x1, y1) to cut around a face box, in whole pixels.

    The side is the box's longer side plus `margin` of it on each side; the centre moves up by
    `shift_up` of the box side so the hair fits. Along an axis where the square fits in the
    image it is slid back inside (the face stays inside too, as the square contains it);
    where it cannot fit it stays centred on the face and the rest is padding.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    face = max(x1 - x0, y1 - y0)
    if face <= 0:
        raise ValueError(f"empty face box {tuple(box)}")
    side = max(1, math.floor(face * (1 + 2 * margin) + 0.5))
    centre_x = (x0 + x1) / 2
    centre_y = (y0 + y1) / 2 - shift_up * face
    left = math.floor(centre_x - side / 2 + 0.5)
    top = math.floor(centre_y - side / 2 + 0.5)
    if side <= width:
        left = min(max(left, 0), width - side)
    if side <= height:
        top = min(max(top, 0), height - side)
    return left, top, left + side, top + side


def padding_fraction(window: Sequence[int], width: int, height: int) -> float:
    """Share of the window's area that lies outside the image."""
    x0, y0, x1, y1 = window
    inside = max(0, min(x1, width) - max(x0, 0)) * max(0, min(y1, height) - max(y0, 0))
    return 1.0 - inside / ((x1 - x0) * (y1 - y0))


def cut_window(image: np.ndarray, window: Sequence[int], size: int) -> np.ndarray:
    """Cut a window (which may reach outside the image) and resize it to size x size.

    Outside the image the border pixels are repeated: a flat black band would be a strong
    fake feature for a GAN to learn. Resizing uses Pillow's Lanczos filter, which widens its
    kernel by the reduction factor, i.e. antialiases (a plain cv2 resize would alias).
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = window
    inner = image[max(y0, 0):min(y1, height), max(x0, 0):min(x1, width)]
    if inner.size == 0:
        raise ValueError(f"window {tuple(window)} does not overlap the {width}x{height} image")
    pad = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    if any(any(p) for p in pad[:2]):
        inner = np.pad(inner, pad, mode="edge")
    pil = Image.fromarray(np.ascontiguousarray(inner))
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(pil, dtype=np.uint8)


def crop_square(image: np.ndarray, box: Sequence[float], margin: float = 0.35,
                shift_up: float = 0.1, size: int = 64) -> np.ndarray:
    """A size x size RGB crop around a face box (see `square_window`)."""
    height, width = image.shape[:2]
    return cut_window(image, square_window(box, width, height, margin=margin, shift_up=shift_up), size)


def crop_center(image: np.ndarray, side: int, size: int) -> np.ndarray:
    """The central side x side square (the classic CelebA 178 px crop), resized to size."""
    height, width = image.shape[:2]
    left, top = (width - side) // 2, (height - side) // 2
    return cut_window(image, (left, top, left + side, top + side), size)


def best_faces(images: Sequence[np.ndarray], detector: Detector) -> list[Detection | None]:
    """The highest-scoring face of each image (the larger on a tie), None where none is found.
    Pass images of one size together: MTCNN batches them on the device."""
    return [max(found, key=lambda d: (d.score, d.side)) if found else None for found in detector.detect(images)]


def crop_best_faces(images: Sequence[np.ndarray], detector: Detector, *, margin: float,
                    shift_up: float, size: int, fallback_side: int | None = None
                    ) -> list[np.ndarray | None]:
    """One crop per image around its highest-scoring face (see `best_faces`).

    Images without a face get the centre crop when `fallback_side` is set, else None.
    """
    crops: list[np.ndarray | None] = []
    for image, best in zip(images, best_faces(images, detector)):
        if best is not None:
            crops.append(crop_square(image, best.box, margin, shift_up, size))
        elif fallback_side is not None:
            crops.append(crop_center(image, fallback_side, size))
        else:
            crops.append(None)
    return crops


# --------------------------------------------------------------------------- input


def _post_order(entry: dict[str, Any]) -> tuple:
    # Oldest post first (numeric ids compare as numbers), so of two uploads of one picture
    # the earlier one is kept, whatever order the crawl stored them in.
    post_id = str(entry.get("post_id", ""))
    return (str(entry.get("site", "")), not post_id.isdigit(), int(post_id) if post_id.isdigit() else 0,
            post_id, entry["sha256"])


def _image_path(raw_dir: Path, entry: dict[str, Any]) -> Path | None:
    sha = entry["sha256"]
    if not all(c in "0123456789abcdef" for c in sha) or len(sha) != 64:
        return None
    matches = sorted((raw_dir / "images").glob(f"{sha}.*"))
    return matches[0] if matches else None


def load_rgb(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8; OSError/ValueError for anything not a whole image."""
    data = path.read_bytes()
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        # The file is named by the sha256 of its bytes: any difference is a damaged file.
        raise ValueError(f"{path}: sha256 differs from its name (truncated or altered)")
    with Image.open(io.BytesIO(data)) as pil:
        if Image.MAX_IMAGE_PIXELS and pil.width * pil.height > Image.MAX_IMAGE_PIXELS:
            raise ValueError(f"{path}: {pil.width}x{pil.height} is too large to decode safely")
        pil.load()  # decodes fully: a truncated file raises here (LOAD_TRUNCATED_IMAGES is off)
        pil = ImageOps.exif_transpose(pil)
        if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
            # Transparent areas become white, the page colour, not black.
            rgba = pil.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            pil = Image.alpha_composite(background, rgba)
        return np.asarray(pil.convert("RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------- the stage


def is_test_source(sha256: str, fraction: float) -> bool:
    """A stable ~fraction of source images, by their hash: a growing crawl keeps old splits."""
    return int(sha256[:8], 16) / 16**8 < fraction


def _contact_sheet(crops: np.ndarray, count: int, seed: int) -> Image.Image:
    from torchvision.utils import make_grid
    import torch

    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(crops), size=min(count, len(crops)), replace=False))
    tensor = torch.from_numpy(np.ascontiguousarray(crops[chosen])).permute(0, 3, 1, 2)
    grid = make_grid(tensor, nrow=max(1, math.ceil(math.sqrt(len(chosen)))), padding=2, pad_value=255)
    return Image.fromarray(grid.permute(1, 2, 0).numpy())


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")


def crop_anime_faces(params: AnimeFacesParams, raw_dir: Path | str = RAW_ANIME_DIR,
                     out_dir: Path | str = DATASETS_DIR / "anime", *, cache_dir: Path | str | None = None,
                     detector: Detector | None = None, progress: bool = True) -> dict[str, Any]:
    """Detect, crop, clean and write the anime face dataset; returns the summary in meta.json
    plus `detection` (pages detected now, from memory, decoded; workers; seconds).

    `cache_dir` holds the detection memory (detection_cache.py); None remembers nothing. A
    `detector` object (tests) runs in this process and is never remembered.
    """
    # pages.py uses this module's geometry, so it is imported here, not at the top.
    from pipeline.faces.pages import PageTask, detector_name, needs_own_process, process_pages, resolve_workers

    started = time.monotonic()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    entries = sorted(read_log(raw_dir / "manifest.jsonl", strings=("sha256",)), key=_post_order)
    cache = DetectionCache(cache_dir, detection_settings(params) if detector is None else None)
    name = detector_name(params, detector)
    workers = 1 if detector is not None or needs_own_process(params) else resolve_workers(params.workers)

    page_counts: Counter[str] = Counter()
    tasks: list[PageTask] = []
    seen_sources: set[str] = set()
    for index, entry in enumerate(entries):
        sha, path = entry["sha256"], _image_path(raw_dir, entry)
        if sha in seen_sources:
            page_counts["duplicate_source"] += 1  # one file listed by two posts
        elif path is None:
            page_counts["missing"] += 1
        else:
            tasks.append(PageTask(index, str(path), sha, cache.facts(sha), cache.found(sha)))
        seen_sources.add(sha)

    faces: list[dict[str, Any]] = []
    crops: list[np.ndarray] = []
    crop_sources: list[dict[str, Any]] = []
    dedup = Deduplicator(params.near_duplicate_distance)
    detection = Counter(detected=0, from_memory=0, decoded=0)
    last_save = time.monotonic()
    bar = tqdm(total=len(entries), initial=len(entries) - len(tasks), desc="crop faces", unit="page",
               disable=not progress)
    for chunk in process_pages(tasks, params, workers=workers, detector=detector):
        for result in chunk:
            entry = entries[result.index]
            cache.remember(entry["sha256"], result.facts, result.found if result.detected else None)
            detection["decoded"] += result.decoded
            if result.detected:
                detection["detected"] += 1
            elif result.found is not None:
                detection["from_memory"] += 1
            if result.problem is not None:
                page_counts[result.problem] += 1
                continue
            page_faces = _keep_faces(entry, result, dedup, crops, crop_sources)
            faces.extend(page_faces)
            page_counts["with_face" if any(f["kept"] for f in page_faces) else "no_face_kept"] += 1
        bar.update(len(chunk))
        if time.monotonic() - last_save > CACHE_SAVE_SECONDS:
            cache.save()  # a killed stage keeps what it detected
            last_save = time.monotonic()
    bar.close()

    count = len(crops)
    if count == 0:
        logger.warning("no face was kept from %d pages in %s; the dataset is empty", len(entries), raw_dir)
    size = params.image_size
    images = np.stack(crops) if count else np.zeros((0, size, size, 3), np.uint8)
    source_shas = [source["sha256"] for source in crop_sources]
    split = np.array([SPLITS["test"] if is_test_source(sha, params.test_fraction) else SPLITS["train"]
                      for sha in source_shas], dtype=np.uint8)
    if params.test_fraction > 0 and count and not (split == SPLITS["test"]).any() and len(set(source_shas)) > 1:
        # A small crawl can miss the hash range entirely; evaluation still needs real test
        # images, so the source with the smallest hash (the next one the range would take) is used.
        first = min(source_shas)
        split[[sha == first for sha in source_shas]] = SPLITS["test"]
    labels = np.array([hair_colour_label(source["tags"]) for source in crop_sources], dtype=np.int64)
    face_counts = Counter("kept" if face["kept"] else face["reason"] for face in faces)
    summary = {
        "detector": name,
        "pages": {"listed": len(entries), **dict(sorted(page_counts.items()))},
        "faces": {"found": len(faces), **dict(sorted(face_counts.items()))},
    }

    with DatasetWriter(out_dir, count, (size, size, 3), source="anime") as writer:
        writer.images[:] = images
        writer.split = split
        writer.labels = labels
        writer.meta.update(
            summary,
            label_names=list(HAIR_COLOURS),
            label_source="hair colour tag of the post; -1 when none or several",
            # Not `workers`: the dataset is the same whatever the number of processes.
            params=params.model_dump(mode="json", exclude={"workers"}),
            files={"faces": "faces.jsonl", "tags": "tags.json", "contact_sheet": "contact_sheet.png"},
        )
        # Side files go into the writer's temporary folder, so they appear with the arrays,
        # all at once, or not at all.
        _write_jsonl(writer.tmp_dir / "faces.jsonl", faces)
        (writer.tmp_dir / "tags.json").write_text(
            json.dumps([source["tags"] for source in crop_sources], ensure_ascii=False) + "\n")
        if count:
            _contact_sheet(images, params.contact_sheet_size, params.seed).save(writer.tmp_dir / "contact_sheet.png")
        else:
            Image.new("RGB", (size, size), (255, 255, 255)).save(writer.tmp_dir / "contact_sheet.png")

    # How this run got there: not part of the dataset (a crop from memory writes the same bytes
    # as a crop from scratch), printed and kept beside the memory.
    summary["detection"] = {**detection, "workers": workers, "seconds": round(time.monotonic() - started, 2),
                            "memory": str(cache.folder) if cache.enabled else None}
    cache.save(last_run=summary)
    logger.info("anime faces: %s", json.dumps(summary))
    return summary


def _keep_faces(entry: dict[str, Any], result, dedup: Deduplicator, crops: list[np.ndarray],
                crop_sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One page's faces.jsonl rows, with provenance; its crops that are not (near) duplicates
    of an earlier page's are appended, in page order."""
    tags = parse_tags(entry.get("tags"))
    pending = iter(zip(result.crops, result.phashes))
    rows = []
    for planned in result.rows:
        row = {"source_sha256": entry["sha256"], "site": entry.get("site"), "post_id": entry.get("post_id"), **planned}
        rows.append(row)
        if row["reason"] is not None:
            continue
        crop, phash = next(pending)
        reason, _ = dedup.check(crop, phash)
        row["phash"] = f"{phash:016x}"
        if reason:
            row["reason"] = reason
            continue
        dedup.add(crop, phash)
        row["kept"], row["index"] = True, len(crops)
        crops.append(crop)
        crop_sources.append({"sha256": entry["sha256"], "tags": tags})
    return rows


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--raw", default=str(RAW_ANIME_DIR), help="crawl folder with manifest.jsonl")
    parser.add_argument("--out", default=str(DATASETS_DIR / "anime"), help="dataset folder to write")
    parser.add_argument("--cache", default=str(FACES_CACHE_DIR),
                        help="detection memory, kept between runs (default: %(default)s)")


def main(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params).anime.faces
    summary = crop_anime_faces(params, args.raw, args.out, cache_dir=args.cache)
    print(json.dumps(summary, indent=2))
    return 0

