"""Storage: scrapy's FilesPipeline, with content-addressed names and atomic writes.

BoardFilesPipeline downloads each post's image (robots.txt, OffsiteMiddleware, retries and
DOWNLOAD_MAXSIZE all apply, since it goes through the downloader), rejects anything that is
not an image of the promised md5, decodes it fully with Pillow, and stores it as
images/<sha256>.<ext> through AtomicFSFilesStore. ManifestPipeline then appends the post to
manifest.jsonl: the image is in place before its line exists, so a kill between the two
leaves at worst an unlisted orphan image that a later run overwrites with the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

from scrapy.exceptions import DownloadCancelledError, DropItem, IgnoreRequest
from scrapy.http.request import NO_CALLBACK, Request
from scrapy.pipelines.files import FilesPipeline, FSFilesStore
from scrapy.utils.asyncio import run_in_thread
from scrapy.utils.defer import deferred_from_coro, ensure_awaitable

from crawlers.atomic import write_bytes_atomic
from crawlers.images import Rejected, check_md5, is_image_content_type, sniff_format, verify_image

logger = logging.getLogger(__name__)

IMAGES_SUBDIR = "images"
# Reasons that come from the bytes themselves: recorded in rejected.jsonl and never retried.
PERMANENT_REJECTIONS = {"bad_image", "md5_mismatch", "content_type", "too_large", "size"}


def remove_temp_files(images_dir: Path) -> int:
    """Delete the temporary files a killed crawl left behind (never listed anywhere)."""
    count = 0
    for leftover in Path(images_dir).glob(".*.tmp"):
        leftover.unlink(missing_ok=True)
        count += 1
    return count


class _HideRejections(logging.Filter):
    """MediaPipeline logs every failed download as an ERROR with a traceback. A Rejected post
    (corrupt, wrong md5, filtered) is an expected outcome, counted in the summary and logged
    once as a dropped item (INFO), so its tracebacks are dropped; real errors still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Rejected))


_MEDIA_LOGGERS = ("scrapy.pipelines.media", "scrapy.pipelines.files")


class AtomicFSFilesStore(FSFilesStore):
    """FSFilesStore writes the final name directly, so a kill leaves a half file under a whole
    file's name. This one writes a temporary file in the same folder, fsyncs it and renames
    it over the final name, in a worker thread so the crawl keeps going meanwhile."""

    def persist_file(self, path, buf: BytesIO, info, meta=None, headers=None):
        return deferred_from_coro(run_in_thread(write_bytes_atomic, self._get_filesystem_path(path), buf.getvalue()))


class BoardFilesPipeline(FilesPipeline):
    STORE_SCHEMES = {**FilesPipeline.STORE_SCHEMES, "": AtomicFSFilesStore, "file": AtomicFSFilesStore}

    def open_spider(self, spider=None) -> None:
        super().open_spider()
        self.params = self.crawler.spider.params
        self._log_filter = _HideRejections()
        for name in _MEDIA_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)

    def close_spider(self, spider=None) -> None:
        for name in _MEDIA_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)

    def get_media_requests(self, item, info) -> list[Request]:
        # DOWNLOAD_MAXSIZE per request: the API pages keep the global limit, images get ours.
        return [Request(url, callback=NO_CALLBACK, meta={"download_maxsize": self.params.max_file_size})
                for url in item["file_urls"]]

    def media_to_download(self, request, info, *, item=None):
        # Always download: the manifest (checked by the spider) decides what is known, and
        # the stored name depends on the bytes, so there is nothing to stat beforehand.
        return None

    async def media_downloaded(self, response, request, info, *, item=None):
        # Checks on the raw response before FilesPipeline names and stores it.
        if response.status == 200 and response.body:
            content_type = response.headers.get("Content-Type")
            if not is_image_content_type(content_type):
                raise Rejected("content_type", f"{request.url} is {content_type!r}, not an image")
            if len(response.body) > self.params.max_file_size:
                raise Rejected("too_large", f"{len(response.body)} bytes")
            check_md5(response.body, item["md5"])
        return await super().media_downloaded(response, request, info, item=item)

    def media_failed(self, failure, request, info):
        error = failure.value
        if isinstance(error, Rejected):
            raise error
        if isinstance(error, IgnoreRequest):
            reason = "robots" if "robots.txt" in str(error) else "offsite"
            raise Rejected(reason, f"{request.url}: {error}")
        if isinstance(error, DownloadCancelledError):
            raise Rejected("too_large", f"{request.url} is over max_file_size ({self.params.max_file_size})")
        logger.warning("Could not download %s: %s", request.url, error)
        raise Rejected("failed", f"{request.url}: {error}")

    def file_path(self, request, response=None, info=None, *, item=None) -> str:
        """images/<sha256 of the bytes>.<extension of the format Pillow found>."""
        if response is None:
            raise ValueError("file names depend on the downloaded bytes; media_to_download never stats")
        cached = request.meta.get("anime_file_path")
        if cached is None:
            digest = hashlib.sha256(response.body).hexdigest()
            cached = request.meta["anime_file_path"] = f"{IMAGES_SUBDIR}/{digest}.{sniff_format(response.body)}"
        return cached

    async def file_downloaded(self, response, request, info, *, item=None) -> str:
        data = response.body
        # A full decode takes a while for large images: run it off the reactor thread.
        image = await run_in_thread(verify_image, data, max_pixels=self.params.max_pixels)
        if image.width < self.params.min_width or image.height < self.params.min_height:
            raise Rejected("size", f"the image is {image.width}x{image.height}, the API said "
                                   f"{item['width']}x{item['height']}")
        path = self.file_path(request, response=response, info=info, item=item)
        await ensure_awaitable(self.store.persist_file(path, BytesIO(data), info))
        item["stored"] = {"sha256": image.sha256, "path": path, "bytes": len(data),
                          "width": image.width, "height": image.height}
        return item["md5"]

    def item_completed(self, results, item, info):
        for ok, value in results:
            if ok:
                continue
            error = value.value
            reason = getattr(error, "reason", "failed")
            self.crawler.spider.skip(item["source"], reason)
            if reason in PERMANENT_REJECTIONS:
                self.crawler.spider.memory.rejected.append({
                    "site": item["site"], "post_id": item["post_id"], "md5": item["md5"], "reason": reason,
                    "source_url": item["source_url"], "fetched_at": utc_now()})
            raise DropItem(f"post {item['post_id']} skipped: {error}")
        return item


class ManifestPipeline:
    """Appends one line per stored post; drops exact duplicates (same bytes) across sites."""

    def __init__(self, crawler):
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler):
        return cls(crawler)

    def process_item(self, item, spider=None):
        spider = self.crawler.spider
        memory = spider.memory
        stored = item["stored"]
        if memory.manifest.knows_sha256(stored["sha256"]):
            spider.skip(item["source"], "duplicate")
            raise DropItem(f"post {item['post_id']} has the same bytes as a stored post")
        memory.manifest.append({
            "site": item["site"], "post_id": item["post_id"], "md5": item["md5"],
            "sha256": stored["sha256"], "path": stored["path"], "tags": item["tags"],
            "rating": item["rating"], "width": stored["width"], "height": stored["height"],
            "bytes": stored["bytes"], "source_url": item["source_url"], "fetched_at": utc_now(),
        })
        spider.count(item["source"], "new")
        spider.count(item["source"], "bytes", stored["bytes"])
        return item


def utc_now() -> str:
    """Now, UTC, to the second: the manifest's and the crawl summary's timestamps."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
