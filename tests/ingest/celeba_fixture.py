"""A small fake CelebA in any of the layouts ingest_celeba accepts, built from real JPEG files.

    source = make_celeba(tmp_path, "kaggle-zip", count=30)   # -> the path to set as celeba.source
    ingest_celeba(CelebaParams(source=str(source)), out)

Images are synthetic 178x218 "faces" (a skin-toned ellipse with eyes, mouth and hair over a
1/f-noise background, the spectrum natural photographs have) saved as JPEG quality 95 like the
aligned CelebA images, at about the real mean file size (the official img_align_celeba.zip is
1.44 GB for 202,599 images, ~7 KB each), so their decoding cost is realistic. The annotation files
follow the real formats byte for byte: torchvision's `list_attr_celeba.txt` (count line, names
line, `<file>` and 40 right-aligned 1/-1 values) and Kaggle's CSVs (`image_id,...`).
The lead's end-to-end smoke run reuses this module; bench/ingest_celeba_speed.py too.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
from PIL import Image

WIDTH, HEIGHT, QUALITY = 178, 218, 95  # aligned CelebA
ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
Layout = Literal["torchvision", "torchvision-zip", "kaggle-zip", "kaggle-folder", "kaggle-archive"]
LAYOUTS: tuple[str, ...] = ("torchvision", "torchvision-zip", "kaggle-zip", "kaggle-folder", "kaggle-archive")

_BANK_SIZE = 48
_bank: np.ndarray | None = None


def _noise_bank() -> np.ndarray:
    """Unit-variance noise fields twice the image size with a 1/f^1.5 amplitude spectrum (a bit
    smoother than whole photographs, like close-up faces). Built once, then each image takes
    random windows, so generating 200,000 of them stays cheap."""
    global _bank
    if _bank is None:
        rng = np.random.default_rng(12345)
        h, w = 2 * HEIGHT, 2 * WIDTH
        freq = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
        freq[0, 0] = 1.0
        shape = (_BANK_SIZE, *freq.shape)
        spectrum = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / freq**1.5
        spectrum[:, 0, 0] = 0
        bank = np.fft.irfft2(spectrum, s=(h, w)).astype(np.float32)
        _bank = bank / bank.std(axis=(1, 2), keepdims=True)
    return _bank


def _noise(rng: np.random.Generator) -> np.ndarray:
    bank = _noise_bank()
    y, x = rng.integers(0, HEIGHT), rng.integers(0, WIDTH)
    field = bank[rng.integers(0, len(bank)), y:y + HEIGHT, x:x + WIDTH]
    return field[::-1] if rng.random() < 0.5 else field


def _paint_ellipse(image: np.ndarray, cx: float, cy: float, rx: float, ry: float,
                   color: np.ndarray, detail: np.ndarray) -> None:
    """Blend a soft-edged ellipse of `color` (+ `detail` texture) into `image`, in place."""
    x0, x1 = max(int(cx - rx) - 2, 0), min(int(cx + rx) + 3, WIDTH)
    y0, y1 = max(int(cy - ry) - 2, 0), min(int(cy + ry) + 3, HEIGHT)
    yy, xx = np.ogrid[y0:y1, x0:x1]
    r = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2, dtype=np.float32)
    mask = np.clip((1 - r) * (min(rx, ry) / 1.5), 0, 1)[..., None]
    region = image[y0:y1, x0:x1]
    region += mask * (color + detail[y0:y1, x0:x1, None] - region)


def synthetic_face(rng: np.random.Generator, texture: float = 2.0) -> np.ndarray:
    """One 218 x 178 RGB uint8 image that looks vaguely like an aligned CelebA face.

    `texture` scales the noise; the default gives ~7.5 KB at quality 95, the real mean.
    """
    tint = rng.uniform(0.6, 1.4, 3).astype(np.float32)
    image = rng.uniform(40, 220, 3).astype(np.float32) + texture * (
        2.0 * _noise(rng)[..., None] * tint + 0.5 * np.stack([_noise(rng) for _ in range(3)], -1))
    detail = texture * 0.6 * _noise(rng)
    cx, cy = WIDTH / 2 + rng.normal(0, 4), 120 + rng.normal(0, 5)
    hair = rng.uniform(10, 200) * np.array([1.0, 0.8, 0.6], np.float32)
    skin = np.array([rng.uniform(150, 240), rng.uniform(110, 190), rng.uniform(90, 160)], np.float32)
    dark = np.array([40, 30, 30], np.float32)
    _paint_ellipse(image, cx, cy - 25, 62 + rng.normal(0, 4), 70 + rng.normal(0, 4), hair, detail)
    _paint_ellipse(image, cx, cy, 44 + rng.normal(0, 3), 58 + rng.normal(0, 3), skin, detail)
    _paint_ellipse(image, cx - 19, cy - 12, 8, 4, dark, detail)
    _paint_ellipse(image, cx + 19, cy - 12, 8, 4, dark, detail)
    _paint_ellipse(image, cx, cy + 28, 16 + rng.normal(0, 2), 5 + abs(rng.normal(0, 2)),
                   np.array([150, 60, 60], np.float32), detail)
    return np.clip(image, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, quality: int = QUALITY) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def file_name(index: int) -> str:
    return f"{index + 1:06d}.jpg"  # 000001.jpg, like CelebA


def default_partition(count: int) -> np.ndarray:
    """CelebA's shape: the first ~80% train, then ~10% valid, the rest test (0/1/2)."""
    cut_train, cut_valid = round(count * 0.8), round(count * 0.9)
    return np.array([0 if i < cut_train else 1 if i < cut_valid else 2 for i in range(count)], np.int64)


def attr_txt(names: list[str], attrs: np.ndarray) -> str:
    """list_attr_celeba.txt in the official format (values right-aligned in 2 columns)."""
    lines = [str(len(names)), " ".join(ATTRIBUTES) + " "]
    lines += [name + " " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, attrs)]
    return "\r\n".join(lines) + "\r\n"


def partition_txt(names: list[str], partition: np.ndarray) -> str:
    return "".join(f"{name} {p}\n" for name, p in zip(names, partition))


def _csv(header: list[str], rows: Iterable[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def attr_csv(names: list[str], attrs: np.ndarray) -> str:
    return _csv(["image_id", *ATTRIBUTES], ([n, *map(int, row)] for n, row in zip(names, attrs)))


def partition_csv(names: list[str], partition: np.ndarray) -> str:
    return _csv(["image_id", "partition"], ([n, int(p)] for n, p in zip(names, partition)))


def make_celeba(root: Path, layout: Layout, *, count: int = 24, seed: int = 0,
                corrupt: Iterable[int] = (), partition: np.ndarray | None = None,
                images: list[np.ndarray] | None = None) -> Path:
    """Write a fake CelebA of `count` images under `root`; returns the path for celeba.source.

    The same `seed` gives the same images, attributes and partition in every layout. `corrupt`
    lists image indices whose file is damaged: even ones are garbage bytes, odd ones a JPEG cut
    in half (truncated downloads are the usual kind). `images` (RGB uint8) replaces the
    synthetic faces, e.g. with real photographs for MTCNN; `count` is then their number.
    """
    if images is not None:
        count = len(images)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    rng = np.random.default_rng(seed)
    names = [file_name(i) for i in range(count)]
    attrs = rng.choice(np.array([-1, 1]), size=(count, len(ATTRIBUTES)))
    partition = default_partition(count) if partition is None else np.asarray(partition)
    files: dict[str, bytes] = {}
    for i, name in enumerate(names):
        data = jpeg_bytes(synthetic_face(rng) if images is None else images[i])
        if i in set(corrupt):
            data = b"this is not a JPEG file at all" * 10 if i % 2 == 0 else data[: len(data) // 2]
        files[name] = data

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    kaggle = layout.startswith("kaggle")
    annotations = {
        "list_attr_celeba.csv" if kaggle else "list_attr_celeba.txt":
            (attr_csv if kaggle else attr_txt)(names, attrs),
        "list_eval_partition.csv" if kaggle else "list_eval_partition.txt":
            (partition_csv if kaggle else partition_txt)(names, partition),
    }
    if layout == "kaggle-archive":
        # The archive Kaggle serves: everything in one zip, the images nested twice.
        archive = root / "archive.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for name, text in annotations.items():
                out.writestr(name, text)
            for name, data in files.items():
                out.writestr(f"img_align_celeba/img_align_celeba/{name}", data)
        return archive
    for name, text in annotations.items():
        (root / name).write_text(text, newline="")
    if layout in ("torchvision-zip", "kaggle-zip"):
        archive = root / "img_align_celeba.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for name, data in files.items():
                out.writestr(f"img_align_celeba/{name}", data)
        return archive if layout == "kaggle-zip" else root
    folder = root / "img_align_celeba"
    if layout == "kaggle-folder":
        folder = folder / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return root
