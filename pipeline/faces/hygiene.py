"""Dataset hygiene for the crop stage: monochrome pages, duplicate crops, hair-colour labels."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import imagehash
import numpy as np
from PIL import Image

# Danbooru-style hair-colour tags, the label set of the linear probe. `*_hair` tags that are
# not a single colour (long_hair, multicolored_hair, ...) are not classes.
HAIR_COLOURS = (
    "black_hair", "blonde_hair", "blue_hair", "brown_hair", "green_hair", "grey_hair",
    "orange_hair", "pink_hair", "purple_hair", "red_hair", "silver_hair", "white_hair",
    "aqua_hair",
)
# Tags saying the hair has several colours: a single colour tag next to them is not the label.
MIXED_HAIR = ("multicolored_hair", "two-tone_hair", "gradient_hair", "streaked_hair", "split-color_hair")


def parse_tags(tags: str | Iterable[str] | None) -> list[str]:
    """Manifest tags as a list, whether the crawler stored a list or a space-separated string."""
    if tags is None:
        return []
    if isinstance(tags, str):
        return tags.split()
    return [str(tag) for tag in tags]


def hair_colour_label(tags: Iterable[str]) -> int:
    """Index into HAIR_COLOURS when exactly one colour is tagged (and no mixed hair), else -1."""
    tags = set(tags)
    colours = [index for index, name in enumerate(HAIR_COLOURS) if name in tags]
    if len(colours) != 1 or tags.intersection(MIXED_HAIR):
        return -1
    return colours[0]


def off_hue_chroma(image: np.ndarray, max_side: int = 256) -> float:
    """RMS chroma away from the page's dominant hue line: ~0 for grey and single-tint pages.

    In YCbCr a grey pixel has zero chroma (Cb, Cr = 128), and a tinted page (sepia, blue ink)
    has chroma vectors along one direction, growing with brightness. The smaller eigenvalue of
    the chroma vectors' second moment measures everything off that one line, i.e. a second
    hue. A plain chroma spread cannot tell a sepia page from pastel colour art; this can.
    """
    pil = Image.fromarray(image)
    pil.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)  # the statistic needs no detail
    chroma = np.asarray(pil.convert("YCbCr"), dtype=np.float64)[..., 1:].reshape(-1, 2) - 128.0
    moment = chroma.T @ chroma / len(chroma)
    return float(np.sqrt(max(np.linalg.eigvalsh(moment)[0], 0.0)))


def is_monochrome(image: np.ndarray, max_off_hue: float) -> bool:
    return off_hue_chroma(image) < max_off_hue


class Deduplicator:
    """Remembers kept crops; says whether a new one repeats one exactly or nearly.

    Near duplicates are the same face cut from two uploads of one picture (re-encoded,
    resized, slightly recropped): their 64-bit perceptual hashes differ in a few bits.
    The search is a vectorised Hamming distance against every kept hash: quadratic, but a
    crawl of thousands of crops takes well under a second, and it needs no index library.
    """

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        self.exact: set[str] = set()
        self._hashes = np.zeros(1024, dtype=np.uint64)  # grown by doubling
        self.count = 0

    @staticmethod
    def phash(crop: np.ndarray) -> int:
        bits = imagehash.phash(Image.fromarray(crop)).hash.ravel()
        return int("".join("1" if bit else "0" for bit in bits), 2)

    def check(self, crop: np.ndarray, phash: int | None = None) -> tuple[str | None, int]:
        """('duplicate' | 'near_duplicate' | None, the crop's phash); does not remember it.
        `phash`: the crop's hash if already computed (by a worker process)."""
        phash = self.phash(crop) if phash is None else phash
        if hashlib.sha256(crop.tobytes()).hexdigest() in self.exact:
            return "duplicate", phash
        if self.count:
            distances = np.bitwise_count(self._hashes[:self.count] ^ np.uint64(phash))
            if int(distances.min()) <= self.max_distance:
                return "near_duplicate", phash
        return None, phash

    def add(self, crop: np.ndarray, phash: int) -> None:
        self.exact.add(hashlib.sha256(crop.tobytes()).hexdigest())
        if self.count == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
        self._hashes[self.count] = phash
        self.count += 1
