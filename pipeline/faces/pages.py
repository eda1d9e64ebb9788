"""The per-page work of crop_anime_faces, on every core: decode, monochrome test, detect, cut.

`process_pages` runs chunks of pages in a process pool (`anime.faces.workers`, null = every
core) and yields each page's result in the order given, whatever finishes first, so the stage's
output does not depend on the number of workers. A page already in the detection cache is not
detected again, and is not even decoded when none of its remembered faces passes the size,
score and padding rules. What needs the order of all pages (dropping near duplicates, the
crop index) stays in the stage's own process (crop.py).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

from pipeline.config import AnimeFacesParams
from pipeline.faces.detection_cache import detection_min_size, detections_from_json, detections_to_json
from pipeline.faces.detectors import Detection, Detector, detector_from_params, shrink_for_detection
from pipeline.faces.hygiene import Deduplicator, off_hue_chroma
from pipeline.faces.images import cut_window, load_rgb, padding_fraction, square_window
from pipeline.pool import ordered_map, resolve_workers

logger = logging.getLogger(__name__)

DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass
class PageTask:
    index: int  # position in the stage's page order
    path: str
    sha256: str
    facts: list | None  # [width, height, off_hue] from memory
    found: list[list] | None  # detections from memory (JSON form)


@dataclass
class PageResult:
    index: int
    problem: str | None = None  # corrupt | monochrome
    facts: list | None = None
    found: list[list] | None = None  # JSON form, full-resolution boxes
    detected: bool = False  # detected in this run (not from memory)
    decoded: bool = False
    # One row per detection (faces.jsonl without provenance or dedup), and the crops of the rows
    # whose reason is still None, with their perceptual hashes.
    rows: list[dict[str, Any]] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)
    phashes: list[int] = field(default_factory=list)


def plan_faces(found: list[Detection], width: int, height: int, params: AnimeFacesParams,
               detector_name: str) -> list[dict[str, Any]]:
    """One row per detection, with the reason it is dropped (None: to be cut), before dedup."""
    rows = []
    # Larger faces first: when a page has more than max_faces_per_image, keep the clearest.
    order = sorted(found, key=lambda d: (-d.side, -d.score, d.box))
    accepted = 0
    for detection in order:
        window = square_window(detection.box, width, height, margin=params.margin, shift_up=params.shift_up)
        padding = padding_fraction(window, width, height)
        row = {
            "box": [round(v, 1) for v in detection.box], "score": round(detection.score, 4),
            "detector": detector_name if detection.detector == detector_name
            else f"{detector_name}:{detection.detector}",
            "window": list(window), "padding": round(padding, 4), "kept": False, "reason": None, "index": None,
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
        else:
            accepted += 1
    return rows


# --------------------------------------------------------------------------- one worker

_WORKER: dict[str, Any] = {}


def _init_worker(params: AnimeFacesParams, detector: Detector | None, single_thread: bool) -> None:
    if single_thread:
        # Parallelism comes from the pool: N workers each starting N OpenCV/torch threads on
        # N cores would only fight over them.
        import cv2

        cv2.setNumThreads(1)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
    _WORKER.update(params=params, detector=detector)


def _detector() -> Detector:
    # Built on first use, in the worker: a refresh whose pages are all remembered never pays
    # for loading the detectors.
    if _WORKER.get("detector") is None:
        params = _WORKER["params"]
        _WORKER["detector"] = detector_from_params(params, min_size=detection_min_size(params))
    return _WORKER["detector"]


def detector_name(params: AnimeFacesParams, detector: Detector | None) -> str:
    return params.detector if detector is None else getattr(detector, "name", type(detector).__name__)


def _process_chunk(tasks: Sequence[PageTask]) -> list[PageResult]:
    params: AnimeFacesParams = _WORKER["params"]
    name = detector_name(params, _WORKER.get("detector"))
    results = [PageResult(task.index, facts=task.facts, found=task.found) for task in tasks]
    images: dict[int, np.ndarray] = {}

    def decode(i: int) -> bool:
        task, result = tasks[i], results[i]
        if i in images:
            return True
        try:
            images[i] = load_rgb(Path(task.path), task.sha256)
        except DECODE_ERRORS as exc:
            logger.warning("skipping %s: %s", task.path, exc)
            result.problem = "corrupt"
            return False
        result.decoded = True
        if result.facts is None:
            height, width = images[i].shape[:2]
            result.facts = [width, height, off_hue_chroma(images[i])]
        return True

    # Decode what memory cannot answer: pages never seen, then pages never detected this way
    # (monochrome pages are dropped before detection, as a fresh run does).
    for i, result in enumerate(results):
        if result.facts is None:
            decode(i)
    for result in results:
        if result.problem is None and params.drop_grayscale and result.facts[2] < params.monochrome_off_hue:
            result.problem = "monochrome"
    to_detect = [i for i, r in enumerate(results) if r.problem is None and r.found is None and decode(i)]
    if to_detect:
        shrunk = [shrink_for_detection(images[i], params.detect_max_side) for i in to_detect]
        found_per_page = _detector().detect([small for small, _ in shrunk])
        for i, (_, factor), found in zip(to_detect, shrunk, found_per_page):
            results[i].found = detections_to_json([d.scaled(factor) for d in found])
            results[i].detected = True

    for i, result in enumerate(results):
        if result.problem is not None:
            images.pop(i, None)
            continue
        width, height = result.facts[0], result.facts[1]
        result.rows = plan_faces(detections_from_json(result.found), width, height, params, name)
        wanted = [row for row in result.rows if row["reason"] is None]
        if wanted and not decode(i):
            result.rows = []  # the file went bad since it was remembered
            continue
        for row in wanted:
            crop = cut_window(images[i], row["window"], params.image_size)
            result.crops.append(crop)
            result.phashes.append(Deduplicator.phash(crop))
        images.pop(i, None)  # free the full-resolution page
    return results


# --------------------------------------------------------------------------- the pool


def needs_own_process(params: AnimeFacesParams) -> bool:
    """MTCNN on a GPU batches in the stage's process (CUDA does not survive a fork)."""
    members = list(params.combined) if params.detector == "combined" else [params.detector]
    if "mtcnn" not in members:
        return False
    from pipeline.device import resolve_device

    return str(resolve_device(params.device)).split(":")[0] != "cpu"


def process_pages(tasks: list[PageTask], params: AnimeFacesParams, *, workers: int,
                  detector: Detector | None = None) -> Iterator[list[PageResult]]:
    """Chunks of page results, in the order of `tasks`.

    workers == 1 (or a detector object given by the caller) works in this process."""
    if not tasks:
        return
    # Enough chunks to keep every worker busy to the end, at most batch_size pages each.
    size = max(1, min(params.batch_size, math.ceil(len(tasks) / (workers * 4))))
    chunks = [tasks[start:start + size] for start in range(0, len(tasks), size)]
    if workers == 1 or detector is not None or len(chunks) == 1:
        _init_worker(params, detector, single_thread=False)
        try:
            yield from map(_process_chunk, chunks)
        finally:
            _WORKER.clear()
        return
    workers = min(workers, len(chunks))
    # spawn, not fork: a forked child of a process whose OpenCV/OpenMP thread pools have run
    # (a test session, a notebook) can hang in its first detection. Start-up costs ~1 s.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(params, None, True)) as pool:
        # Results land in page order; the parent never buffers more than a few chunks.
        yield from ordered_map(pool, _process_chunk, chunks, workers)
