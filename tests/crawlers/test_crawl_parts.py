"""The crawler's pieces on their own: Retry-After parsing, image checks, the manifest, params."""

from __future__ import annotations

import io
import json
from email.utils import formatdate

import pytest
import yaml
from PIL import Image

from crawlers.images import Rejected, check_md5, verify_image
from crawlers.manifest import CrawlMemory, PostLog, read_log
from crawlers.middlewares import parse_retry_after
from crawlers.params import AnimeCrawlParams, ParamsError, load_crawl_params
from mock_board import image_bytes


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after(b"7") == 7.0
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == pytest.approx(30)
    assert parse_retry_after(formatdate(999_000, usegmt=True), now=1_000_000) == 0.0  # already past
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None


def test_verify_image_accepts_real_images_and_names_the_format():
    jpeg = image_bytes(5, 40, 30, "JPEG")
    result = verify_image(jpeg, max_pixels=10_000)
    assert (result.ext, result.width, result.height) == ("jpg", 40, 30)


@pytest.mark.parametrize("case", ["truncated_png", "truncated_jpeg", "bomb", "html", "bmp"])
def test_verify_image_rejects(case):
    if case == "truncated_png":
        data = image_bytes(1, 64, 64, noise=True)[:-300]
    elif case == "truncated_jpeg":
        data = image_bytes(1, 128, 128, "JPEG", noise=True)[:2000]
    elif case == "bomb":
        data = image_bytes(1, 2000, 2000)  # 4 Mpx, tiny on disk
    elif case == "html":
        data = b"<html><body>Access denied</body></html>"
    else:
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format="BMP")
        data = buffer.getvalue()
    with pytest.raises(Rejected) as error:
        verify_image(data, max_pixels=1_000_000)
    assert error.value.reason == "bad_image"


def test_md5_mismatch():
    data = image_bytes(3)
    with pytest.raises(Rejected, match="md5_mismatch"):
        check_md5(data, "0" * 32)


def test_manifest_trims_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / "manifest.jsonl"
    whole = {"site": "s", "post_id": 1, "md5": "a" * 32, "sha256": "b" * 64, "path": "images/x.png", "tags": [],
             "rating": "general", "width": 1, "height": 1, "bytes": 1, "source_url": "u", "fetched_at": "t"}
    path.write_text(json.dumps(whole) + "\n" + '{"site": "s", "post_id": 2, "md5": "cc')
    assert len(read_log(path)) == 1
    log = PostLog(path)
    assert log.count == 1 and log.knows_md5("a" * 32) and not log.knows_md5("c" * 32)
    log.append({**whole, "post_id": 3, "md5": "d" * 32, "sha256": "e" * 64})
    log.close()
    assert [e["post_id"] for e in read_log(path)] == [1, 3]
    with pytest.raises(ValueError, match="lacks"):
        CrawlMemory(tmp_path).manifest.append({"md5": "f" * 32})


def test_crawl_params_are_checked():
    assert AnimeCrawlParams(sources=[{"site": "danbooru"}]).sources[0].effective_page_size == 200
    with pytest.raises(ValueError, match="at most 100"):
        AnimeCrawlParams(sources=[{"site": "moebooru", "page_size": 101}])
    with pytest.raises(ValueError, match="unknown rating"):
        AnimeCrawlParams(sources=[{"ratings": ["s"]}])
    with pytest.raises(ValueError, match="http"):
        AnimeCrawlParams(sources=[{"base_url": "safebooru.org"}])
    assert AnimeCrawlParams(sources=[{"base_url": "https://konachan.net/"}]).sources[0].base_url == "https://konachan.net"
    with pytest.raises(ValueError, match="sources 0 and 1 are the same listing"):
        AnimeCrawlParams(sources=[{"site": "gelbooru"}, {"site": "gelbooru"}])
    # Same board, other tags: two listings, fine.
    assert len(AnimeCrawlParams(sources=[{"tags": "1girl"}, {"tags": "1boy"}]).sources) == 2


def test_single_board_params_still_read_as_one_source(tmp_path):
    old = {"site": "moebooru", "base_url": "https://konachan.net", "tags": "1girl", "ratings": ["safe"],
           "page_size": 50, "max_posts": 30}
    params = AnimeCrawlParams(**old)
    assert params.max_posts == 30 and len(params.sources) == 1
    assert params.sources[0].model_dump() == {"site": "moebooru", "base_url": "https://konachan.net", "tags": "1girl",
                                              "ratings": ["safe"], "file_hosts": [], "page_size": 50}
    # Both forms at once is ambiguous: one line that says what to move where.
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"anime": {"crawl": {**old, "sources": [{"site": "gelbooru"}]}}}))
    with pytest.raises(ParamsError) as error:
        load_crawl_params(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: anime.crawl: ")
    assert "not both" in message and "into a `sources` entry" in message
    # The key of a bad value inside a source is named in full.
    path.write_text(yaml.safe_dump({"anime": {"crawl": {"sources": [{"site": "gelbooru"}, {"site": "nope"}]}}}))
    with pytest.raises(ParamsError, match=r"anime\.crawl\.sources\.1\.site: "):
        load_crawl_params(path)


@pytest.mark.parametrize("base, url, expected", [
    # A board installed under a path: a site-relative file URL is relative to the host, not the
    # path (the old string concatenation gave https://host/booru/images/a.jpg here).
    ("https://host/booru", "/images/a.jpg", "https://host/images/a.jpg"),
    ("https://host", "/images/a.jpg", "https://host/images/a.jpg"),
    ("https://host/booru", "//files.host/a.jpg", "https://files.host/a.jpg"),
    ("http://127.0.0.1:8000", "//127.0.0.1:8000/a.jpg", "http://127.0.0.1:8000/a.jpg"),
    ("https://host/booru", "https://cdn.host/a.jpg", "https://cdn.host/a.jpg"),
    ("https://host/booru", None, None),
])
def test_file_urls_resolve_as_a_browser_would(base, url, expected):
    from crawlers.params import BoardSource
    from crawlers.spiders import APIS

    api = APIS["gelbooru"](BoardSource(site="gelbooru", base_url=base, tags="1girl"))
    assert api.absolute(url) == expected
