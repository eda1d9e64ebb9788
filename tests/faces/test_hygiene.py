"""Monochrome pages, duplicate and near-duplicate crops, hair-colour labels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.config import AnimeFacesParams
from pipeline.faces.images import crop_square
from pipeline.faces.hygiene import HAIR_COLOURS, Deduplicator, hair_colour_label, is_monochrome, parse_tags

from .conftest import jpeg_bytes


def test_tags_as_list_or_string_and_hair_labels():
    assert parse_tags("1girl  blonde_hair long_hair") == ["1girl", "blonde_hair", "long_hair"]
    assert parse_tags(["1girl", "blonde_hair"]) == ["1girl", "blonde_hair"]
    assert parse_tags(None) == []
    assert hair_colour_label(["1girl", "blonde_hair", "long_hair", "very_long_hair"]) == HAIR_COLOURS.index("blonde_hair")
    assert hair_colour_label(["long_hair", "short_hair"]) == -1  # no colour
    assert hair_colour_label(["blonde_hair", "black_hair"]) == -1  # two colours
    assert hair_colour_label(["pink_hair", "multicolored_hair"]) == -1  # mixed


def test_monochrome_pages(dev_images):
    colour = dev_images["tile01.jpg"]
    grey = np.repeat(np.asarray(Image.fromarray(colour).convert("L"))[..., None], 3, axis=2)
    sepia = np.clip(grey.astype(np.float32) * np.array([1.0, 0.85, 0.65]), 0, 255).astype(np.uint8)
    sepia_jpeg = np.asarray(Image.open(io.BytesIO(jpeg_bytes(sepia, 75))).convert("RGB"))
    grey_jpeg = np.asarray(Image.open(io.BytesIO(jpeg_bytes(grey, 75))).convert("RGB"))
    threshold = AnimeFacesParams().monochrome_off_hue
    assert is_monochrome(grey, threshold) and is_monochrome(grey_jpeg, threshold)
    # A tinted page is one hue: lots of chroma, all along one line.
    assert is_monochrome(sepia, threshold) and is_monochrome(sepia_jpeg, threshold)
    # Every real colour illustration stays, pale ones included.
    assert not any(is_monochrome(image, threshold) for image in dev_images.values())


def test_exact_and_near_duplicates(dev_images):
    box = (58, 60, 320, 322)
    image = dev_images["tile01.jpg"]
    crop = crop_square(image, box, 0.35, 0.1, 64)
    # A re-upload: re-encoded at another quality and scaled by 0.9, the same face found again.
    reupload = np.asarray(Image.open(io.BytesIO(jpeg_bytes(image, 70))).convert("RGB").resize((461, 461)))
    crop_again = crop_square(reupload, tuple(v * 0.9 for v in box), 0.35, 0.1, 64)
    other = crop_square(dev_images["tile06.jpg"], (87, 114, 373, 400), 0.35, 0.1, 64)
    assert not np.array_equal(crop, crop_again)

    dedup = Deduplicator(max_distance=4)
    reason, phash = dedup.check(crop)
    assert reason is None
    dedup.add(crop, phash)
    assert dedup.check(crop.copy())[0] == "duplicate"
    assert dedup.check(crop_again)[0] == "near_duplicate"
    assert dedup.check(other)[0] is None
    assert Deduplicator(max_distance=0).check(crop_again)[0] is None  # nothing kept yet
    strict = Deduplicator(max_distance=0)
    strict.add(crop, strict.phash(crop))
    assert strict.check(other)[0] is None


def test_many_hashes_grow_the_store():
    dedup = Deduplicator(max_distance=0)
    rng = np.random.default_rng(0)
    for _ in range(1100):  # past the initial capacity of 1024
        crop = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        reason, phash = dedup.check(crop)
        if reason is None:
            dedup.add(crop, phash)
    assert dedup.count > 1024
