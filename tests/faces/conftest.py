"""Shared fixtures: the real anime-dev tiles and cascade from ../shared, and raw crawl folders."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
ANIME_DEV = SHARED / "data" / "anime-dev"
CASCADE = SHARED / "models" / "lbpcascade_animeface.xml"


def load_tile(name: str) -> np.ndarray:
    return np.asarray(Image.open(ANIME_DEV / name).convert("RGB"))


@pytest.fixture(scope="session")
def face_counts() -> dict[str, int]:
    counts = json.loads((ANIME_DEV / "faces.json").read_text())
    return {name: n for name, n in counts.items() if not name.startswith("_")}


@pytest.fixture(scope="session")
def dev_images(face_counts) -> dict[str, np.ndarray]:
    return {name: load_tile(name) for name in face_counts}


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage.data import astronaut as load  # bundled with scikit-image, no download

    return load()


@pytest.fixture(scope="session")
def cascade_detector():
    from pipeline.faces.detectors import make_detector

    return make_detector("anime_cascade", cascade_path=CASCADE)


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class RawFolder:
    """A crawl folder as the crawler writes it: images/<sha256>.<ext> and manifest.jsonl."""

    def __init__(self, path: Path):
        self.path = path
        (path / "images").mkdir(parents=True, exist_ok=True)
        self.entries: list[dict] = []
        self.next_id = 1000

    def add_bytes(self, data: bytes, *, ext: str = "jpg", tags=("1girl",), name_sha: str | None = None,
                  post_id: int | None = None, store: bool = True) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if store:
            (self.path / "images" / f"{name_sha or sha}.{ext}").write_bytes(data)
        post_id = self.next_id if post_id is None else post_id
        self.next_id += 1
        self.entries.append({
            "site": "mock", "post_id": post_id, "md5": hashlib.md5(data).hexdigest(),
            "sha256": name_sha or sha, "tags": tags if isinstance(tags, str) else list(tags),
            "rating": "s", "width": 512, "height": 512, "source_url": f"http://127.0.0.1/{post_id}",
            "fetched_at": "2024-01-01T00:00:00Z",
        })
        return name_sha or sha

    def add_tile(self, name: str, **kwargs) -> str:
        return self.add_bytes((ANIME_DEV / name).read_bytes(), **kwargs)

    def write(self) -> Path:
        with open(self.path / "manifest.jsonl", "w") as handle:
            for entry in self.entries:
                handle.write(json.dumps(entry) + "\n")
        return self.path


@pytest.fixture
def raw_folder(tmp_path) -> RawFolder:
    return RawFolder(tmp_path / "raw")
