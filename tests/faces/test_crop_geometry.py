"""Crop geometry: margin, shift, clamping at the borders, padding, square antialiased output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.faces.images import (crop_best_faces, crop_center, crop_square, cut_window,
                                   padding_fraction, square_window)
from pipeline.faces.detectors import make_detector


def test_margin_and_shift_up():
    assert square_window((100, 100, 200, 200), 1000, 1000, margin=0.25, shift_up=0) == (75, 75, 225, 225)
    # Shifted up by 0.1 of the 100 px box: 10 px higher, same size.
    assert square_window((100, 100, 200, 200), 1000, 1000, margin=0.25, shift_up=0.1) == (75, 65, 225, 215)
    # A non-square box: the longer side sets the square, centred on the box.
    assert square_window((100, 100, 140, 200), 1000, 1000, margin=0, shift_up=0) == (70, 100, 170, 200)


def test_window_is_slid_inside_the_image_and_still_holds_the_face():
    window = square_window((0, 0, 100, 100), 1000, 1000, margin=0.5, shift_up=0)
    assert window == (0, 0, 200, 200)
    # Right edge: slid left by 50 px; vertically it fits as is (centre 900, minus the 10 px shift).
    box = (900, 850, 1000, 950)
    window = square_window(box, 1000, 1000, margin=0.5, shift_up=0.1)
    assert window == (800, 790, 1000, 990)
    assert window[0] <= box[0] and window[1] <= box[1] and window[2] >= box[2] and window[3] >= box[3]
    assert padding_fraction(window, 1000, 1000) == 0


def test_window_larger_than_image_stays_centred_and_counts_padding():
    window = square_window((10, 10, 90, 90), 100, 100, margin=0.5, shift_up=0)
    assert window == (-30, -30, 130, 130)
    assert padding_fraction(window, 100, 100) == pytest.approx(1 - 100 * 100 / 160**2)
    # Only the axis that cannot fit is padded: a wide image slides horizontally.
    window = square_window((0, 10, 80, 90), 400, 100, margin=0.5, shift_up=0)
    assert window == (0, -30, 160, 130)


def test_crop_inside_equals_plain_crop_and_resize():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    crop = crop_square(image, (150, 100, 250, 200), margin=0.25, shift_up=0, size=64)
    expected = Image.fromarray(image).crop((125, 75, 275, 225)).resize((64, 64), Image.Resampling.LANCZOS)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert np.array_equal(crop, np.asarray(expected))


def test_padding_repeats_the_border():
    image = np.zeros((50, 50, 3), np.uint8)
    image[:, :, 0] = 200  # red everywhere, a dark left column
    image[:, 0] = 0
    crop = cut_window(image, (-50, 0, 50, 100), 100)  # half the window left of the image
    assert crop.shape == (100, 100, 3)
    assert (crop[:50, :50] == 0).all()  # the left border column, repeated
    assert (crop[:50, 51:, 0] == 200).all()
    with pytest.raises(ValueError, match="does not overlap"):
        cut_window(image, (100, 100, 150, 150), 10)


def test_resize_antialiases():
    # A 1-pixel checkerboard shrunk 8x must come out flat grey; nearest-neighbour sampling
    # would keep black and white pixels.
    board = ((np.indices((512, 512)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.repeat(board[..., None], 3, axis=2)
    crop = crop_square(image, (0, 0, 512, 512), margin=0, shift_up=0, size=64)
    assert abs(crop.mean() - 127.5) < 2 and crop.std() < 3


def test_center_crop_and_mtcnn_crop_for_celeba(astronaut):
    crop = crop_center(astronaut, 178, 64)
    expected = Image.fromarray(astronaut).crop((167, 167, 345, 345)).resize((64, 64), Image.Resampling.LANCZOS)
    assert np.array_equal(crop, np.asarray(expected))
    mtcnn = make_detector("mtcnn", device="cpu")
    blank = np.full((512, 512, 3), 255, np.uint8)
    face, fallback = crop_best_faces([astronaut, blank], mtcnn, margin=0.2, shift_up=0, size=32,
                                     fallback_side=178)
    assert face.shape == (32, 32, 3) and np.array_equal(fallback, crop_center(blank, 178, 32))
    assert not np.array_equal(face, crop_center(astronaut, 178, 32))
    assert crop_best_faces([blank], mtcnn, margin=0.2, shift_up=0, size=32) == [None]
