"""The crop_anime_faces stage: crawled illustrations in, a square face dataset out.

    data/raw/anime/images/<sha256>.<ext> + manifest.jsonl
        -> data/datasets/anime/  images.npy, split.npy, labels.npy (hair colour), meta.json,
                                 faces.jsonl (every face found: kept, or why dropped),
                                 tags.json (the post's tags for each crop), contact_sheet.png
        -> data/cache/anime-faces/  the detection memory (persists): a refresh detects new pages only

Pages are decoded, detected and cut on every core (pages.py, with images.py's decoding and
geometry); what depends on the order of all pages (near duplicates, crop indices) is done
here, in page order, so the dataset is the same for any number of workers and whether a
page's faces came from memory or a fresh detection.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from crawlers.manifest import read_log
from pipeline.config import DATASETS_DIR, RAW_ANIME_DIR, AnimeFacesParams, result_keys
from pipeline.datasets import SPLITS, DatasetWriter
from pipeline.faces.detection_cache import DetectionCache, detection_settings
from pipeline.faces.detectors import Detector
from pipeline.faces.hygiene import HAIR_COLOURS, Deduplicator, hair_colour_label, parse_tags
from pipeline.faces.pages import PageTask, detector_name, needs_own_process, process_pages
from pipeline.pool import resolve_workers

logger = logging.getLogger(__name__)

# The detection memory: a `persist: true` output of the stage (dvc.yaml), so DVC keeps it
# between runs; see detection_cache.py.
FACES_CACHE_DIR = Path("data/cache/anime-faces")
CACHE_SAVE_SECONDS = 60.0

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
            # Not the speed-only keys (workers): the dataset is the same whatever their values.
            params=result_keys(params, mode="json"),
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

