"""Face detectors behind one small interface: RGB images in, boxes with scores out.

    detector = make_detector("anime_cascade", cascade_path="../shared/models/lbpcascade_animeface.xml")
    [[Detection(box=(x0, y0, x1, y1), score=3.7, detector="anime_cascade")], ...] = detector.detect(images)

Detectors:
    mtcnn          facenet-pytorch's MTCNN (trained on photographs; what CelebA cropping uses)
    anime_cascade  nagadomi's LBP cascade for anime faces, run by OpenCV
    animeface      the AnimeFace 2009 engine (nvxs) shipped in the `animeface` wheel
    combined       the union of several of the above, overlapping boxes merged

Boxes are in the pixels of the image given; `min_size` is the smallest box side (in those
pixels) a detector looks for, None for each detector's own default (MTCNN 20, the cascade 24;
the AnimeFace engine's smallest window is fixed at 43). Scores are each detector's own (MTCNN probability, AnimeFace
likelihood, the cascade's last-stage weight) and are not comparable across detectors.
"""

from __future__ import annotations

import ctypes
import hashlib
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Protocol, Sequence

import cv2
import numpy as np
from PIL import Image

from pipeline.config import MissingInputError, user_cache_dir

CASCADE_URL = "https://raw.githubusercontent.com/nagadomi/lbpcascade_animeface/master/lbpcascade_animeface.xml"
CASCADE_SHA256 = "9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30"
DETECTOR_NAMES = ("anime_cascade", "animeface", "mtcnn", "combined")


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    detector: str

    @property
    def side(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, y1 - y0)

    def scaled(self, factor: float) -> "Detection":
        """The same detection in an image resized by 1/factor (box coordinates times factor)."""
        return replace(self, box=tuple(float(v) * factor for v in self.box))


class Detector(Protocol):
    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """One list of detections per RGB uint8 H x W x 3 image, best first."""
        ...


def shrink_for_detection(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image at most max_side on its longer side, and the factor back to full size
    (`Detection.scaled(factor)` puts a box found in it back on the full-size image)."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image, 1.0
    factor = max(height, width) / max_side
    size = (max(1, round(width / factor)), max(1, round(height / factor)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    return small, width / size[0]


def _check_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 H x W x 3 image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------- MTCNN


class MtcnnDetector:
    name = "mtcnn"

    def __init__(self, *, thresholds=(0.6, 0.7, 0.7), min_size: int = 20, device: str = "auto",
                 batch_size: int = 32):
        from facenet_pytorch import MTCNN

        from pipeline.device import resolve_device

        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model = MTCNN(keep_all=True, thresholds=list(thresholds), min_face_size=min_size,
                           device=self.device, post_process=False)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        images = [_check_rgb(image) for image in images]
        results: list[list[Detection]] = [[] for _ in images]
        # MTCNN runs a batch only when every image has the same size: group by shape so a
        # crawl of mixed sizes still fills the GPU with the common sizes.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                boxes, probs = self.model.detect(np.stack([images[i] for i in chunk]))
                for i, image_boxes, image_probs in zip(chunk, boxes, probs):
                    if image_boxes is None:
                        continue
                    found = [Detection(tuple(float(v) for v in box), float(prob), self.name)
                             for box, prob in zip(image_boxes, image_probs)]
                    results[i] = sorted(found, key=lambda d: -d.score)
        return results


# --------------------------------------------------------------------------- LBP cascade


def resolve_cascade(path: str | Path = "download", *, cache_dir: Path | None = None,
                    url: str = CASCADE_URL, sha256: str = CASCADE_SHA256) -> Path:
    """A local cascade file as given, or the public one, downloaded once and pinned by sha256."""
    if str(path) != "download":
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"anime.faces.cascade_path: {path} not found "
                                    f"(give a local lbpcascade_animeface.xml or 'download')")
        return path
    target = (cache_dir or user_cache_dir()) / "lbpcascade_animeface.xml"
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    import torch.hub  # here: a crop worker with a local cascade never pays for importing torch

    try:
        # torch's downloader, as for the Inception weights: a temporary file beside the target,
        # its sha256 checked before it is moved into place, removed when anything fails.
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256, progress=False)
    except RuntimeError as exc:  # "invalid hash value"
        raise RuntimeError(f"{url}: does not match the pinned sha256 {sha256} ({exc}); not using it "
                           f"(set anime.faces.cascade_path to a local file)") from None
    return target


class CascadeDetector:
    name = "anime_cascade"

    def __init__(self, cascade_path: str | Path = "download", *, min_size: int = 24,
                 scale_factor: float = 1.1, min_neighbors: int = 5):
        self.path = resolve_cascade(cascade_path)
        try:
            self.cascade = cv2.CascadeClassifier(str(self.path))
        except (cv2.error, SystemError):  # OpenCV raises on a malformed XML, returns empty on others
            self.cascade = None
        if self.cascade is None or self.cascade.empty():
            raise ValueError(f"anime.faces.cascade_path: {self.path} is not an OpenCV cascade file")
        self.min_size, self.scale_factor, self.min_neighbors = min_size, scale_factor, min_neighbors

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results = []
        for image in images:
            gray = cv2.equalizeHist(cv2.cvtColor(_check_rgb(image), cv2.COLOR_RGB2GRAY))
            # detectMultiScale3 also reports the weight of the last stage each box passed: the
            # only per-box confidence a cascade has.
            boxes, _levels, weights = self.cascade.detectMultiScale3(
                gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
                minSize=(self.min_size, self.min_size), outputRejectLevels=True)
            found = [Detection((float(x), float(y), float(x + w), float(y + h)), float(score), self.name)
                     for (x, y, w, h), score in zip(boxes, np.ravel(weights))]
            results.append(sorted(found, key=lambda d: (-d.score, d.box)))
        return results


# --------------------------------------------------------------------------- AnimeFace 2009


class _NvxsImage(ctypes.Structure):
    """Pillow's `ImagingMemoryInstance` as it was before Pillow 11.

    animeface 2.0.3's C extension casts its argument to Pillow's private `ImagingObject` and
    reads this struct through it; Pillow 11 changed the struct, and with a current Pillow the
    engine silently sees an empty image and finds nothing. Rather than pin the whole project
    to an old Pillow, we hand the extension a ctypes object: a ctypes instance begins, like
    `ImagingObject`, with the object header and then a pointer to its buffer, which holds
    this struct, filled in from our own numpy array.
    """

    _fields_ = [
        ("mode", ctypes.c_char * 7), ("type", ctypes.c_int), ("depth", ctypes.c_int),
        ("bands", ctypes.c_int), ("xsize", ctypes.c_int), ("ysize", ctypes.c_int),
        ("palette", ctypes.c_void_p), ("image8", ctypes.c_void_p), ("image32", ctypes.c_void_p),
        ("image", ctypes.c_void_p), ("block", ctypes.c_void_p), ("blocks", ctypes.c_void_p),
        ("pixelsize", ctypes.c_int), ("linesize", ctypes.c_int), ("destroy", ctypes.c_void_p),
    ]


class AnimeFaceDetector:
    name = "animeface"
    # The engine's box is tighter than the cascade's (chin to brow, little hair): on the
    # anime-dev tiles the cascade's box around the same face is 1.23x wider (median, same
    # centre). Growing it by that factor lets one `margin` mean the same for both detectors.
    BOX_SCALE = 1.23
    # The layout above was checked against this release only; another may read differently.
    SUPPORTED_VERSION = "2.0.3"

    def __init__(self, *, min_size: int = 0):
        try:
            from animeface import _nvxs
        except ImportError:
            raise ImportError("the animeface detector needs the `animeface` package "
                              f"(pip install animeface=={self.SUPPORTED_VERSION})") from None
        version = metadata.version("animeface")
        if version != self.SUPPORTED_VERSION:
            raise RuntimeError(f"animeface {version} is installed; this adapter reads the engine's "
                               f"private image layout of animeface {self.SUPPORTED_VERSION} only")
        self._nvxs = _nvxs
        self.min_size = min_size

    def _detect_one(self, image: np.ndarray) -> list[Detection]:
        height, width, _ = image.shape
        rgbx = np.zeros((height, width, 4), np.uint8)  # Pillow keeps RGB as 4-byte pixels
        rgbx[..., :3] = image
        base = rgbx.ctypes.data
        rows = (ctypes.c_void_p * height)(*range(base, base + height * width * 4, width * 4))
        struct = _NvxsImage(b"RGB", 0, 8, 3, width, height, None, None, ctypes.addressof(rows),
                            ctypes.addressof(rows), base, None, 4, width * 4, None)
        found = []
        for result in self._nvxs.detect(struct):
            x, y, w, h = (float(v) for v in result["face_box"])
            cx, cy, side = x + w / 2, y + h / 2, max(w, h) * self.BOX_SCALE
            if side >= self.min_size:
                box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
                found.append(Detection(box, float(result["likelihood"]), self.name))
        return sorted(found, key=lambda d: (-d.score, d.box))

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [self._detect_one(_check_rgb(image)) for image in images]


# --------------------------------------------------------------------------- combination


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class CombinedDetector:
    """The union of several detectors; a box that overlaps an earlier member's box is a repeat.

    Scores of different detectors are not comparable, so members are merged in the given
    order of preference rather than by score (as NMS would).
    """

    name = "combined"

    def __init__(self, members: Sequence[Detector], *, iou_threshold: float = 0.3):
        if not members:
            raise ValueError("anime.faces.combined: needs at least one detector")
        self.members, self.iou_threshold = list(members), iou_threshold

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        per_member = [member.detect(images) for member in self.members]
        results = []
        for index in range(len(images)):
            kept: list[Detection] = []
            for member_results in per_member:
                for detection in member_results[index]:
                    if all(iou(detection.box, other.box) <= self.iou_threshold for other in kept):
                        kept.append(detection)
            results.append(kept)
        return results


def make_detector(name: str, *, cascade_path: str | Path = "download", device: str = "auto",
                  mtcnn_thresholds=(0.6, 0.7, 0.7), min_size: int | None = None, batch_size: int = 32,
                  combined: Sequence[str] = ("anime_cascade", "animeface"),
                  combined_iou: float = 0.3) -> Detector:
    """Build a detector by name; `min_size` is the smallest box side searched, in image pixels.

    MTCNN's image pyramid starts at `min_size`, so changing it changes what MTCNN finds, not
    just which boxes are reported; leave it None unless faces smaller than 20 px matter.
    """
    sized = {} if min_size is None else {"min_size": min_size}
    if name == "mtcnn":
        return MtcnnDetector(thresholds=mtcnn_thresholds, device=device, batch_size=batch_size, **sized)
    if name == "anime_cascade":
        return CascadeDetector(cascade_path, **sized)
    if name == "animeface":
        return AnimeFaceDetector(**sized)
    if name == "combined":
        if "combined" in combined:
            raise ValueError("anime.faces.combined: cannot contain 'combined'")
        members = [make_detector(member, cascade_path=cascade_path, device=device,
                                 mtcnn_thresholds=mtcnn_thresholds, min_size=min_size,
                                 batch_size=batch_size) for member in combined]
        return CombinedDetector(members, iou_threshold=combined_iou)
    raise ValueError(f"unknown detector {name!r}; known: {', '.join(DETECTOR_NAMES)}")


def detector_from_params(params, *, min_size: int | None = None) -> Detector:
    """The detector an `AnimeFacesParams` asks for."""
    return make_detector(params.detector, cascade_path=params.cascade_path, device=params.device,
                         mtcnn_thresholds=params.mtcnn_thresholds, min_size=min_size,
                         batch_size=params.batch_size, combined=params.combined,
                         combined_iou=params.combined_iou)
