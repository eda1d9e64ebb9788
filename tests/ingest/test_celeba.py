"""ingest_celeba on small fake CelebAs with real JPEG files, in every layout it accepts."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ingest.celeba_fixture import ATTRIBUTES, HEIGHT, WIDTH, jpeg_bytes, make_celeba, synthetic_face
from pipeline.config import CelebaParams
from pipeline.datasets import SPLITS, read_dataset
from pipeline.ingest import celeba
from pipeline.ingest.celeba import CelebaError, center_crop_resize, ingest_celeba

COUNT = 24


def ingest(source: Path, out: Path, **params) -> Path:
    return ingest_celeba(CelebaParams(source=str(source), **{"workers": 1, **params}), out)


def arrays(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = read_dataset(path)  # verifies every array against meta.json's sha256
    return np.array(data.images), np.array(data.split), np.array(data.attrs)


def expected_annotations(root: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, 0/1 attributes and partition, read independently from the Kaggle CSVs."""
    attr = np.loadtxt(root / "list_attr_celeba.csv", delimiter=",", skiprows=1, dtype=str)
    part = np.loadtxt(root / "list_eval_partition.csv", delimiter=",", skiprows=1, dtype=str)
    return list(attr[:, 0]), (attr[:, 1:].astype(int) == 1).astype(np.int8), part[:, 1].astype(np.uint8)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """The same 24 images (seed 0) in all five layouts."""
    base = tmp_path_factory.mktemp("celeba")
    return {layout: make_celeba(base / layout, layout, count=COUNT)
            for layout in ("torchvision", "torchvision-zip", "kaggle-zip", "kaggle-folder", "kaggle-archive")}


@pytest.fixture(scope="module")
def reference(layouts, tmp_path_factory) -> Path:
    return ingest(layouts["torchvision"], tmp_path_factory.mktemp("out") / "celeba")


def test_every_layout_gives_the_same_dataset(layouts, reference, tmp_path):
    images, split, attrs = arrays(reference)
    assert images.shape == (COUNT, 64, 64, 3) and images.dtype == np.uint8
    names, want_attrs, want_split = expected_annotations(layouts["kaggle-zip"].parent)
    np.testing.assert_array_equal(attrs, want_attrs)
    np.testing.assert_array_equal(split, want_split)
    meta = json.loads((reference / "meta.json").read_text())
    assert meta["attr_names"] == list(ATTRIBUTES) and meta["count"] == COUNT and meta["skipped"] == {}
    assert meta["layout"] == "torchvision folder"
    # Row i is image i: decode two files by hand and compare.
    folder = layouts["torchvision"] / "img_align_celeba"
    for row in (0, COUNT - 1):
        with Image.open(folder / names[row]) as image:
            np.testing.assert_array_equal(images[row], center_crop_resize(image, 178, 64))
    for layout, source in layouts.items():
        if layout == "torchvision":
            continue
        out = ingest(source, tmp_path / layout)
        other = arrays(out)
        for got, want in zip(other, (images, split, attrs)):
            np.testing.assert_array_equal(got, want, err_msg=layout)
        assert json.loads((out / "meta.json").read_text())["layout"].startswith(layout.split("-")[0])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_process_pool_gives_the_same_rows_as_one_process(layouts, reference, tmp_path, monkeypatch, context):
    # Small chunks, so several tasks run in two workers and must come back in order.
    monkeypatch.setattr(celeba, "CHUNK", 5)
    params = CelebaParams(source=str(layouts["kaggle-zip"]), workers=2)
    out = ingest_celeba(params, tmp_path / "celeba", mp_context=context)
    for got, want in zip(arrays(out), arrays(reference)):
        np.testing.assert_array_equal(got, want)


def test_rows_follow_file_names_not_annotation_order(layouts, reference, tmp_path):
    root = tmp_path / "shuffled"
    make_celeba(root, "torchvision", count=COUNT)
    for name, header in (("list_attr_celeba.txt", 2), ("list_eval_partition.txt", 0)):
        lines = (root / name).read_text().splitlines()
        body = lines[header:]
        np.random.default_rng(1).shuffle(body)
        (root / name).write_text("\n".join(lines[:header] + body) + "\n")
    for got, want in zip(arrays(ingest(root, tmp_path / "out")), arrays(reference)):
        np.testing.assert_array_equal(got, want)


def test_official_partition_is_respected(tmp_path):
    partition = np.random.default_rng(3).integers(0, 3, COUNT)  # interleaved, not contiguous
    source = make_celeba(tmp_path / "src", "kaggle-zip", count=COUNT, partition=partition)
    data = read_dataset(ingest(source, tmp_path / "out"))
    np.testing.assert_array_equal(data.split, partition)  # CelebA's 0/1/2 are SPLITS' ids
    assert SPLITS == {"train": 0, "valid": 1, "test": 2}
    assert data.meta["counts"] == {s: int((partition == i).sum()) for s, i in SPLITS.items()}
    np.testing.assert_array_equal(data.indices("valid"), np.flatnonzero(partition == 1))


def test_limit_keeps_the_first_images_of_every_split(layouts, reference, tmp_path):
    data = read_dataset(ingest(layouts["kaggle-folder"], tmp_path / "out", limit=2))
    full = read_dataset(reference)
    keep = np.concatenate([full.indices(s)[:2] for s in SPLITS])
    keep.sort()
    assert data.meta["counts"] == {"train": 2, "valid": 2, "test": 2}
    np.testing.assert_array_equal(data.images, full.images[keep])
    np.testing.assert_array_equal(data.attrs, full.attrs[keep])


@pytest.mark.parametrize("layout", ["kaggle-zip", "torchvision"])
def test_corrupt_jpegs_are_skipped_and_counted(layout, reference, tmp_path, capsys):
    bad = (4, 17)  # 000005.jpg: garbage bytes; 000018.jpg: a JPEG cut in half
    source = make_celeba(tmp_path / "src", layout, count=COUNT, corrupt=bad)
    out = ingest(source, tmp_path / "out")
    images, split, attrs = arrays(out)
    keep = np.setdiff1d(np.arange(COUNT), bad)
    want = arrays(reference)
    assert len(images) == COUNT - len(bad)
    for got, full in zip((images, split, attrs), want):
        np.testing.assert_array_equal(got, full[keep])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["skipped"] == {"corrupt": {"count": 2, "first": ["000005.jpg", "000018.jpg"]}}
    assert meta["count"] == COUNT - 2 and meta["listed"] == COUNT
    assert "skipped 2 of 24 images" in capsys.readouterr().err


def test_all_layouts_agree_with_corrupt_files_too(tmp_path):
    results = [arrays(ingest(make_celeba(tmp_path / layout, layout, count=12, corrupt=(2, 3)),
                             tmp_path / f"out-{layout}"))
               for layout in ("torchvision", "kaggle-archive")]
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("missing", ["list_eval_partition.txt", "list_attr_celeba.txt"])
def test_a_missing_annotation_file_is_named(missing, tmp_path):
    source = make_celeba(tmp_path / "src", "torchvision", count=4)
    (source / missing).unlink()
    stem = missing.removesuffix(".txt")
    with pytest.raises(CelebaError, match=rf"{stem}\.txt \(torchvision layout\) or {stem}\.csv"):
        ingest(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_images_are_an_error_naming_the_first(tmp_path):
    source = make_celeba(tmp_path / "src", "kaggle-folder", count=6)
    (source / "img_align_celeba" / "img_align_celeba" / "000004.jpg").unlink()
    with pytest.raises(CelebaError, match=r"1 images listed .* missing \(first: 000004\.jpg\)"):
        ingest(source, tmp_path / "out")


def test_missing_source_and_no_images(tmp_path):
    with pytest.raises(CelebaError, match=r"celeba\.source: .*nowhere does not exist"):
        ingest(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CelebaError, match=r"neither img_align_celeba/ .* nor img_align_celeba\.zip"):
        ingest(tmp_path / "empty", tmp_path / "out")


def _edit_line(path: Path, number: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("file", "line", "edit", "message"),
    [
        ("list_attr_celeba.txt", 5, lambda s: s.rsplit(" ", 1)[0], r"list_attr_celeba\.txt: line 5: expected a file name and 40 attribute values, got 39"),
        ("list_attr_celeba.txt", 4, lambda s: s[:-2] + " 0", r"list_attr_celeba\.txt: line 4: attribute value '0' is not 1 or -1"),
        ("list_attr_celeba.txt", 1, lambda s: "7", r"list_attr_celeba\.txt: line 1 says 7 images, the file lists 6"),
        ("list_eval_partition.txt", 2, lambda s: s[:-1] + "3", r"list_eval_partition\.txt: line 2: expected '<file> <0\|1\|2>'"),
        ("list_attr_celeba.csv", 3, lambda s: s + ",1", r"list_attr_celeba\.csv: line 3: .* got 41"),
        ("list_eval_partition.csv", 1, lambda s: "id,split", r"list_eval_partition\.csv: line 1: expected the header"),
    ],
)
def test_a_malformed_annotation_line_is_named(file, line, edit, message, tmp_path):
    layout = "kaggle-folder" if file.endswith(".csv") else "torchvision"
    source = make_celeba(tmp_path / "src", layout, count=6)
    _edit_line(source / file, line, edit)
    with pytest.raises(CelebaError, match=message):
        ingest(source, tmp_path / "out")


def test_annotation_files_must_list_the_same_images(tmp_path):
    source = make_celeba(tmp_path / "src", "torchvision", count=6)
    _edit_line(source / "list_eval_partition.txt", 6, lambda s: "000099.jpg 2")
    with pytest.raises(CelebaError, match=r"list different images: 2 appear in only one of them"):
        ingest(source, tmp_path / "out")


def test_probe_attributes_are_evaluates_and_an_unknown_one_names_the_param(layouts, tmp_path):
    """The ingest keeps every attribute and does not read celeba.probe_attributes (so changing
    them never re-ingests); the probe checks them against what the dataset holds."""
    from pipeline.config import Params
    from pipeline.evaluate.probe import probe_tasks

    out = ingest(layouts["torchvision"], tmp_path / "out", probe_attributes=["Male", "Handsome"])
    params = Params(runs={}, celeba=CelebaParams(probe_attributes=["Male", "Handsome"]))
    with pytest.raises(ValueError, match=r"celeba\.probe_attributes: 'Handsome' is not an attribute of"):
        probe_tasks(read_dataset(out), params)
    (name, labels), = probe_tasks(read_dataset(out), Params(runs={}, celeba=CelebaParams(probe_attributes=["Male"])))
    assert name == "Male" and set(np.unique(labels)) <= {0, 1}


def test_failed_download_says_what_to_do_instead(tmp_path, monkeypatch):
    import torchvision.datasets

    # The outside world (Google Drive) is unreachable in tests: stand in its usual refusal.
    def over_quota(*args, **kwargs):
        raise RuntimeError("Too many users have viewed or downloaded this file recently")

    monkeypatch.setattr(torchvision.datasets, "CelebA", over_quota)
    with pytest.raises(CelebaError) as error:
        ingest_celeba(CelebaParams(source="download"), tmp_path / "out", download_root=tmp_path / "raw")
    message = str(error.value)
    assert "Too many users" in message and "img_align_celeba.zip" in message
    assert "list_attr_celeba.csv" in message and "set celeba.source" in message


# --------------------------------------------------------------------------- the crop itself


def _jpeg(image: np.ndarray) -> Image.Image:
    return Image.open(io.BytesIO(jpeg_bytes(image)))


@pytest.mark.parametrize("crop", [178, 140, 101])
@pytest.mark.parametrize("texture", [2.0, 12.0])
def test_draft_decoding_barely_changes_the_crop(crop, texture):
    rng = np.random.default_rng(7)
    for _ in range(4):
        face = synthetic_face(rng, texture=texture)
        fast = center_crop_resize(_jpeg(face), crop, 64).astype(int)
        full = center_crop_resize(_jpeg(face), crop, 64, draft=False).astype(int)
        assert fast.shape == full.shape == (64, 64, 3)
        # DCT-domain downscaling only replaces part of the resize filter.
        assert np.abs(fast - full).mean() < 1.5, (crop, texture)


@pytest.mark.parametrize("crop", [178, 170])  # offsets divisible by the draft scale 2
def test_draft_crop_is_exact(crop):
    """Bands just outside the crop must not leak in; a half-pixel shift would show them."""
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    left, top = round((WIDTH - crop) / 2), round((HEIGHT - crop) / 2)
    image[:top, :] = image[top + crop:, :] = (255, 0, 0)
    image[:, :left] = image[:, left + crop:] = (0, 0, 255)
    # A 2-pixel frame just inside the crop, to see that the crop does not cut into it either.
    inner = image[top:top + crop, left:left + crop]
    inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = 0, 0, 0, 0
    # Quality 100 without chroma subsampling, so JPEG's own colour bleed stays out of the picture.
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=100, subsampling=0)
    for draft in (True, False):
        out = center_crop_resize(Image.open(io.BytesIO(buffer.getvalue())), crop, 64, draft=draft).astype(int)
        middle = out[8:-8, 8:-8]
        assert np.abs(middle - 128).max() < 12  # the inside is untouched
        edge = np.concatenate([out[0], out[-1], out[:, 0], out[:, -1]])
        # The edge pixels mix the dark frame with grey only: no red or blue from outside.
        assert edge.mean() < 100, (draft, edge.mean())
        assert np.abs(edge[:, 0] - edge[:, 2]).max() < 20, (draft, "colour leaked from outside the crop")


def test_too_small_images_are_skipped_and_counted(tmp_path):
    source = make_celeba(tmp_path / "src", "kaggle-zip", count=6)
    # Replace one member with a 120 x 150 image: smaller than the 178 px crop.
    small = jpeg_bytes(synthetic_face(np.random.default_rng(0))[:150, :120].copy())
    with zipfile.ZipFile(source) as old:
        members = {m: old.read(m) for m in old.namelist()}
    members["img_align_celeba/000002.jpg"] = small
    with zipfile.ZipFile(source, "w") as new:
        for name, data in members.items():
            new.writestr(name, data)
    meta = read_dataset(ingest(source, tmp_path / "out")).meta
    assert meta["skipped"] == {"too_small": {"count": 1, "first": ["000002.jpg"]}}
    assert meta["count"] == 5


# --------------------------------------------------------------------------- crop: mtcnn


def _photo(name: str, box: tuple[int, int, int, int]) -> np.ndarray:
    """A region of one of scikit-image's bundled photographs, resized to 178 x 218."""
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).crop(box)
    return np.asarray(image.resize((WIDTH, HEIGHT), Image.Resampling.LANCZOS))


def test_mtcnn_crops_around_the_face_and_falls_back_to_the_centre(tmp_path, capsys):
    from pipeline.faces.images import crop_square
    from pipeline.faces.detectors import make_detector

    # A real face (the astronaut) left of centre and its mirror image; two images with no face.
    face = _photo("astronaut", (150, 10, 350, 255))
    photos = [face, np.ascontiguousarray(face[:, ::-1]), _photo("coffee", (100, 50, 378, 390)),
              synthetic_face(np.random.default_rng(0), texture=12.0)]
    source = make_celeba(tmp_path / "src", "kaggle-zip", images=photos, partition=np.array([0, 0, 1, 2]))
    params = dict(crop="mtcnn", mtcnn_device="cpu", mtcnn_margin=0.3, mtcnn_shift_up=0.05)
    data = read_dataset(ingest(source, tmp_path / "out", **params))
    assert len(data) == 4 and data.meta["skipped"] == {}
    assert data.meta["crop"]["mtcnn_no_face"] == {"count": 2, "first": ["000003.jpg", "000004.jpg"]}
    assert "MTCNN found no face in 2 of 4 images" in capsys.readouterr().err
    detector = make_detector("mtcnn", device="cpu")
    with zipfile.ZipFile(source) as archive:
        for row in range(4):
            with Image.open(io.BytesIO(archive.read(f"img_align_celeba/00000{row + 1}.jpg"))) as image:
                decoded = np.asarray(image.convert("RGB"))
            centre = center_crop_resize(Image.fromarray(decoded), 178, 64, draft=False).astype(int)
            got = data.images[row].astype(int)
            if row >= 2:  # no face: exactly the centre crop
                np.testing.assert_array_equal(got, centre)
                continue
            # A face: the square around MTCNN's box with the params' margin and shift...
            box = detector.detect([decoded])[0][0].box
            want = crop_square(decoded, box, 0.3, 0.05, 64).astype(int)
            assert np.abs(got - want).mean() < 2  # (batched vs single MTCNN may move a box a hair)
            # ...a tighter frame than the centre crop.
            assert np.abs(got - centre).mean() > 20
