"""The crop_anime_faces stage end to end, on raw crawl folders built from the real tiles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.config import AnimeFacesParams
from pipeline.datasets import SPLITS, read_dataset
from pipeline.__main__ import main as cli_main
from pipeline.faces.crop import crop_anime_faces
from pipeline.faces.hygiene import HAIR_COLOURS
from pipeline.faces.images import cut_window

from .conftest import ANIME_DEV, CASCADE, jpeg_bytes, load_tile


def params(**update) -> AnimeFacesParams:
    # The cascade alone keeps these tests quick; the default detector runs in its own test.
    values = dict(detector="anime_cascade", cascade_path=str(CASCADE), device="cpu", batch_size=4)
    values.update(update)
    return AnimeFacesParams(**values)


def colour_gradient(height: int, width: int) -> np.ndarray:
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    return np.stack([ramp, np.full_like(ramp, 120), 255 - ramp], axis=2).astype(np.uint8)


def faces_by_source(out):
    rows = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source_sha256"], []).append(row)
    return rows, by_source


@pytest.fixture
def messy_crawl(raw_folder):
    """Six real pages plus every kind of trouble a crawl brings."""
    raw = raw_folder
    shas = {
        "blonde": raw.add_tile("tile01.jpg", tags="1girl blonde_hair long_hair", post_id=1),
        "two": raw.add_tile("tile05.jpg", tags=["2girls", "red_hair"], post_id=2),
        "pink": raw.add_tile("tile06.jpg", tags=["1girl", "pink_hair", "blue_hair"], post_id=3),
        "plain": raw.add_tile("tile09.jpg", tags=[], post_id=4),
    }
    # The same picture re-uploaded later: re-encoded and resized, so another sha256.
    reupload = Image.open(ANIME_DEV / "tile01.jpg").resize((480, 480), Image.Resampling.LANCZOS)
    shas["reupload"] = raw.add_bytes(jpeg_bytes(np.asarray(reupload), 80), post_id=50)
    # The same file listed by a second post.
    raw.add_tile("tile09.jpg", post_id=51)
    # A truncated download, stored under the sha256 of its full bytes.
    full = (ANIME_DEV / "tile10.jpg").read_bytes()
    shas["truncated"] = raw.add_bytes(full, post_id=52, store=False)
    (raw.path / "images" / f"{shas['truncated']}.jpg").write_bytes(full[: len(full) // 2])
    # Bytes that are no image at all, under their own (matching) sha256.
    shas["garbage"] = raw.add_bytes(b"<html>not an image</html>", ext="png", post_id=53)
    # A grey page with a face on it.
    grey = np.asarray(Image.open(ANIME_DEV / "tile07.jpg").convert("L").convert("RGB"))
    shas["grey"] = raw.add_bytes(jpeg_bytes(grey), post_id=54)
    # A colourful page without any face (a flat single-colour one would count as monochrome).
    shas["empty"] = raw.add_bytes(jpeg_bytes(colour_gradient(300, 400)), post_id=55)
    # A post whose image never arrived.
    shas["missing"] = raw.add_bytes(b"lost", post_id=56, store=False)
    raw.write()
    return raw.path, shas


def test_stage_builds_a_clean_dataset(messy_crawl, tmp_path):
    raw, shas = messy_crawl
    out = tmp_path / "anime"
    summary = crop_anime_faces(params(), raw, out, progress=False)

    dataset = read_dataset(out)
    rows, by_source = faces_by_source(out)
    kept = [row for row in rows if row["kept"]]
    # blonde 1 + two faces on tile05 + pink 1 + plain 1; the re-upload is a near duplicate.
    assert len(dataset) == len(kept) == 5
    assert dataset.images.shape == (5, 64, 64, 3) and dataset.images.dtype == np.uint8
    assert [row["index"] for row in kept] == list(range(5))
    assert [row["reason"] for row in by_source[shas["reupload"]]] == ["near_duplicate"]
    assert len(by_source[shas["two"]]) == 2
    for name in ("truncated", "garbage", "grey", "empty", "missing"):
        assert shas[name] not in by_source  # no face rows: skipped, or nothing found
    assert summary["pages"] == {"listed": 11, "corrupt": 2, "duplicate_source": 1, "missing": 1,
                                "monochrome": 1, "no_face_kept": 2, "with_face": 4}
    assert summary["faces"] == {"found": 6, "kept": 5, "near_duplicate": 1}
    assert dataset.meta["pages"] == summary["pages"]

    # Every row carries the provenance a person needs to trace a crop back.
    for row in rows:
        assert set(row) >= {"source_sha256", "post_id", "box", "score", "detector", "kept", "reason"}
        assert row["detector"] == "anime_cascade"

    # Labels: one hair colour or -1; tags carried over per crop.
    tags = json.loads((out / "tags.json").read_text())
    labels = dataset.labels.tolist()
    assert len(tags) == 5 and dataset.meta["label_names"] == list(HAIR_COLOURS)
    by_index = {row["index"]: row["source_sha256"] for row in kept}
    expected = {shas["blonde"]: HAIR_COLOURS.index("blonde_hair"), shas["two"]: HAIR_COLOURS.index("red_hair"),
                shas["pink"]: -1, shas["plain"]: -1}
    assert labels == [expected[by_index[i]] for i in range(5)]
    assert tags[0] == ["1girl", "blonde_hair", "long_hair"]

    # A held-out test split, by source image (both faces of one page on the same side).
    splits = dataset.split.tolist()
    assert SPLITS["test"] in splits and SPLITS["train"] in splits
    two = [i for i in range(5) if by_index[i] == shas["two"]]
    assert splits[two[0]] == splits[two[1]]

    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.format == "PNG" and sheet.size == (3 * 66 + 2, 2 * 66 + 2)  # 5 crops, 3 per row

    # Each crop is the face region of its page (not some other part of it).
    first = kept[0]
    page = load_tile("tile01.jpg")
    assert np.array_equal(dataset.images[0], cut_window(page, first["window"], 64))


def test_stage_is_deterministic(messy_crawl, tmp_path):
    raw, _ = messy_crawl
    outputs = []
    for name in ("a", "b"):
        crop_anime_faces(params(), raw, tmp_path / name, progress=False)
        outputs.append({path.name: path.read_bytes() for path in sorted((tmp_path / name).iterdir())})
    assert outputs[0].keys() == outputs[1].keys() >= {"images.npy", "faces.jsonl", "meta.json", "contact_sheet.png"}
    assert outputs[0] == outputs[1]


def test_crop_rules(raw_folder, tmp_path):
    raw_folder.add_tile("tile05.jpg", post_id=1)
    raw_folder.add_tile("tile10.jpg", post_id=2)
    raw = raw_folder.write()
    out = tmp_path / "out"

    crop_anime_faces(params(max_faces_per_image=1, min_face_size=110, image_size=32), raw, out, progress=False)
    rows, _ = faces_by_source(out)
    reasons = sorted(str(row["reason"]) for row in rows)
    # tile05: boxes of 117 and 101 px: the 101 px one is too small; tile10: one 312 px face.
    assert reasons == ["None", "None", "too_small"]
    assert read_dataset(out).images.shape == (2, 32, 32, 3)

    crop_anime_faces(params(max_faces_per_image=1), raw, out, progress=False)
    reasons = sorted(str(row["reason"]) for row in faces_by_source(out)[0])
    assert reasons == ["None", "None", "too_many"]

    crop_anime_faces(params(min_score=3.0), raw, out, progress=False)  # tile10's cascade weight is ~2.5
    reasons = sorted(str(row["reason"]) for row in faces_by_source(out)[0])
    assert reasons == ["None", "None", "low_score"]

    # tile10's face with a wide margin reaches far outside the page: mostly padding.
    crop_anime_faces(params(margin=1.0, max_padding=0.3), raw, out, progress=False)
    rows = faces_by_source(out)[0]
    assert [row["reason"] for row in rows if row["padding"] > 0.3] == ["padding"] * sum(row["padding"] > 0.3 for row in rows)
    assert any(row["reason"] == "padding" for row in rows)


def test_no_faces_gives_an_empty_dataset_not_a_crash(raw_folder, tmp_path):
    raw_folder.add_bytes(jpeg_bytes(colour_gradient(256, 256)), post_id=1)
    out = tmp_path / "out"
    summary = crop_anime_faces(params(), raw_folder.write(), out, progress=False)
    assert summary["faces"] == {"found": 0} and summary["pages"]["no_face_kept"] == 1
    assert len(read_dataset(out)) == 0 and (out / "faces.jsonl").read_text() == ""


def test_bad_manifest_names_the_line(raw_folder, tmp_path):
    raw_folder.add_tile("tile01.jpg")
    raw = raw_folder.write()
    with open(raw / "manifest.jsonl", "a") as handle:
        handle.write('{"post_id": 7}\n')
    with pytest.raises(ValueError, match=r"manifest.jsonl:2: .*sha256"):
        crop_anime_faces(params(), raw, tmp_path / "out", progress=False)
    # A line cut short by a killed crawl (no newline) is ignored, not an error.
    (raw / "manifest.jsonl").write_text((raw / "manifest.jsonl").read_text().splitlines()[0] + '\n{"site": "mo')
    assert crop_anime_faces(params(), raw, tmp_path / "out", progress=False)["pages"]["listed"] == 1
    with pytest.raises(FileNotFoundError, match="crawl_anime"):
        crop_anime_faces(params(), tmp_path / "nowhere", tmp_path / "out", progress=False)


def test_default_detector_via_cli(raw_folder, tmp_path, capsys):
    raw_folder.add_tile("tile04.jpg", post_id=1)  # the cascade misses this face; AnimeFace finds it
    raw_folder.add_tile("tile08.jpg", post_id=2)  # AnimeFace misses this one; the cascade finds it
    raw = raw_folder.write()
    params_file = tmp_path / "params.yaml"
    params_file.write_text(
        "runs: {}\nanime:\n  faces:\n"
        f"    cascade_path: {CASCADE}\n    device: cpu\n"
    )
    out = tmp_path / "anime"
    assert cli_main(["--params", str(params_file), "crop-faces", "--raw", str(raw), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["faces"]["kept"] == 2
    rows, _ = faces_by_source(out)
    assert sorted(row["detector"] for row in rows) == ["combined:anime_cascade", "combined:animeface"]
