"""The crop_anime_faces stage: crawled illustrations in, a square face dataset out.

    data/raw/anime/images/<sha256>.<ext> + manifest.jsonl
        -> data/datasets/anime/  images.npy, split.npy, labels.npy (hair colour), meta.json,
                                 faces.jsonl (every face found: kept, or why dropped),
                                 tags.json (the post's tags for each crop), contact_sheet.png

The geometry (`square_window`, `crop_square`) is shared with CelebA's `crop: mtcnn`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from crawlers.manifest import read_log
from pipeline.config import DATASETS_DIR, RAW_ANIME_DIR, AnimeFacesParams
from pipeline.datasets import SPLITS, DatasetWriter
from pipeline.faces.detectors import Detection, Detector, detector_from_params
from pipeline.faces.hygiene import (HAIR_COLOURS, Deduplicator, hair_colour_label, is_monochrome,
                                    parse_tags)

logger = logging.getLogger(__name__)

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


@dataclass
class Page:
    entry: dict[str, Any]
    path: Path | None
    image: np.ndarray | None = None
    problem: str | None = None  # missing | corrupt | monochrome | duplicate_source


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


def _load_page(page: Page, params: AnimeFacesParams) -> Page:
    if page.path is None:
        page.problem = "missing"
        return page
    try:
        page.image = load_rgb(page.path, page.entry["sha256"])
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        logger.warning("skipping %s: %s", page.path, exc)
        page.problem = "corrupt"
        return page
    if params.drop_grayscale and is_monochrome(page.image, params.monochrome_off_hue):
        page.problem, page.image = "monochrome", None
    return page


def _shrink_for_detection(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image at most max_side on its longer side, and the factor back to full size."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image, 1.0
    factor = max(height, width) / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return small, width / size[0]


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
                     out_dir: Path | str = DATASETS_DIR / "anime", *,
                     detector: Detector | None = None, progress: bool = True) -> dict[str, Any]:
    """Detect, crop, clean and write the anime face dataset; returns the summary in meta.json."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    entries = sorted(read_log(raw_dir / "manifest.jsonl", strings=("sha256",)), key=_post_order)
    if detector is None:
        # The detectors' own smallest sizes (20-43 px) are below the default min_face_size;
        # search smaller only when asked to keep smaller faces.
        detector = detector_from_params(params, min_size=params.min_face_size if params.min_face_size < 20 else None)
    detector_name = getattr(detector, "name", type(detector).__name__)

    pages: list[Page] = []
    seen_sources: set[str] = set()
    for entry in entries:
        page = Page(entry, _image_path(raw_dir, entry))
        if entry["sha256"] in seen_sources:
            page.problem = "duplicate_source"  # one file listed by two posts
        seen_sources.add(entry["sha256"])
        pages.append(page)

    page_counts: Counter[str] = Counter()
    faces: list[dict[str, Any]] = []
    crops: list[np.ndarray] = []
    crop_sources: list[dict[str, Any]] = []
    dedup = Deduplicator(params.near_duplicate_distance)
    size = params.image_size
    bar = tqdm(total=len(pages), desc="crop faces", unit="page", disable=not progress)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for start in range(0, len(pages), params.batch_size):
            batch = pages[start:start + params.batch_size]
            to_load = [page for page in batch if page.problem is None]
            # Decoding releases the GIL; map keeps the order, so the output stays deterministic.
            list(pool.map(lambda page: _load_page(page, params), to_load))
            ready = [page for page in batch if page.problem is None]
            shrunk = [_shrink_for_detection(page.image, params.detect_max_side) for page in ready]
            found_per_page = detector.detect([small for small, _ in shrunk]) if ready else []
            for page, (_, factor), found in zip(ready, shrunk, found_per_page):
                found = [d.scaled(factor) for d in found]
                page_faces = _crop_page(page, found, params, dedup, detector_name, crops, crop_sources)
                faces.extend(page_faces)
                page_counts["with_face" if any(f["kept"] for f in page_faces) else "no_face_kept"] += 1
                page.image = None  # free the full-resolution page
            for page in batch:
                if page.problem is not None:
                    page_counts[page.problem] += 1
            bar.update(len(batch))
    bar.close()

    count = len(crops)
    if count == 0:
        logger.warning("no face was kept from %d pages in %s; the dataset is empty", len(pages), raw_dir)
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
        "detector": detector_name,
        "pages": {"listed": len(pages), **dict(sorted(page_counts.items()))},
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
            params=params.model_dump(mode="json"),
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
    logger.info("anime faces: %s", json.dumps(summary))
    return summary


def _crop_page(page: Page, found: list[Detection], params: AnimeFacesParams, dedup: Deduplicator,
               detector_name: str, crops: list[np.ndarray], crop_sources: list[dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """Crop one page's faces, appending kept crops; one faces.jsonl row per detection."""
    image, entry = page.image, page.entry
    height, width = image.shape[:2]
    tags = parse_tags(entry.get("tags"))
    rows = []
    # Larger faces first: when a page has more than max_faces_per_image, keep the clearest.
    order = sorted(found, key=lambda d: (-d.side, -d.score, d.box))
    accepted = 0
    for detection in order:
        window = square_window(detection.box, width, height, margin=params.margin, shift_up=params.shift_up)
        padding = padding_fraction(window, width, height)
        row = {
            "source_sha256": entry["sha256"], "site": entry.get("site"), "post_id": entry.get("post_id"),
            "box": [round(v, 1) for v in detection.box], "score": round(detection.score, 4),
            "detector": detector_name if detection.detector == detector_name
            else f"{detector_name}:{detection.detector}",
            "window": list(window), "padding": round(padding, 4), "kept": False, "reason": None,
            "index": None,
        }
        rows.append(row)
        if detection.score < params.min_score:
            row["reason"] = "low_score"
        elif detection.side < params.min_face_size:
            row["reason"] = "too_small"
        elif accepted >= params.max_faces_per_image:
            row["reason"] = "too_many"
        elif padding > params.max_padding:
            row["reason"] = "padding"
        if row["reason"]:
            continue
        accepted += 1
        crop = cut_window(image, window, params.image_size)
        reason, phash = dedup.check(crop)
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


def main(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params).anime.faces
    summary = crop_anime_faces(params, args.raw, args.out)
    print(json.dumps(summary, indent=2))
    return 0

