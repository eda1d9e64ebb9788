"""The crop stage's memory: a refresh detects only new pages, and writes the very bytes a crop
from scratch writes, for any number of workers."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from pipeline.config import AnimeFacesParams
from pipeline.faces.crop import crop_anime_faces
from pipeline.faces.detection_cache import CACHE_FILE

from .conftest import ANIME_DEV, CASCADE, jpeg_bytes

FIRST = [f"tile{i:02d}.jpg" for i in range(8)]
LATER = [f"tile{i:02d}.jpg" for i in range(8, 12)]


def params(**update) -> AnimeFacesParams:
    values = dict(detector="anime_cascade", cascade_path=str(CASCADE), device="cpu", workers=2, batch_size=2)
    values.update(update)
    return AnimeFacesParams(**values)


def files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def add_pages(raw, names, first_id):
    for offset, name in enumerate(names):
        raw.add_tile(name, post_id=first_id + offset, tags=["1girl", "blonde_hair"])
    return raw.write()


def grey_page(raw, post_id):
    grey = np.asarray(Image.open(ANIME_DEV / "tile07.jpg").convert("L").convert("RGB"))
    raw.add_bytes(jpeg_bytes(grey), post_id=post_id)


def test_refresh_detects_only_new_pages_and_writes_what_a_crop_from_scratch_writes(raw_folder, tmp_path):
    memory = tmp_path / "memory"
    grey_page(raw_folder, 100)
    raw = add_pages(raw_folder, FIRST, 1)
    first = crop_anime_faces(params(), raw, tmp_path / "first", cache_dir=memory, progress=False)
    # 8 colour pages detected; the grey one is dropped before detection.
    assert first["detection"]["detected"] == 8 and first["detection"]["from_memory"] == 0
    assert first["pages"]["monochrome"] == 1

    raw = add_pages(raw_folder, LATER, 9)  # the refresh: 4 new posts
    refresh = crop_anime_faces(params(), raw, tmp_path / "refresh", cache_dir=memory, progress=False)
    assert refresh["detection"]["detected"] == 4 and refresh["detection"]["from_memory"] == 8
    assert json.loads((memory / "last_run.json").read_text())["detection"] == refresh["detection"]

    scratch = crop_anime_faces(params(), raw, tmp_path / "scratch", cache_dir=tmp_path / "fresh", progress=False)
    assert scratch["detection"]["detected"] == 12
    one_worker = crop_anime_faces(params(workers=1), raw, tmp_path / "one", progress=False)
    assert files(tmp_path / "refresh") == files(tmp_path / "scratch") == files(tmp_path / "one")
    assert refresh["faces"]["kept"] >= 10

    # The old pages' faces really come from memory: a box moved there moves in the output.
    cache = json.loads((memory / CACHE_FILE).read_text())
    (entry,) = cache["detections"].values()
    sha = next(iter(sorted(s for s, found in entry["pages"].items() if found)))
    entry["pages"][sha][0][:4] = [v + 7.0 for v in entry["pages"][sha][0][:4]]
    (memory / CACHE_FILE).write_text(json.dumps(cache))
    again = crop_anime_faces(params(), raw, tmp_path / "again", cache_dir=memory, progress=False)
    assert again["detection"]["detected"] == 0
    rows = [json.loads(line) for line in (tmp_path / "again" / "faces.jsonl").read_text().splitlines()]
    scratch_rows = [json.loads(line) for line in (tmp_path / "scratch" / "faces.jsonl").read_text().splitlines()]
    moved = [(a["box"], b["box"]) for a, b in zip(rows, scratch_rows) if a["source_sha256"] == sha]
    assert moved and all(np.allclose(np.array(a) - np.array(b), 7.0, atol=0.11) for a, b in moved[:1])


def test_a_detector_setting_invalidates_detections_and_a_crop_setting_does_not(raw_folder, tmp_path):
    memory = tmp_path / "memory"
    grey_page(raw_folder, 100)
    raw = add_pages(raw_folder, FIRST[:5], 1)
    assert crop_anime_faces(params(), raw, tmp_path / "a", cache_dir=memory, progress=False)["detection"]["detected"] == 5

    def detected(**update) -> dict:
        return crop_anime_faces(params(**update), raw, tmp_path / "b", cache_dir=memory, progress=False)["detection"]

    # Applied after detection: everything from memory, and no page even decoded for margin's
    # sake when its faces are dropped anyway.
    for update in ({"margin": 0.5}, {"min_face_size": 60}, {"min_score": 1.0}, {"image_size": 32}, {"workers": 1}):
        assert detected(**update)["detected"] == 0, update
    assert detected(min_face_size=10_000)["decoded"] == 0
    # The grey page was never detected: keeping grey pages detects it, and only it.
    assert detected(drop_grayscale=False)["detected"] == 1
    # What the detector sees or is: every page again, under its own key (the old one stays).
    assert detected(detect_max_side=400)["detected"] == 5
    assert detected(detector="combined", combined=["anime_cascade"])["detected"] == 5
    assert detected()["detected"] == 0  # back to the first setting: still remembered
    # A crop from memory under changed crop settings equals one from scratch.
    crop_anime_faces(params(margin=0.5), raw, tmp_path / "memo", cache_dir=memory, progress=False)
    crop_anime_faces(params(margin=0.5), raw, tmp_path / "scratch", progress=False)
    assert files(tmp_path / "memo") == files(tmp_path / "scratch")


def test_a_damaged_memory_file_means_detecting_again_not_failing(raw_folder, tmp_path):
    memory = tmp_path / "memory"
    raw = add_pages(raw_folder, FIRST[:3], 1)
    crop_anime_faces(params(), raw, tmp_path / "a", cache_dir=memory, progress=False)
    (memory / CACHE_FILE).write_text('{"format": 1, "pages": {')
    summary = crop_anime_faces(params(), raw, tmp_path / "b", cache_dir=memory, progress=False)
    assert summary["detection"]["detected"] == 3
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert not [p for p in memory.iterdir() if p.name.startswith(".")]  # no temporary files left
