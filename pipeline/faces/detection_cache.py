"""The crop stage's memory: what each crawled page is and where its faces are, per detector setting.

Detection is the slow part of crop_anime_faces (about 0.3-0.7 s a page on one core with the
default `combined` detector), and a refresh adds a few hundred pages to tens of thousands. So
the stage remembers, keyed by the page's sha256 (its file name, i.e. its bytes):

    pages       width, height and the off-hue chroma (the monochrome test) of the page
    detections  under a key that hashes every setting that changes what the detector
                reports (`detection_settings`): the boxes, scores and member detectors

and on the next run decodes and detects only what it does not know. Settings applied after
detection (margin, min_face_size, min_score, dedup, ...) are not in the key: changing them
re-crops from memory. The file lives in a `persist: true` output of the stage
(data/cache/anime-faces/), outside the crawl's own folder so the crawl's output never changes
under DVC's feet; it is rewritten atomically, every minute during a long run and at the end,
so a killed stage keeps what it had detected.

Values are stored as JSON numbers, which round-trip Python floats exactly: a page from memory
gives the very bytes a fresh detection gives (tests/faces/test_crop_incremental.py).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from importlib import metadata
from pathlib import Path
from typing import Any

from pipeline.atomic import write_bytes_atomic
from pipeline.config import AnimeFacesParams
from pipeline.faces import detectors
from pipeline.faces.detectors import Detection

logger = logging.getLogger(__name__)

CACHE_FILE = "detections.json"
LAST_RUN_FILE = "last_run.json"
FORMAT = 1


def _code_fingerprint(path: Path) -> str:
    """The detectors' code, comments and layout aside: a change to it invalidates the memory."""
    tree = ast.parse(path.read_text())
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()[:16]


def detector_members(params: AnimeFacesParams) -> list[str]:
    return list(params.combined) if params.detector == "combined" else [params.detector]


def detection_min_size(params: AnimeFacesParams) -> int | None:
    # The detectors' own smallest sizes (20-43 px) are below the default min_face_size;
    # search smaller only when asked to keep smaller faces.
    return params.min_face_size if params.min_face_size < 20 else None


def detection_settings(params: AnimeFacesParams) -> dict[str, Any]:
    """Everything that changes what detection reports for a page, and nothing else."""
    members = detector_members(params)
    settings: dict[str, Any] = {
        "detector": params.detector,
        "detect_max_side": params.detect_max_side,
        "min_size": detection_min_size(params),
        "code": _code_fingerprint(Path(detectors.__file__)),
    }
    if params.detector == "combined":
        settings.update(combined=members, combined_iou=params.combined_iou)
    if "anime_cascade" in members:
        # The file's bytes, not its path: a moved copy is the same cascade.
        cascade = detectors.resolve_cascade(params.cascade_path)
        settings["cascade_sha256"] = hashlib.sha256(cascade.read_bytes()).hexdigest()
        settings["opencv"] = metadata.version("opencv-python-headless")
    if "animeface" in members:
        settings["animeface"] = metadata.version("animeface")
    if "mtcnn" in members:
        from pipeline.device import resolve_device

        settings.update(mtcnn_thresholds=list(params.mtcnn_thresholds), torch=metadata.version("torch"),
                        device=str(resolve_device(params.device)).split(":")[0])
    return settings


def settings_key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def detections_to_json(found: list[Detection]) -> list[list]:
    return [[*d.box, d.score, d.detector] for d in found]


def detections_from_json(rows: list[list]) -> list[Detection]:
    return [Detection(tuple(float(v) for v in row[:4]), float(row[4]), str(row[5])) for row in rows]


class DetectionCache:
    """Page facts and detections of one cache folder; `None` as the folder remembers nothing."""

    def __init__(self, folder: Path | str | None, settings: dict[str, Any] | None):
        self.folder = Path(folder) if folder is not None else None
        self.settings = settings
        self.key = settings_key(settings) if settings is not None else None
        self.pages: dict[str, list] = {}
        self.detections: dict[str, dict[str, Any]] = {}
        if self.folder is not None:
            self._load(self.folder / CACHE_FILE)
        if self.key is not None:
            self.detections.setdefault(self.key, {"settings": settings, "pages": {}})

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except ValueError as exc:
            # Written atomically, so this is damage from outside: start over rather than fail.
            logger.warning("%s: not readable (%s); detecting every page again", path, exc)
            return
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            logger.warning("%s: another format; detecting every page again", path)
            return
        self.pages = data.get("pages", {})
        self.detections = data.get("detections", {})

    @property
    def enabled(self) -> bool:
        return self.folder is not None and self.key is not None

    def facts(self, sha256: str) -> list | None:
        """[width, height, off_hue] of a page seen before."""
        return self.pages.get(sha256) if self.enabled else None

    def found(self, sha256: str) -> list[list] | None:
        """The page's detections (JSON form) under the current settings, None if never detected."""
        if not self.enabled:
            return None
        return self.detections[self.key]["pages"].get(sha256)

    def remember(self, sha256: str, facts: list | None, found: list[list] | None) -> None:
        if not self.enabled:
            return
        if facts is not None:
            self.pages[sha256] = facts
        if found is not None:
            self.detections[self.key]["pages"][sha256] = found

    def save(self, last_run: dict[str, Any] | None = None) -> None:
        if self.folder is None:
            return
        data = {"format": FORMAT, "pages": self.pages, "detections": self.detections}
        write_bytes_atomic(self.folder / CACHE_FILE, json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
        if last_run is not None:
            write_bytes_atomic(self.folder / LAST_RUN_FILE, (json.dumps(last_run, indent=2, sort_keys=True) + "\n").encode())
