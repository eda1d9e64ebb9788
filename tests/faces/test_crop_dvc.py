"""The real `dvc repro crop_anime_faces` on a crawl of the mock board serving the anime-dev tiles,
then a refresh: new posts on the board, `dvc repro -f crawl_anime`, and a crop that detects only
the new pages."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageOps

from tests.dvc_helpers import CRAWL_ANIME_STAGE, run

from pipeline.datasets import read_dataset

from .conftest import ANIME_DEV, CASCADE, ROOT

sys.path.insert(0, str(ROOT / "tests" / "crawlers"))  # the crawler tests' mock board
from mock_board import MockBoard, MockPost  # noqa: E402

DVC_YAML = "stages:\n" + CRAWL_ANIME_STAGE + """\
  crop_anime_faces:
    cmd: python -m pipeline crop-faces
    deps: [data/raw/anime]
    params: [anime.faces]
    outs:
      - data/datasets/anime
      - data/cache/anime-faces:
          persist: true
"""
HAIR = ["blonde_hair", "brown_hair", "pink_hair", "black_hair"]


def mirrored(tile: Path) -> bytes:
    buffer = io.BytesIO()
    ImageOps.mirror(Image.open(tile).convert("RGB")).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.mark.slow
def test_dvc_repro_crawls_and_crops_the_anime_dataset_and_a_refresh_detects_only_new_pages(tmp_path):
    tiles = sorted(ANIME_DEV.glob("tile*.jpg"))
    posts = [MockPost(i + 1, tile.read_bytes(), 512, 512, tags=["1girl", "solo", HAIR[i % 4]], ext="jpg")
             for i, tile in enumerate(tiles)]
    # The refresh's new posts: the same illustrations mirrored (other bytes, other faces' boxes).
    later = [MockPost(100 + i, mirrored(tile), 512, 512, tags=["1girl", "solo", HAIR[i % 4]], ext="jpg")
             for i, tile in enumerate(tiles[:6])]
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = [str(Path(sys.executable).parent / "dvc")]
    with MockBoard("gelbooru", posts) as board:
        params = {"runs": {}, "anime": {
            "crawl": {"site": "gelbooru", "base_url": board.base_url, "tags": "1girl",
                      "page_size": 5, "download_delay": 0, "user_agent": "dcgan-pipeline-tests/0"},
            "faces": {"cascade_path": str(CASCADE), "device": "cpu"}}}
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        (repo / "dvc.yaml").write_text(DVC_YAML)
        run(["git", "init", "-q"], repo)
        run([*dvc, "init", "-q"], repo)
        run([*dvc, "repro", "crop_anime_faces"], repo)

        dataset = read_dataset(repo / "data" / "datasets" / "anime")
        # 12 tiles, 13 faces; the default detector finds 12 of them (README).
        assert 11 <= len(dataset) <= 13 and dataset.images.shape[1:] == (64, 64, 3)
        assert dataset.meta["pages"]["listed"] == 12 and dataset.meta["detector"] == "combined"
        assert set(dataset.labels.tolist()) <= {0, 1, 3, 7} and (dataset.labels >= 0).all()
        assert (dataset.split == 2).any() and (dataset.split == 0).any()
        rows = [json.loads(line) for line in (dataset.path / "faces.jsonl").read_text().splitlines()]
        assert sum(row["kept"] for row in rows) == len(dataset)
        assert (dataset.path / "contact_sheet.png").is_file()
        assert "data/datasets/anime" in (repo / "dvc.lock").read_text()
        assert "up to date" in run([*dvc, "status", "crop_anime_faces"], repo).stdout
        assert "data/cache/anime-faces" in (repo / "dvc.lock").read_text()
        memory = repo / "data" / "cache" / "anime-faces"
        first = json.loads((memory / "last_run.json").read_text())["detection"]
        assert first["detected"] == 12 and first["from_memory"] == 0

        board.add(later)
        run([*dvc, "repro", "-f", "crawl_anime"], repo)  # the documented refresh
        run([*dvc, "repro", "crop_anime_faces"], repo)
        refresh = json.loads((memory / "last_run.json").read_text())
        assert refresh["detection"]["detected"] == 6 and refresh["detection"]["from_memory"] == 12
        assert refresh["pages"]["listed"] == 18
        assert "up to date" in run([*dvc, "status", "crop_anime_faces"], repo).stdout
        refreshed = read_dataset(repo / "data" / "datasets" / "anime")
        assert len(refreshed) > 12
        # Byte for byte what a crop from scratch (no memory) writes.
        run([sys.executable, "-m", "pipeline", "crop-faces", "--out", str(tmp_path / "scratch"),
             "--cache", str(tmp_path / "no-memory")], repo)
        for name in ("images.npy", "faces.jsonl", "meta.json", "tags.json", "contact_sheet.png"):
            assert (tmp_path / "scratch" / name).read_bytes() == (refreshed.path / name).read_bytes(), name
