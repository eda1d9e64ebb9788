"""Several boards in one crawl: one store, one politeness slot per host, each image once; and
posts checked against max_pixels / max_file_size before any download."""

from __future__ import annotations

import json
import socket
from itertools import pairwise

from crawl_helpers import check_manifest_integrity, run_crawl, sent, source
from mock_board import MockBoard, make_post

DELAY = 0.3


def gaps(times: list[float]) -> list[float]:
    times = sorted(times)
    return [b - a for a, b in pairwise(times)]


def test_two_boards_on_two_hosts_fill_one_store_each_at_the_polite_rate(tmp_path, out_dir):
    shared = make_post(7)  # the same picture (same bytes, same md5) posted on both boards
    gel_posts = [make_post(i) for i in range(1, 7)] + [shared]
    moe_posts = [make_post(i, rating="safe") for i in range(101, 107)]
    repost = make_post(107, rating="safe")
    repost.data = shared.data
    with MockBoard("gelbooru", gel_posts) as gel, MockBoard("moebooru", [*moe_posts, repost]) as moe:
        # Two host names for the two servers: 127.0.0.1 and localhost.
        moe_url = f"http://localhost:{moe.port}"
        sources = [source(gel), source(moe, moe_url)]
        log = tmp_path / "sent.log"  # gaps where the crawler sends (send_times.py), not where the board serves
        result, summary = run_crawl(tmp_path, sources, out_dir, send_log=log, download_delay=DELAY)
        assert result.returncode == 0, result.stderr[-3000:]
        gel_times = [t for t, _ in sent(log, gel.port)]
        moe_times = [t for t, _ in sent(log, moe.port)]
        assert len(gel_times) == len([e for e in gel.requests() if e["kind"] != "robots"])
        fetched_shared = len(gel.image_requests(7)) + len(moe.image_requests(107))

    entries = check_manifest_integrity(out_dir)
    assert len(entries) == 13  # 7 + 7 posts, the shared image stored once
    assert fetched_shared == 1 and summary["new"] == 13
    assert {e["site"] for e in entries} == {f"127.0.0.1:{gel.port}", f"localhost:{moe.port}"}
    assert [s["stop_reason"] for s in summary["sources"]] == ["end", "end"]
    assert sum(s["new"] for s in summary["sources"]) == 13
    # Each host is asked at most once per DELAY ...
    assert min(gaps(gel_times)) >= DELAY * 0.9 and min(gaps(moe_times)) >= DELAY * 0.9
    # ... and the two hosts are crawled at the same time, not one after the other: their
    # request spans overlap, and merged they are closer together than DELAY.
    assert max(gel_times[0], moe_times[0]) < min(gel_times[-1], moe_times[-1])
    assert min(gaps(gel_times + moe_times)) < DELAY * 0.9


def test_two_sources_on_one_host_share_its_politeness_slot(tmp_path, out_dir):
    # Two listings of one board (other tags) and a second board on the same host name.
    posts = [make_post(i, tags=["1girl", "solo"] if i % 2 else ["1girl", "smile"]) for i in range(1, 9)]
    with MockBoard("gelbooru", posts) as board, MockBoard("gelbooru", [make_post(i) for i in range(50, 54)]) as other:
        sources = [source(board, tags="1girl solo"), source(board, tags="1girl smile"), source(other)]
        log = tmp_path / "sent.log"
        result, summary = run_crawl(tmp_path, sources, out_dir, send_log=log, download_delay=DELAY)
        assert result.returncode == 0, result.stderr[-3000:]
        times = [t for t, _ in sent(log)]  # both servers: one host name, 127.0.0.1
    assert len(check_manifest_integrity(out_dir)) == 12
    assert [s["new"] for s in summary["sources"]] == [4, 4, 4]
    # One host, one slot: every request to 127.0.0.1 (any port, any source) DELAY apart.
    assert min(gaps(times)) >= DELAY * 0.9


def test_declared_pixels_and_file_size_are_checked_before_download(tmp_path, out_dir):
    posts = [make_post(i, rating="safe") for i in range(1, 6)]
    posts.append(make_post(6, rating="safe"))
    posts[-1].width = posts[-1].height = 30_000  # the API declares a 900-Mpx picture
    posts.append(make_post(7, rating="safe", noise=True, width=200, height=200))  # ~120 kB on disk
    with MockBoard("moebooru", posts) as board:
        result, summary = run_crawl(tmp_path, board, out_dir, max_pixels=50_000_000, max_file_size=60_000)
        assert result.returncode == 0, result.stderr[-3000:]
        requested = {e["post_id"] for e in board.image_requests()}
    assert requested == {1, 2, 3, 4, 5}  # neither 6 nor 7 was fetched
    assert summary["skipped"]["too_many_pixels"] == 1 and summary["skipped"]["too_large"] == 1
    assert "too_many_pixels 1" in result.stdout
    # API-side filters are not remembered as rejected: other limits may accept them later.
    assert not (out_dir / "rejected.jsonl").read_text()


def test_a_run_stopped_by_max_posts_is_continued_below_its_known_posts(tmp_path, out_dir):
    # 21 posts, 5 a page: the short last page proves the listing's end.
    with MockBoard("moebooru", [make_post(i, rating="safe") for i in range(1, 22)]) as board:
        result, first = run_crawl(tmp_path, board, out_dir, max_posts=6)
        assert first["new"] == 6 and first["stop_reason"] == "max_posts"
        state = json.loads((out_dir / "crawl_state.json").read_text())
        assert [entry["complete"] for entry in state.values()] == [False]
        # Growing the set: the next run walks past the 6 known posts (3 in a row would stop a
        # refresh of a complete listing) down to the 15 it never reached.
        result, second = run_crawl(tmp_path, board, out_dir, max_posts=100)
        assert result.returncode == 0, result.stderr[-3000:]
        assert second["early_stop_enabled"] is False and second["stop_reason"] == "end"
        assert second["new"] == 15 and second["skipped"]["known"] == 6
        # Now complete: a refresh stops at the known posts again.
        result, third = run_crawl(tmp_path, board, out_dir, max_posts=100)
        assert third["early_stop_enabled"] is True and third["stop_reason"] == "known"
    assert sorted(e["post_id"] for e in check_manifest_integrity(out_dir)) == list(range(1, 22))


def test_an_unreachable_host_is_one_line_on_the_console_and_details_in_the_log(tmp_path, out_dir):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with MockBoard("moebooru", [make_post(i, rating="safe") for i in range(1, 4)]) as board:
        # Two listings on the dead host (one error line for both), and a board that works.
        down = {"site": "gelbooru", "base_url": f"http://127.0.0.1:{dead}", "page_size": 5}
        sources = [{**down, "tags": "1girl"}, {**down, "tags": "1girl smile"}, source(board, f"http://localhost:{board.port}")]
        result, summary = run_crawl(tmp_path, sources, out_dir)
    assert result.returncode == 1
    assert [s["stop_reason"] for s in summary["sources"]] == ["listing_failed", "listing_failed", "end"]
    assert summary["new"] == 3  # the board that answers is crawled all the same
    errors = [line for line in result.stderr.splitlines() if f"127.0.0.1:{dead}" in line]
    assert len(errors) == 1 and errors[0].startswith(f"error: 127.0.0.1:{dead}:"), result.stderr
    assert "Connection refused" in errors[0] and "crawl.log" in errors[0]
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 10, result.stderr
    log = (out_dir / "crawl.log").read_text()
    assert "Traceback" in log and f"127.0.0.1:{dead}/robots.txt" in log
