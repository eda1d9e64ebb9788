"""Scrapy settings: fixed project defaults here, the `anime.crawl` params applied by
`build_settings` (the params are the only knobs a user turns; see crawlers/params.py)."""

from __future__ import annotations

from pathlib import Path

from scrapy.settings import Settings

from crawlers.console import LOG_FILE
from crawlers.params import AnimeCrawlParams

BOT_NAME = "dcgan-pipeline"
SPIDER_MODULES = ["crawlers.spiders"]

# Politeness (docs/crawling.md). DOWNLOAD_DELAY and the per-host concurrency come from
# anime.crawl.download_delay: 1 s and one request at a time per host by default. Scrapy keys
# its download slots by host name, so each board (and each file host) has its own delay, and
# sources on one host share theirs (crawlers/spiders/base.py runs them all in one crawler).
# The key is the host name without the port: two boards on one host (:8000 and :8001) share
# one slot, which is right, since one machine answers both.
ROBOTSTXT_OBEY = True
DOWNLOAD_DELAY_JITTER = 0  # the delay is a floor: no random shortening below it
AUTOTHROTTLE_MAX_DELAY = 60.0
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False  # no listening ports in a pipeline stage
REMOTE_CONTROL_ENABLED = False
DOWNLOAD_TIMEOUT = 60

# Retries: 429 and 5xx, with Retry-After honoured and exponential backoff otherwise.
RETRY_TIMES = 5
RETRY_HTTP_CODES = [429, 500, 502, 503, 504, 522, 524, 408]
RETRY_BACKOFF_BASE = 1.0  # seconds; doubled on each retry of a request
RETRY_BACKOFF_MAX = 60.0
RETRY_AFTER_MAX = 300.0  # a longer Retry-After gives the request up
# A listing page that comes back empty where the listing's end is not proven is asked again
# this many times, RETRY_BACKOFF_BASE * 2**attempt seconds apart (crawlers/spiders/base.py).
EMPTY_PAGE_RETRIES = 2
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "crawlers.middlewares.RetryAfterMiddleware": 550,
}

ITEM_PIPELINES = {
    "crawlers.pipelines.BoardFilesPipeline": 100,
    "crawlers.pipelines.ManifestPipeline": 200,
}
MEDIA_ALLOW_REDIRECTS = False  # a redirect could leave the board's hosts
DEFAULT_DROPITEM_LOG_LEVEL = "INFO"  # skipped posts are counted in the summary
LOG_LEVEL = "INFO"


def build_settings(params: AnimeCrawlParams, out_dir: Path | str, overrides: dict[str, str] | None = None) -> Settings:
    settings = Settings()
    settings.setmodule(__name__, priority="project")
    delayed = params.download_delay > 0
    settings.setdict({
        "USER_AGENT": params.user_agent,
        "ROBOTSTXT_OBEY": params.obey_robots,
        "DOWNLOAD_DELAY": params.download_delay,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 1 if delayed else 8,
        # AutoThrottle only ever slows down from DOWNLOAD_DELAY (its floor), when the board does.
        "AUTOTHROTTLE_ENABLED": delayed,
        "AUTOTHROTTLE_START_DELAY": params.download_delay,
        "FILES_STORE": str(Path(out_dir).resolve()),
        # The whole log, tracebacks included, of the last run; the console gets one line per
        # event (crawlers/console.py). Inside the stage's output folder: a stage writes only there.
        "LOG_FILE": str(Path(out_dir) / LOG_FILE),
        "LOG_FILE_APPEND": False,
    }, priority="cmdline")
    for key, value in (overrides or {}).items():
        settings.set(key, value, priority="cmdline")
    return settings
