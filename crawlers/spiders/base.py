"""The one spider: every source of `anime.crawl.sources`, each a listing of its own.

A `BoardApi` subclass only knows its API: the page URL for a cursor, the next cursor, and how
to turn one JSON post into a `Post`. The spider walks each source's listing (paging, the
filters, the early stop, the robots message). Within a listing, pages are requested one after
another (the next page from the previous page's callback), so posts are examined newest
first, in order, which the "stop after N known posts in a row" rule relies on; the images of
a page download concurrently.

All sources run in this one spider, so in one scrapy downloader, whose slots are per host:
each host gets its own DOWNLOAD_DELAY and one request at a time, and two sources on one host
share that slot instead of doubling its load. A post whose md5 one source has stored or
scheduled is known to every other source, so an image found on two boards is fetched once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode, urlparse

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.spidermiddlewares.httperror import HttpError

from crawlers.items import PostItem
from crawlers.manifest import CrawlMemory
from crawlers.params import AnimeCrawlParams, BoardSource

logger = logging.getLogger(__name__)

# Two empty pages in a row end the listing: one empty page can sit in the middle (Danbooru
# drops hidden posts after applying the limit; boards hiccup), so it is probed past once.
EMPTY_PAGES_AT_END = 2


@dataclass(frozen=True)
class Post:
    post_id: int
    md5: str | None
    file_url: str | None  # absolute
    width: int
    height: int
    rating: str | None  # canonical name, None if the site's value is unknown
    tags: list[str]
    file_size: int | None = None


class BoardApi:
    """One board API for one source: page URLs, cursors, posts. Subclasses per site."""

    name: ClassVar[str]
    # Site rating value -> canonical name (crawlers.params.RATINGS).
    RATING_NAMES: ClassVar[dict[str, str]]
    # The values the site's `rating:` search accepts.
    QUERY_RATINGS: ClassVar[tuple[str, ...]]

    def __init__(self, source: BoardSource):
        self.source = source
        self.base_url = source.base_url
        self.page_size = source.effective_page_size

    def first_cursor(self) -> Any:
        raise NotImplementedError

    def page_url(self, cursor: Any) -> str:
        raise NotImplementedError

    def next_cursor(self, cursor: Any, posts: list[Post]) -> Any | None:
        """The cursor after `cursor` (whose page held `posts`); None when there is none."""
        raise NotImplementedError

    def parse_post(self, raw: dict[str, Any]) -> Post:
        raise NotImplementedError

    def raw_posts(self, response: scrapy.http.Response) -> list[dict[str, Any]]:
        text = response.text.strip()
        if not text:
            return []  # Safebooru answers an empty body past the last page
        data = json.loads(text)
        if not isinstance(data, list):
            raise ValueError(f"expected a JSON list of posts, got {type(data).__name__}")
        return data

    def query_tags(self) -> str:
        """The configured tags plus a rating search; each post's rating is checked again."""
        allowed = [v for v in self.QUERY_RATINGS if self.RATING_NAMES[v] in self.source.ratings]
        if len(allowed) == 1:
            rating = [f"rating:{allowed[0]}"]
        else:
            rating = [f"-rating:{v}" for v in self.QUERY_RATINGS if v not in allowed]
        return " ".join([*self.source.tags.split(), *rating])

    def api_url(self, path: str, query: dict[str, Any]) -> str:
        return f"{self.base_url}{path}?{urlencode(query)}"

    def absolute(self, url: str | None) -> str | None:
        """API file URLs may be protocol-relative or site-relative."""
        if not url:
            return None
        if url.startswith("//"):
            return f"{self.base_url.split(':', 1)[0]}:{url}"
        if url.startswith("/"):
            return f"{self.base_url}{url}"
        return url

    def rating_name(self, value: Any) -> str | None:
        return self.RATING_NAMES.get(str(value).lower()) if value is not None else None


@dataclass
class Listing:
    """One source's walk through its board's listing, and its counters."""

    index: int
    source: BoardSource
    api: BoardApi
    # Only trust "N known posts in a row means the rest is known" when the previous run walked
    # this listing completely; after a kill or a max_posts stop, older posts may be missing.
    early_stop: bool
    known_in_row: int = 0
    empty_in_row: int = 0
    stop_reason: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def site_name(self) -> str:
        return urlparse(self.source.base_url).netloc


class BoardSpider(scrapy.Spider):
    name = "boards"

    def __init__(self, params: AnimeCrawlParams, memory: CrawlMemory, early_stop: list[bool], **kwargs: Any):
        from crawlers.spiders import APIS  # the API modules import this one

        super().__init__(**kwargs)
        self.params = params
        self.memory = memory
        self.listings = [Listing(i, source, APIS[source.site](source), bool(early))
                         for i, (source, early) in enumerate(zip(params.sources, early_stop, strict=True))]
        # OffsiteMiddleware filters every other host, images included (the boards' own
        # subdomains and the declared file hosts pass).
        hosts = [host for source in params.sources for host in (urlparse(source.base_url).hostname, *source.file_hosts)]
        self.allowed_domains = list(dict.fromkeys(hosts))
        self.in_flight_md5: set[str] = set()
        self.scheduled = 0  # over all sources: max_posts is per run

    # ------------------------------------------------------------------ counters
    def count(self, listing: Listing | int, key: str, value: int = 1) -> None:
        """Count for the run (anime/<key>) and for the source."""
        listing = self.listings[listing] if isinstance(listing, int) else listing
        self.crawler.stats.inc_value(f"anime/{key}", value)
        listing.counts[key] = listing.counts.get(key, 0) + value

    def skip(self, listing: Listing | int, reason: str) -> None:
        self.count(listing, f"skipped/{reason}")

    def stop(self, listing: Listing, reason: str) -> None:
        if listing.stop_reason is None:
            listing.stop_reason = reason
            logger.info("Listing %d (%s) stops: %s", listing.index, listing.source.base_url, reason)

    # ------------------------------------------------------------------ paging
    async def start(self):
        for listing in self.listings:
            yield self.page_request(listing, listing.api.first_cursor())

    def page_request(self, listing: Listing, cursor: Any) -> scrapy.Request:
        return scrapy.Request(listing.api.page_url(cursor), callback=self.parse_page, errback=self.page_failed,
                              cb_kwargs={"listing": listing, "cursor": cursor})

    def parse_page(self, response: scrapy.http.Response, listing: Listing, cursor: Any):
        self.count(listing, "pages")
        if self.scheduled >= self.params.max_posts:
            self.stop(listing, "max_posts")  # another source used up this run's posts
            return
        api = listing.api
        try:
            posts = [api.parse_post(raw) for raw in api.raw_posts(response)]
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("%s: not a %s API page (%s); stopping this source", response.url, api.name, exc)
            self.stop(listing, "listing_failed")
            return
        if not posts:
            listing.empty_in_row += 1
            following = api.next_cursor(cursor, posts)
            if listing.empty_in_row >= EMPTY_PAGES_AT_END or following is None:
                self.stop(listing, "end")
            else:
                yield self.page_request(listing, following)
            return
        listing.empty_in_row = 0
        for post in posts:
            item = self.consider(listing, post)
            if item == "stop":
                return
            if item is not None:
                yield item
                if self.scheduled >= self.params.max_posts:
                    self.stop(listing, "max_posts")
                    return
        following = api.next_cursor(cursor, posts)
        if following is None:
            self.stop(listing, "end")
        else:
            yield self.page_request(listing, following)

    def consider(self, listing: Listing, post: Post) -> PostItem | str | None:
        """The item to download for `post`, None to skip it, or "stop" to end the listing."""
        p = self.params
        self.count(listing, "seen")
        if not post.md5 or not post.file_url:
            self.skip(listing, "unavailable")  # Danbooru hides the file of some posts from anonymous users
            return None
        md5 = post.md5.lower()
        if self.memory.knows(md5) or md5 in self.in_flight_md5:
            self.skip(listing, "known")
            listing.known_in_row += 1
            if listing.early_stop and listing.known_in_row >= p.stop_after_known:
                self.stop(listing, "known")
                return "stop"
            return None
        # Filtered posts below are neither new nor known: they leave the run of known posts as
        # it is, or a board with many filtered posts would never reach stop_after_known.
        if post.rating not in listing.source.ratings:
            self.skip(listing, "rating")
            return None
        if post.width < p.min_width or post.height < p.min_height:
            self.skip(listing, "size")
            return None
        # The API's own numbers are checked before any byte is fetched; the download is
        # checked again (DOWNLOAD_MAXSIZE, the decoded size), as an API can be wrong.
        if post.width * post.height > p.max_pixels:
            self.skip(listing, "too_many_pixels")
            return None
        if post.file_size is not None and post.file_size > p.max_file_size:
            self.skip(listing, "too_large")
            return None
        listing.known_in_row = 0
        self.in_flight_md5.add(md5)
        self.scheduled += 1
        return PostItem(
            site=listing.site_name, post_id=post.post_id, md5=md5, tags=post.tags, rating=post.rating,
            width=post.width, height=post.height, source_url=post.file_url, file_urls=[post.file_url],
            source=listing.index,
        )

    def page_failed(self, failure):
        request = failure.request
        listing: Listing = request.cb_kwargs["listing"]
        if failure.check(IgnoreRequest) and "robots.txt" in str(failure.value):
            host = urlparse(request.url).netloc
            logger.error(
                "robots.txt of %s forbids %s, so the %s source stops here. Danbooru's robots.txt "
                "forbids its JSON API; set anime.crawl.obey_robots: false only if you have the "
                "site's permission.", host, request.url, listing.api.name)
            self.stop(listing, "robots")
        elif failure.check(HttpError):
            logger.error("%s answered HTTP %s after retries; stopping this source", request.url,
                         failure.value.response.status)
            self.stop(listing, "listing_failed")
        else:
            logger.error("%s failed: %s; stopping this source", request.url, failure.value)
            self.stop(listing, "listing_failed")
