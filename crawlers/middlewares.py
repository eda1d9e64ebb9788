"""Retries that honour Retry-After and back off exponentially (scrapy's RetryMiddleware, extended).

Scrapy retries 429 and 5xx at once; a board that answers 429 asks us to wait. On a retryable
status we pause the whole host (its downloader slot), not just the one request, for the
Retry-After seconds (or an HTTP date), else for RETRY_BACKOFF_BASE * 2**(attempt - 1)
seconds, capped at RETRY_BACKOFF_MAX. A Retry-After beyond RETRY_AFTER_MAX is not worth
waiting for: the request is given up rather than retried early.
"""

from __future__ import annotations

import logging
import time
from email.utils import parsedate_to_datetime

from scrapy.downloadermiddlewares.retry import RetryMiddleware
from scrapy.utils.asyncio import call_later
from scrapy.utils.response import response_status_message

logger = logging.getLogger(__name__)


def parse_retry_after(value: bytes | str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class RetryAfterMiddleware(RetryMiddleware):
    def __init__(self, settings):
        super().__init__(settings)
        self.backoff_base = settings.getfloat("RETRY_BACKOFF_BASE", 1.0)
        self.backoff_max = settings.getfloat("RETRY_BACKOFF_MAX", 60.0)
        self.retry_after_max = settings.getfloat("RETRY_AFTER_MAX", 300.0)

    def process_response(self, request, response, spider=None):
        if request.meta.get("dont_retry", False) or response.status not in self.retry_http_codes:
            return response
        attempt = request.meta.get("retry_times", 0) + 1
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if wait is not None and wait > self.retry_after_max:
            logger.warning("%s asks to retry %s after %.0f s (over RETRY_AFTER_MAX); giving up",
                           response.url, request, wait)
            self.crawler.stats.inc_value("retry/retry_after_too_long")
            return response
        if wait is None:
            wait = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        retry = self._retry(request, response_status_message(response.status))
        if retry is None:
            return response
        pause_host(self.crawler, request, wait)
        return retry


def pause_host(crawler, request, seconds: float) -> None:
    """Hold every queued request to `request`'s host for `seconds` (a 429, an empty page).

    Scrapy has no public "pause this slot" call; the downloader's own delay mechanism
    (slot.latercall, which _process_queue waits for) is what DOWNLOAD_DELAY uses, so we
    arm it with a longer delay. Requests already in flight are not affected.
    """
    if seconds <= 0:
        return
    downloader = crawler.engine.downloader
    key = request.meta.get(downloader.DOWNLOAD_SLOT) or downloader.get_slot_key(request)
    slot = downloader.slots.get(key)
    if slot is None:
        return
    if slot.latercall is not None:
        slot.latercall.cancel()
    slot.latercall = call_later(seconds, downloader._latercall, slot)
    crawler.stats.inc_value("retry/paused_seconds", seconds)
    logger.info("Pausing requests to %s for %.1f s before retrying %s", key, seconds, request)
