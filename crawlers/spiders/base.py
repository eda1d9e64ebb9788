"""What every board spider shares: paging, the filters, the early stop, the robots message.

A subclass only knows its API: the page URL for a cursor, the next cursor, and how to turn
one JSON post into a `Post`. Pages are requested one after another (the next page from the
previous page's callback), so posts are examined newest first, in order, which the "stop
after N known posts in a row" rule relies on; the images of a page download concurrently.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode, urlparse

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.spidermiddlewares.httperror import HttpError

from crawlers.items import PostItem
from crawlers.manifest import CrawlMemory
from pipeline.config import AnimeCrawlParams

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


class BoardSpider(scrapy.Spider):
    name: ClassVar[str]
    # Site rating value -> canonical name (AnimeCrawlParams.RATINGS).
    RATING_NAMES: ClassVar[dict[str, str]]
    # The values the site's `rating:` search accepts.
    QUERY_RATINGS: ClassVar[tuple[str, ...]]

    def __init__(self, params: AnimeCrawlParams, memory: CrawlMemory, early_stop: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self.params = params
        self.memory = memory
        # Only trust "N known posts in a row means the rest is known" when the previous run
        # finished cleanly; after a kill, older posts may be missing below the known ones.
        self.early_stop = early_stop
        base = urlparse(params.base_url)
        self.base_url = params.base_url
        self.site_name = base.netloc
        # OffsiteMiddleware filters every other host, images included (the board's own
        # subdomains and the declared file hosts pass).
        self.allowed_domains = [base.hostname, *params.file_hosts]
        self.page_size = params.effective_page_size
        self.in_flight_md5: set[str] = set()
        self.known_in_row = 0
        self.empty_in_row = 0
        self.scheduled = 0

    # ------------------------------------------------------------------ subclass API
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

    # ------------------------------------------------------------------ shared
    def query_tags(self) -> str:
        """The configured tags plus a rating search; each post's rating is checked again."""
        allowed = [v for v in self.QUERY_RATINGS if self.RATING_NAMES[v] in self.params.ratings]
        if len(allowed) == 1:
            rating = [f"rating:{allowed[0]}"]
        else:
            rating = [f"-rating:{v}" for v in self.QUERY_RATINGS if v not in allowed]
        return " ".join([*self.params.tags.split(), *rating])

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

    async def start(self):
        yield self.page_request(self.first_cursor())

    def page_request(self, cursor: Any) -> scrapy.Request:
        return scrapy.Request(self.page_url(cursor), callback=self.parse_page, errback=self.page_failed,
                              cb_kwargs={"cursor": cursor})

    def stop(self, reason: str) -> None:
        self.crawler.stats.set_value("anime/stop_reason", reason)
        logger.info("Listing stops: %s", reason)

    def skip(self, reason: str) -> None:
        self.crawler.stats.inc_value(f"anime/skipped/{reason}")

    def parse_page(self, response: scrapy.http.Response, cursor: Any):
        self.crawler.stats.inc_value("anime/pages")
        try:
            posts = [self.parse_post(raw) for raw in self.raw_posts(response)]
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("%s: not a %s API page (%s); stopping", response.url, self.name, exc)
            self.stop("listing_failed")
            return
        if not posts:
            self.empty_in_row += 1
            following = self.next_cursor(cursor, posts)
            if self.empty_in_row >= EMPTY_PAGES_AT_END or following is None:
                self.stop("end")
            else:
                yield self.page_request(following)
            return
        self.empty_in_row = 0
        for post in posts:
            item = self.consider(post)
            if item == "stop":
                return
            if item is not None:
                yield item
                if self.scheduled >= self.params.max_posts:
                    self.stop("max_posts")
                    return
        following = self.next_cursor(cursor, posts)
        if following is None:
            self.stop("end")
        else:
            yield self.page_request(following)

    def consider(self, post: Post) -> PostItem | str | None:
        """The item to download for `post`, None to skip it, or "stop" to end the listing."""
        p = self.params
        self.crawler.stats.inc_value("anime/seen")
        if not post.md5 or not post.file_url:
            self.skip("unavailable")  # Danbooru hides the file of some posts from anonymous users
            return None
        md5 = post.md5.lower()
        if self.memory.knows(md5) or md5 in self.in_flight_md5:
            self.skip("known")
            self.known_in_row += 1
            if self.early_stop and self.known_in_row >= p.stop_after_known:
                self.stop("known")
                return "stop"
            return None
        # Filtered posts below are neither new nor known: they leave the run of known posts as
        # it is, or a board with many filtered posts would never reach stop_after_known.
        if post.rating not in p.ratings:
            self.skip("rating")
            return None
        if post.width < p.min_width or post.height < p.min_height:
            self.skip("size")
            return None
        if post.file_size is not None and post.file_size > p.max_file_size:
            self.skip("too_large")
            return None
        self.known_in_row = 0
        self.in_flight_md5.add(md5)
        self.scheduled += 1
        return PostItem(
            site=self.site_name, post_id=post.post_id, md5=md5, tags=post.tags, rating=post.rating,
            width=post.width, height=post.height, source_url=post.file_url, file_urls=[post.file_url],
        )

    def page_failed(self, failure):
        request = failure.request
        if failure.check(IgnoreRequest) and "robots.txt" in str(failure.value):
            host = urlparse(request.url).netloc
            logger.error(
                "robots.txt of %s forbids %s, so the %s spider stops here. Danbooru's robots.txt "
                "forbids its JSON API; set anime.crawl.obey_robots: false only if you have the "
                "site's permission.", host, request.url, self.name)
            self.stop("robots")
        elif failure.check(HttpError):
            logger.error("%s answered HTTP %s after retries; stopping", request.url, failure.value.response.status)
            self.stop("listing_failed")
        else:
            logger.error("%s failed: %s; stopping", request.url, failure.value)
            self.stop("listing_failed")
