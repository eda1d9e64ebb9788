"""The real `dvc repro crawl_anime` in a throwaway DVC repo, against the mock board."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tests.dvc_helpers import CRAWL_ANIME_STAGE, run

from crawl_helpers import USER_AGENT, check_manifest_integrity
from mock_board import MockBoard, make_post

DVC_YAML = "stages:\n" + CRAWL_ANIME_STAGE


@pytest.mark.slow
def test_dvc_repro_builds_the_raw_set_and_a_forced_rerun_adds_only_new_posts(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = [str(Path(sys.executable).parent / "dvc")]
    with MockBoard("gelbooru", [make_post(i) for i in range(1, 13)]) as board:
        params = {"runs": {}, "anime": {"crawl": {
            "site": "gelbooru", "base_url": board.base_url, "tags": "1girl", "min_width": 48,
            "min_height": 48, "page_size": 5, "download_delay": 0, "stop_after_known": 3,
            "user_agent": USER_AGENT}}}
        (repo / "params.yaml").write_text(yaml.safe_dump(params))
        (repo / "dvc.yaml").write_text(DVC_YAML)
        run(["git", "init", "-q"], repo)
        run([*dvc, "init", "-q"], repo)

        run([*dvc, "repro", "crawl_anime"], repo)
        out = repo / "data" / "raw" / "anime"
        assert sorted(e["post_id"] for e in check_manifest_integrity(out)) == list(range(1, 13))
        assert "data/raw/anime" in (repo / "dvc.lock").read_text()

        # Nothing changed for DVC: a plain repro skips the stage without asking the board.
        before = len(board.log)
        run([*dvc, "repro", "crawl_anime"], repo)
        assert len(board.log) == before

        board.add([make_post(i) for i in range(13, 17)])
        before = len(board.log)
        run([*dvc, "repro", "-f", "crawl_anime"], repo)  # the documented refresh command
        fetched = sorted(e["post_id"] for e in board.log[before:] if e["kind"] == "image")
    assert fetched == [13, 14, 15, 16]
    assert sorted(e["post_id"] for e in check_manifest_integrity(out)) == list(range(1, 17))
    assert "up to date" in run([*dvc, "status", "crawl_anime"], repo).stdout
