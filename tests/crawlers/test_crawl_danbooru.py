"""Danbooru: `b<id>` paging, hidden posts, and robots.txt that forbids the JSON API."""

from __future__ import annotations

import json

from crawl_helpers import check_manifest_integrity, run_crawl
from mock_board import MockBoard, make_post

ROBOTS = "User-agent: *\nDisallow: /posts.json\nDisallow: /posts/\n"


def test_pages_by_lowest_id_past_a_hidden_window(tmp_path, out_dir):
    posts = [make_post(i, rating="general") for i in range(1, 31)]
    posts.append(make_post(31, rating="sensitive"))  # Danbooru's "s" is not safe
    for post in posts[15:20]:  # ids 16..20: a whole page hidden from anonymous users
        post.hidden = True
    with MockBoard("danbooru", posts) as board:
        result, summary = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        cursors = [e["cursor"] for e in board.requests("page")]
        assert cursors[0] == "" and all(c.startswith("b") for c in cursors[1:])
        # b21 comes back empty, is asked again twice (it could be a hiccup), then b16 probes past it.
        assert cursors[1:6] == ["b26", "b21", "b21", "b21", "b16"]
        entries = check_manifest_integrity(out_dir)
        assert sorted(e["post_id"] for e in entries) == [*range(1, 16), *range(21, 31)]
        assert summary["stop_reason"] == "end"
        # The hidden window is a stretch this walk did not see: recorded, so the listing is not complete.
        state = next(iter(json.loads((out_dir / "crawl_state.json").read_text()).values()))
        assert [(g["below"], g["above"]) for g in state["gaps"]] == [(15, 21)] and not state["complete"]

        # The refresh may not stop at its 3 known posts before it passed the gap; it finds the
        # same window empty again, so nothing is there: the gap closes, the listing is complete.
        before = len(board.log)
        result, second = run_crawl(tmp_path, board, out_dir)
        cursors = [e["cursor"] for e in board.log[before:] if e["kind"] == "page"]
        assert cursors[:6] == ["", "b26", "b21", "b21", "b21", "b16"] and second["stop_reason"] == "known"
        state = next(iter(json.loads((out_dir / "crawl_state.json").read_text()).values()))
        assert state["gaps"] == [] and state["complete"]

        # And the refresh after that costs one page.
        before = len(board.log)
        result, third = run_crawl(tmp_path, board, out_dir)
        assert [e["cursor"] for e in board.log[before:] if e["kind"] == "page"] == [""]
        assert third["stop_reason"] == "known" and third["new"] == 0


def test_robots_txt_disallow_stops_with_a_clear_message(tmp_path, out_dir):
    with MockBoard("danbooru", [make_post(i) for i in range(1, 6)], robots=ROBOTS) as board:
        result, summary = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 1
        assert "robots.txt" in result.stderr and "obey_robots: false" in result.stderr
        assert board.requests("page") == [] and board.image_requests() == []
        assert summary["stop_reason"] == "robots" and summary["new"] == 0

        # Turned off knowingly, the same board is crawled.
        result, summary = run_crawl(tmp_path, board, out_dir, obey_robots=False)
        assert result.returncode == 0, result.stderr[-3000:]
    assert len(check_manifest_integrity(out_dir)) == 5
