"""Real detectors on real images: the shared anime tiles and scikit-image's astronaut photo."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipeline.faces.detectors import (CASCADE_SHA256, CombinedDetector, Detection, iou,
                                      make_detector, resolve_cascade)
from pipeline.faces.detector_eval import faces_eval

from .conftest import ANIME_DEV, CASCADE

# The astronaut's face (Eileen Collins), in scikit-image's 512 x 512 photo.
ASTRONAUT_FACE_CENTRE = (224, 117)


def found_by_count(results, face_counts):
    return sum(min(len(found), n) for found, n in zip(results, face_counts.values()))


def test_cascade_finds_most_anime_faces(cascade_detector, dev_images, face_counts):
    results = cascade_detector.detect(list(dev_images.values()))
    assert len(results) == len(dev_images)
    assert found_by_count(results, face_counts) >= 10  # of 13
    assert len(results[list(dev_images).index("tile05.jpg")]) == 2  # the tile with two faces
    for found in results:
        for d in found:
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512
            assert d.score > 0 and d.detector == "anime_cascade"


@pytest.fixture(scope="module")
def animeface_results(dev_images):
    return make_detector("animeface").detect(list(dev_images.values()))


def test_animeface_engine_works_with_current_pillow(animeface_results, face_counts):
    # animeface's C extension reads Pillow's private image struct; with Pillow >= 11 it would
    # silently see an empty image and find nothing. Our adapter must find the faces.
    results = animeface_results
    assert found_by_count(results, face_counts) >= 10
    for found in results:
        for d in found:
            x0, y0, x1, y1 = d.box
            assert x1 - x0 == pytest.approx(y1 - y0)  # the engine's boxes are square
            assert 0 < d.score <= 1


def test_mtcnn_finds_the_photographed_face_and_anime_detectors_do_not(astronaut):
    mtcnn = make_detector("mtcnn", device="cpu")
    (found,) = mtcnn.detect([astronaut])
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    assert x0 < ASTRONAUT_FACE_CENTRE[0] < x1 and y0 < ASTRONAUT_FACE_CENTRE[1] < y1
    assert 60 < x1 - x0 < 150 and found[0].score > 0.99
    assert make_detector("anime_cascade", cascade_path=CASCADE).detect([astronaut]) == [[]]
    assert make_detector("animeface").detect([astronaut]) == [[]]


def test_mtcnn_batches_mixed_sizes_like_single_images(astronaut, dev_images):
    mtcnn = make_detector("mtcnn", device="cpu", batch_size=2)
    small = astronaut[::2, ::2].copy()
    images = [astronaut, dev_images["tile08.jpg"], small, astronaut]
    batched = mtcnn.detect(images)
    single = [mtcnn.detect([image])[0] for image in images]
    assert [len(f) for f in batched] == [len(f) for f in single]
    for got, want in zip(batched, single):
        for a, b in zip(got, want):
            assert np.allclose(a.box, b.box, atol=1.0)
    assert len(batched[2]) == 1 and batched[2][0].box[2] < 256  # found in the half-size photo


def test_mtcnn_misses_most_anime_faces_the_reason_for_anime_detectors():
    cascade = faces_eval(ANIME_DEV, "anime_cascade", params=_params())
    mtcnn = faces_eval(ANIME_DEV, "mtcnn", params=_params())
    assert mtcnn["faces"] == cascade["faces"] == 13
    assert mtcnn["recall"] < 0.5 < cascade["recall"]


def _params(**update):
    from pipeline.config import AnimeFacesParams

    return AnimeFacesParams(cascade_path=str(CASCADE), device="cpu", **update)


def test_combined_keeps_union_and_drops_repeats(dev_images, face_counts, cascade_detector, animeface_results):
    combined = make_detector("combined", cascade_path=CASCADE, combined=("anime_cascade", "animeface"))
    images = list(dev_images.values())
    union, a, b = combined.detect(images), cascade_detector.detect(images), animeface_results
    assert found_by_count(union, face_counts) > max(found_by_count(a, face_counts), found_by_count(b, face_counts))
    for found in union:  # no face twice
        for i, d in enumerate(found):
            assert all(iou(d.box, other.box) <= 0.3 for other in found[:i])


class FixedDetector:
    """A stand-in member with known boxes, to check the merge rule itself."""

    def __init__(self, name, boxes):
        self.name, self.boxes = name, boxes

    def detect(self, images):
        return [[Detection(box, 1.0, self.name) for box in self.boxes] for _ in images]


def test_combined_prefers_earlier_members():
    first = FixedDetector("a", [(0, 0, 100, 100)])
    second = FixedDetector("b", [(5, 5, 105, 105), (300, 300, 400, 400)])
    (found,) = CombinedDetector([first, second], iou_threshold=0.3).detect([np.zeros((8, 8, 3), np.uint8)])
    assert [(d.detector, d.box) for d in found] == [("a", (0, 0, 100, 100)), ("b", (300, 300, 400, 400))]


def test_detector_rejects_non_rgb(cascade_detector):
    with pytest.raises(ValueError, match="RGB uint8"):
        cascade_detector.detect([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("yolo")


def test_cascade_local_path_and_errors(tmp_path):
    assert resolve_cascade(CASCADE) == CASCADE
    with pytest.raises(FileNotFoundError, match="anime.faces.cascade_path"):
        resolve_cascade(tmp_path / "nope.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<opencv_storage></opencv_storage>")
    with pytest.raises(ValueError, match="not an OpenCV cascade"):
        make_detector("anime_cascade", cascade_path=bad)


def test_cascade_download_is_pinned_and_cached(tmp_path):
    # The real download code, pointed at a file:// URL (urllib serves it like http).
    assert hashlib.sha256(CASCADE.read_bytes()).hexdigest() == CASCADE_SHA256
    cache = tmp_path / "cache"
    path = resolve_cascade("download", cache_dir=cache, url=CASCADE.as_uri())
    assert path == cache / "lbpcascade_animeface.xml" and path.read_bytes() == CASCADE.read_bytes()
    # Cached: a second call does not fetch (the URL is now unreachable).
    assert resolve_cascade("download", cache_dir=cache, url=(tmp_path / "gone.xml").as_uri()) == path
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(CASCADE.read_bytes() + b"\n")
    with pytest.raises(RuntimeError, match="does not match the pinned"):
        resolve_cascade("download", cache_dir=tmp_path / "other", url=tampered.as_uri())
    # Nothing is left behind: no cascade, and no temporary file of the failed download (the
    # hand-written copy before torch's downloader kept none on a bad hash, but had no fsync and
    # left its temporary file when the write itself failed).
    assert list((tmp_path / "other").iterdir()) == []


def test_the_cache_follows_xdg_cache_home(tmp_path, monkeypatch):
    from pipeline.config import user_cache_dir
    from pipeline.evaluate.feature_memo import memo_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DCGAN_FEATURE_MEMO", raising=False)
    assert user_cache_dir() == tmp_path / "xdg" / "dcgan-pipeline"
    assert memo_dir() == tmp_path / "xdg" / "dcgan-pipeline" / "features"  # both caches, one place
    path = resolve_cascade("download", url=CASCADE.as_uri())
    assert path == tmp_path / "xdg" / "dcgan-pipeline" / "lbpcascade_animeface.xml"


def test_faces_eval_reports_counts_and_speed():
    result = faces_eval(ANIME_DEV, "anime_cascade", params=_params())
    assert result["images"] == 12 and result["faces"] == 13
    assert result["found"] >= 10 and result["recall"] == result["found"] / 13
    assert result["extra_per_image"] >= 0 and result["images_per_s"] > 0
    assert result["per_image"]["tile05.jpg"]["faces"] == 2


def test_faces_eval_ignores_boxes_below_min_face_size():
    result = faces_eval(ANIME_DEV, "anime_cascade", params=_params(), min_face_size=1000)
    assert result["found"] == 0 and result["recall"] == 0
    assert any(row["box_sides"] for row in result["per_image"].values())  # seen, not counted
