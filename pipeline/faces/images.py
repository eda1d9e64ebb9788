"""Decoding a page and cutting a square around a face: what the anime crop stage's page pool
(pages.py), CelebA's `crop: mtcnn` (pipeline/ingest/celeba.py) and faces-eval share.

Pure functions of an image and a box; nothing here knows about the stage, its pool or its memory.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from pipeline.faces.detectors import Detection, Detector

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
