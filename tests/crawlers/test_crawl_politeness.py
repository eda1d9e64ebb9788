"""Politeness defaults, and the delay really spacing requests to one host."""

from __future__ import annotations

from crawl_helpers import run_crawl, sent
from crawlers.settings import build_settings
from mock_board import MockBoard, make_post
from crawlers.params import AnimeCrawlParams


def test_defaults_allow_one_request_per_second_per_host(tmp_path):
    settings = build_settings(AnimeCrawlParams(), tmp_path)
    assert settings.getbool("ROBOTSTXT_OBEY")
    assert settings.getfloat("DOWNLOAD_DELAY") == 1.0
    assert settings.getfloat("DOWNLOAD_DELAY_JITTER") == 0  # never shortened below the delay
    assert settings.getint("CONCURRENT_REQUESTS_PER_DOMAIN") == 1
    assert settings.getbool("AUTOTHROTTLE_ENABLED")  # only ever slows down from the delay
    assert {429, 500, 503} <= {int(code) for code in settings.getlist("RETRY_HTTP_CODES")}
    assert settings["USER_AGENT"].startswith("dcgan-pipeline/")
    assert not settings.getbool("TELNETCONSOLE_ENABLED") and not settings.getbool("REMOTE_CONTROL_ENABLED")


def test_download_delay_spaces_every_request_to_the_host(tmp_path, out_dir):
    """Measured where the crawler sends (send_times.py), so a loaded machine that runs the mock
    board's threads late cannot make a polite crawl look rude."""
    log = tmp_path / "sent.log"
    with MockBoard("moebooru", [make_post(i, rating="safe") for i in range(1, 5)]) as board:
        result, summary = run_crawl(tmp_path, board, out_dir, send_log=log, download_delay=0.25)
        assert result.returncode == 0, result.stderr[-3000:]
        served = [e for e in board.requests() if e["kind"] != "robots"]
    times = [t for t, _ in sent(log)]
    # 2 pages (the first is short, so the empty second one is the end, not asked again) + 4 images
    assert summary["new"] == 4 and len(times) == len(served) == 6
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.24, gaps  # the delay (no jitter: see above), less the ms between scrapy's clock and ours
