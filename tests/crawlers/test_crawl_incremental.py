"""Refresh, kill-and-resume and cross-site duplicates: the manifest is the crawl's memory."""

from __future__ import annotations

import signal
import subprocess
import time

from crawl_helpers import REPO, check_manifest_integrity, crawl_command, run_crawl
from mock_board import MockBoard, make_post


def test_refresh_fetches_only_new_posts_and_stops_early(tmp_path, out_dir):
    # 21 posts, 5 a page: the last page (1) is short, which proves the listing's end.
    with MockBoard("moebooru", [make_post(i, rating="safe") for i in range(1, 22)]) as board:
        result, first = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        assert first["new"] == 21 and first["stop_reason"] == "end" and first["gaps"] == 0
        assert all("rating:s" in e["tags"].split() for e in board.requests("page"))

        board.add([make_post(i, rating="safe") for i in range(22, 29)])
        before = len(board.log)
        result, second = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        run2 = board.log[before:]
        assert sorted(e["post_id"] for e in run2 if e["kind"] == "image") == list(range(22, 29))
        # Page 1 is 28..24, page 2 is 23..19: 23 and 22 are new, then 21, 20, 19 are known.
        assert [e["cursor"] for e in run2 if e["kind"] == "page"] == ["1", "2"]
        assert second["new"] == 7 and second["skipped"]["known"] == 3 and second["stop_reason"] == "known"

        before = len(board.log)
        result, third = run_crawl(tmp_path, board, out_dir)
        assert third["new"] == 0 and third["stop_reason"] == "known"
        assert [e["kind"] for e in board.log[before:]] == ["robots", "page"]  # a clean refresh costs one page
    entries = check_manifest_integrity(out_dir)
    assert sorted(e["post_id"] for e in entries) == list(range(1, 29))


def test_filtered_posts_do_not_break_the_run_of_known_posts(tmp_path, out_dir):
    # 19, 18 and 17 are explicit (the board ignores the rating in the query): never stored.
    posts = [make_post(i, rating="explicit" if i in (17, 18, 19) else "safe") for i in range(1, 21)]
    posts.append(make_post(0, rating="safe"))  # 21 posts: a short last page proves the end
    with MockBoard("moebooru", posts, honor_rating_query=False) as board:
        result, first = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0 and first["new"] == 18 and first["gaps"] == 0
        before = len(board.log)
        result, second = run_crawl(tmp_path, board, out_dir)
        # Page 1 is 20..16, page 2 is 15..11. 20 known, 19-17 filtered, 16 and 15 known: three
        # known in a row, so it stops at 15 (counting from zero again after 17 would go to 14).
        assert second["new"] == 0 and second["stop_reason"] == "known"
        assert second["skipped"]["known"] == 3 and second["skipped"]["rating"] == 3
        assert [e["cursor"] for e in board.log[before:] if e["kind"] == "page"] == ["1", "2"]


def test_kill_9_mid_crawl_then_resume_loses_nothing_and_duplicates_nothing(tmp_path, out_dir):
    posts = [make_post(i, width=96, height=96, fmt="JPEG" if i % 2 else "PNG") for i in range(1, 41)]
    with MockBoard("gelbooru", posts, image_delay=0.03) as board:
        process = subprocess.Popen(crawl_command(tmp_path, board, out_dir), cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        listed = out_dir / "manifest.jsonl"

        def mid_crawl() -> bool:  # a dozen images out and at least one post recorded
            return board.images_served >= 12 and listed.exists() and listed.stat().st_size > 0

        while not mid_crawl() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL, "the crawl ended before it could be killed"

        survivors = check_manifest_integrity(out_dir)  # every listed image is whole
        assert 0 < len(survivors) < 40
        known = {e["post_id"] for e in survivors}
        before = len(board.log)

        result, summary = run_crawl(tmp_path, board, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        refetched = {e["post_id"] for e in board.log[before:] if e["kind"] == "image"}
    assert not refetched & known, "posts already in the manifest were downloaded again"
    assert summary["early_stop_enabled"] is False  # the killed run was not clean
    entries = check_manifest_integrity(out_dir)
    assert sorted(e["post_id"] for e in entries) == list(range(1, 41))
    assert summary["new"] == 40 - len(known) and summary["skipped"]["known"] == len(known)
    assert not list((out_dir / "images").glob(".*.tmp"))


def test_exact_duplicates_across_sites_are_not_fetched_twice(tmp_path, out_dir):
    gel_posts = [make_post(i) for i in range(1, 6)]
    with MockBoard("gelbooru", gel_posts) as gel:
        result, _ = run_crawl(tmp_path, gel, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
    moe_posts = [make_post(i, rating="safe") for i in range(101, 105)]
    repost = make_post(105, rating="safe")
    repost.data = gel_posts[2].data  # post 3's exact bytes, re-uploaded on another board
    with MockBoard("moebooru", [*moe_posts, repost]) as moe:
        result, summary = run_crawl(tmp_path, moe, out_dir)
        assert result.returncode == 0, result.stderr[-3000:]
        assert 105 not in {e["post_id"] for e in moe.image_requests()}
    assert summary["new"] == 4 and summary["skipped"]["known"] == 1
    entries = check_manifest_integrity(out_dir)
    assert len(entries) == 9 and len(list((out_dir / "images").iterdir())) == 9
    assert {e["site"] for e in entries} == {f"127.0.0.1:{gel.port}", f"127.0.0.1:{moe.port}"}
