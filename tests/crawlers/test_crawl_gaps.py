"""Nothing lost: a listing page that a board answers empty for a while (under load) is asked
again, and what stays unseen is walked again by the next run, for every API family.

Each board lists 17 posts, 5 a page: 17..13 | 12..8 | 7..3 | 2..1 (short, the last page).
The store after the hiccup (and its refresh) must be exactly the store of a crawl without it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from crawl_helpers import REPO, check_manifest_integrity, crawl_command, run_crawl
from mock_board import MockBoard, make_post

SITES = ("gelbooru", "moebooru", "danbooru")
# The cursor of each page of the listing above, as each API names it.
CURSORS = {
    "gelbooru": {"first": "0", "middle": "1", "last": "3"},
    "moebooru": {"first": "1", "middle": "2", "last": "4"},
    "danbooru": {"first": "", "middle": "b13", "last": "b3"},
}
# 1 + EMPTY_PAGE_RETRIES empty answers: more than one crawl's retries can heal.
OUTLASTS_RETRIES = 3


def board_for(site: str, **kwargs) -> MockBoard:
    return MockBoard(site, [make_post(i, rating="safe" if site == "moebooru" else "general") for i in range(1, 18)],
                     **kwargs)


def store(out) -> set[tuple]:
    """What a crawl leaves: every listed post (id, bytes, file) and every file in images/."""
    entries = check_manifest_integrity(out) if (out / "manifest.jsonl").exists() else []
    files = {path.name for path in (out / "images").iterdir()} if (out / "images").exists() else set()
    return {(e["post_id"], e["sha256"], e["path"]) for e in entries} | {("file", name) for name in files}


def state(out) -> dict:
    return next(iter(json.loads((out / "crawl_state.json").read_text()).values()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, set[tuple]]:
    """Each family's store from a crawl without any hiccup."""
    stores = {}
    for site in SITES:
        tmp = tmp_path_factory.mktemp(f"reference-{site}")
        with board_for(site) as board:
            result, summary = run_crawl(tmp, board, tmp / "out")
        assert result.returncode == 0, result.stderr[-3000:]
        assert summary["new"] == 17 and summary.get("gaps", 0) == 0
        stores[site] = store(tmp / "out")
    return stores


@pytest.mark.parametrize("site", SITES)
def test_pages_empty_once_are_asked_again_within_the_crawl(tmp_path, out_dir, reference, site):
    with board_for(site) as board:
        for cursor in CURSORS[site].values():  # the first, a middle and the last page, once each
            board.empty_for(cursor, 1)
        result, summary = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        hiccups = [e for e in board.requests("page") if e["hiccup"]]
    assert len(hiccups) == 3 and summary["sources"][0]["empty_page_retries"] == 3
    assert store(out_dir) == reference[site]
    assert state(out_dir)["complete"] and state(out_dir)["gaps"] == []


@pytest.mark.parametrize("position", ("first", "middle", "last"))
@pytest.mark.parametrize("site", SITES)
def test_a_page_empty_for_the_whole_crawl_is_a_gap_the_refresh_closes(tmp_path, out_dir, reference, site, position):
    with board_for(site) as board:
        board.empty_for(CURSORS[site][position], OUTLASTS_RETRIES)
        result, first = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        # The old spider said "stopped: end", marked the listing complete, and every refresh
        # after it stopped at its known posts above the hole.
        assert store(out_dir) < reference[site], "the hiccup should have cost this crawl posts"
        assert first["stop_reason"] == "end" and first["gaps"] >= 1 and "not seen" in result.stdout
        recorded = state(out_dir)
        assert recorded["walked"] and not recorded["complete"] and recorded["gaps"]
        assert (CURSORS[site][position] or "top") in recorded["gaps"][0]["cursors"]

        result, refresh = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
    assert refresh["early_stop_enabled"]  # a refresh, not a full re-walk by default
    assert refresh["new"] == len(reference[site]) // 2 - first["new"]  # // 2: a post and its file
    assert store(out_dir) == reference[site]
    assert state(out_dir)["complete"] and state(out_dir)["gaps"] == []


def test_kill_9_after_the_hiccup_then_a_refresh_loses_nothing(tmp_path, out_dir, reference):
    # Slow images keep the crawl running after it gave up on the empty page, so the kill lands
    # between the hiccup and the end of the run that saw it: its gap was never written.
    with board_for("gelbooru", image_delay=0.3) as board:
        board.empty_for(CURSORS["gelbooru"]["middle"], OUTLASTS_RETRIES)
        process = subprocess.Popen(crawl_command(tmp_path, board, out_dir), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def past_the_hiccup() -> bool:  # the page below the empty one was asked for
            return any(e.get("cursor") == "2" for e in board.requests("page"))

        deadline = time.monotonic() + 60
        while not past_the_hiccup() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the crawl ended before it could be killed"
        assert not state(out_dir)["walked"]  # the killed run's marker: the next run walks it all

        result, refresh = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
    assert refresh["early_stop_enabled"] is False
    assert store(out_dir) == reference["gelbooru"]
    assert state(out_dir)["complete"]
