"""One real crawl of a Gelbooru-0.2 mock board full of trouble, then one check per behaviour.

Listing (newest first, 5 per page): 30..26 | 25..21 | 20..16 | 15..11 (all hidden: an empty
page in the middle) | 10..6 | 5..1 | empty | empty.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from PIL import Image

from crawl_helpers import USER_AGENT, check_manifest_integrity, run_crawl, sent
from mock_board import MockBoard, image_bytes, make_post

MAX_FILE_SIZE = 60_000
TROUBLE = {
    30: "rating", 29: "size", 28: "bad_image", 27: "md5_mismatch", 26: "too_large",
    25: "content_type", 23: "offsite", 22: "size",
}
HIDDEN = set(range(11, 16))
STORED = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 17, 18, 19, 20, 21, 24}


def build_board() -> MockBoard:
    posts = {i: make_post(i) for i in range(1, 31)}
    posts[30] = make_post(30, rating="questionable")
    posts[29] = make_post(29, width=32, height=32)
    truncated = image_bytes(28, 64, 64, noise=True)[:-200]
    posts[28].data = truncated  # the API's md5 is of these bytes: only Pillow can tell
    posts[27].api_md5 = hashlib.md5(b"something else").hexdigest()
    posts[26] = make_post(26, width=256, height=256, noise=True)  # ~190 kB of noise
    posts[25].content_type = "text/html; charset=utf-8"
    posts[24] = make_post(24, width=80, height=60, fmt="JPEG")
    posts[22].data = image_bytes(22, 32, 32)  # the API claims 64x64; the file is 32x32
    for i in HIDDEN:
        posts[i].hidden = True
    # The board ignores rating searches, so only the per-post check can drop post 30.
    board = MockBoard("gelbooru", list(posts.values()), honor_rating_query=False)
    board.fail("page:1", (429, {"Retry-After": "1"}))
    board.fail("image:20", (500, {}))
    return board


@pytest.fixture(scope="module")
def crawled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gelbooru")
    out = tmp / "raw" / "anime"
    board = build_board()
    with board:
        board.posts[23].file_host = f"localhost:{board.port}"  # same server, another host name
        board.send_log = tmp / "sent.log"  # when the crawler sent each request (send_times.py)
        result, summary = run_crawl(tmp, board, out, send_log=board.send_log, max_file_size=MAX_FILE_SIZE)
    assert result.returncode == 0, result.stderr[-3000:]
    return board, out, result, summary


def test_paginates_to_the_end_past_an_empty_page(crawled):
    board, out, result, summary = crawled
    entries = check_manifest_integrity(out)
    assert {e["post_id"] for e in entries} == STORED
    assert summary["stop_reason"] == "end"
    cursors = [e["cursor"] for e in board.requests("page") if e["status"] == 200]
    # Page 3 is empty: asked again twice (it could be a hiccup), then probed past. 5..1 is a full
    # page, so an empty page 6 does not prove the end either: asked again, then 7 ends it.
    assert cursors == ["0", "1", "2", "3", "3", "3", "4", "5", "6", "6", "6", "7", "7", "7"]
    assert summary["sources"][0]["empty_page_retries"] == 6
    # What this walk could not see: ids 11..15 (between 16 and 10), and anything below 1.
    gaps = [(gap["below"], gap["above"], gap["cursors"]) for gap in summary["sources"][0]["gaps"]]
    assert gaps == [(10, 16, ["3"]), (0, 1, ["6", "7"])]
    state = next(iter(json.loads((out / "crawl_state.json").read_text()).values()))
    assert state["gaps"] == summary["sources"][0]["gaps"] and state["walked"] and not state["complete"]
    assert "2 gaps not seen" in result.stdout
    assert summary["posts_seen"] == 30 - len(HIDDEN)
    assert summary["new"] == len(STORED) and summary["manifest_posts"] == len(STORED)


def test_rating_and_size_filters_apply_to_each_post(crawled):
    board, out, result, summary = crawled
    assert summary["skipped"]["rating"] == 1
    assert summary["skipped"]["size"] == 2  # 29 from the API's size, 22 from the decoded image
    requested = {e["post_id"] for e in board.image_requests()}
    assert 30 not in requested and 29 not in requested  # filtered before any download
    # The rating is also part of the search, even though this board ignores it.
    assert all("-rating:questionable" in e["tags"] for e in board.requests("page"))


def test_bad_bytes_are_rejected_and_remembered(crawled):
    board, out, result, summary = crawled
    for reason in ("bad_image", "md5_mismatch", "too_large", "content_type"):
        assert summary["skipped"][reason] == 1, reason
    stored = {p.name.split(".")[0] for p in (out / "images").iterdir()}
    for post_id in (28, 27, 26, 25, 22):
        assert hashlib.sha256(board.posts[post_id].data).hexdigest() not in stored, post_id
    rejected = {json.loads(line)["post_id"]: json.loads(line)["reason"]
                for line in (out / "rejected.jsonl").read_text().splitlines()}
    assert rejected == {28: "bad_image", 27: "md5_mismatch", 26: "too_large", 25: "content_type", 22: "size"}


def test_no_request_leaves_the_board(crawled):
    board, out, result, summary = crawled
    assert summary["skipped"]["offsite"] == 1
    hosts = {e["host"] for e in board.requests()}
    assert hosts == {f"127.0.0.1:{board.port}"}
    assert all(e["user_agent"] == USER_AGENT for e in board.requests())


def test_429_waits_for_retry_after(crawled):
    board, out, result, summary = crawled
    page1 = [e for e in board.requests("page") if e["cursor"] == "1"]
    assert [e["status"] for e in page1] == [429, 200] and page1[0]["path"] == page1[1]["path"]
    # Measured where the crawler sends, which a loaded machine cannot compress.
    times = [t for t, url in sent(board.send_log) if url.endswith(page1[0]["path"])]
    assert len(times) == 2 and times[1] - times[0] >= 0.95  # Retry-After: 1


def test_500_then_success_is_stored(crawled):
    board, out, result, summary = crawled
    assert [e["status"] for e in board.image_requests(20)] == [500, 200]
    assert 20 in {e["post_id"] for e in check_manifest_integrity(out)}


def test_files_are_named_by_content_and_format(crawled):
    board, out, result, summary = crawled
    for entry in check_manifest_integrity(out):
        with Image.open(io.BytesIO((out / entry["path"]).read_bytes())) as image:
            assert entry["path"].endswith({"PNG": ".png", "JPEG": ".jpg"}[image.format])
            assert (entry["width"], entry["height"]) == image.size
        assert entry["path"] == f"images/{entry['sha256']}.{entry['path'].rsplit('.', 1)[1]}"
        assert entry["rating"] == "general" and entry["site"] == f"127.0.0.1:{board.port}"
    assert not list((out / "images").glob(".*"))  # no temporary files left
    assert json.loads((out / "crawl_stats.json").read_text()) == summary
    assert f"{summary['new']} new" in result.stdout
