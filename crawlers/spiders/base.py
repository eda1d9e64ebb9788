"""The one spider: every source of `anime.crawl.sources`, each a listing of its own.

A `BoardApi` subclass only knows its API: the page URL for a cursor, the next cursor, and how
to turn one JSON post into a `Post`. The spider walks each source's listing (paging, the
filters, the early stop, the robots message). Within a listing, pages are requested one after
another (the next page from the previous page's callback), so posts are examined newest
first, in order, which the "stop after N known posts in a row" rule relies on; the images of
a page download concurrently.

All sources run in this one spider, so in one scrapy downloader, whose slots are per host
name: each host gets its own DOWNLOAD_DELAY and one request at a time, and two sources on
one host share that slot instead of doubling its load. Scrapy keys the slot by host name,
not port, so two boards on one host (example.org:8000 and example.org:8001) share it too:
on purpose, as they share the machine that answers. A post whose md5 one source has stored
or scheduled is known to every other source, so an image found on two boards is fetched once.

Nothing lost: a page that comes back empty when the listing's end is not proven (a board
under load does this) is asked again, EMPTY_PAGE_RETRIES times with exponential backoff
(the whole host pauses, as for a 429). If it stays empty, the walk probes on, and the
stretch it could not see is recorded as a gap (crawlers/gaps.py) in crawl_state.json; so is
a short page on an offset-paged board that posts follow. The next run's early stop waits
until its walk has passed every recorded gap.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode, urljoin, urlparse

import scrapy
from scrapy.exceptions import IgnoreRequest
from scrapy.spidermiddlewares.httperror import HttpError

from crawlers.console import FILE_ONLY
from crawlers.gaps import Gap, gaps_after_walk, must_reach
from crawlers.items import PostItem
from crawlers.manifest import CrawlMemory
from crawlers.middlewares import pause_host
from crawlers.params import AnimeCrawlParams, BoardSource

logger = logging.getLogger(__name__)

# Two empty pages in a row end a listing whose end is not proven otherwise: one empty page can
# sit in the middle (Danbooru drops hidden posts after applying the limit; a board hiccups for
# longer than the retries), so it is probed past once.
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

    # Offset paging (Gelbooru, Moebooru): page k holds posts k*n .. k*n + n - 1 of the listing,
    # so a short page is the board saying "this is the end"; posts after one mean it lost some.
    short_page_ends_listing: ClassVar[bool] = True

    def proven_end(self, cursor: Any, last_page_size: int | None) -> bool:
        """An empty page at `cursor` is the listing's end, not a hiccup, when the last page
        with posts held `last_page_size` of them."""
        return last_page_size is not None and last_page_size < self.page_size

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
        """API file URLs may be protocol-relative (//host/x) or site-relative (/x): resolved as a
        browser would (RFC 3986), so /x under a board at https://host/booru is https://host/x."""
        return urljoin(self.base_url, url) if url else None

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
    # The stretches earlier runs did not see: the early stop waits until the walk passed them.
    old_gaps: list[Gap] = field(default_factory=list)
    known_in_row: int = 0
    empty_in_row: int = 0
    stop_reason: str | None = None
    error: str | None = None  # why the listing could not be read (the CLI's one line per host)
    counts: dict[str, int] = field(default_factory=dict)
    # This walk's view of the listing, by post id (newest first, so ids only go down).
    lowest_id: int | None = None
    last_page_size: int | None = None  # posts on the last page that had any
    new_gaps: list[Gap] = field(default_factory=list)
    # A stretch not seen since `gap_above` (None: the top); closed by the next page with posts.
    gap_open: bool = False
    gap_above: int | None = None
    gap_cursors: list[str] = field(default_factory=list)

    @property
    def must_reach(self) -> int | None:
        return must_reach(self.old_gaps)

    def open_gap(self, above: int | None, cursor: Any) -> None:
        if not self.gap_open:
            self.gap_open, self.gap_above = True, above
        self.gap_cursors.append("top" if cursor is None else str(cursor))  # Danbooru's first page: None

    def close_gap(self, below: int) -> None:
        if self.gap_open:
            self.new_gaps.append(Gap(below, self.gap_above, tuple(self.gap_cursors)))
        self.gap_open, self.gap_cursors = False, []

    def gaps(self) -> list[Gap]:
        """The gaps still open after this walk (crawl_state.json)."""
        return gaps_after_walk(self.old_gaps, self.new_gaps, self.lowest_id, self.stop_reason == "end")

    @property
    def site_name(self) -> str:
        return urlparse(self.source.base_url).netloc


class BoardSpider(scrapy.Spider):
    name = "boards"

    def __init__(self, params: AnimeCrawlParams, memory: CrawlMemory, early_stop: list[bool],
                 gaps: list[list[Gap]] | None = None, **kwargs: Any):
        from crawlers.spiders import APIS  # the API modules import this one

        super().__init__(**kwargs)
        self.params = params
        self.memory = memory
        gaps = gaps if gaps is not None else [[] for _ in params.sources]
        self.listings = [Listing(i, source, APIS[source.site](source), bool(early), list(old))
                         for i, (source, early, old) in enumerate(zip(params.sources, early_stop, gaps, strict=True))]
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
            # A failed listing's one console line is the CLI's, per host (crawlers/console.py).
            logger.info("Listing %d (%s) stops: %s", listing.index, listing.source.base_url, reason,
                        extra=FILE_ONLY if reason == "listing_failed" else None)

    # ------------------------------------------------------------------ paging
    async def start(self):
        for listing in self.listings:
            yield self.page_request(listing, listing.api.first_cursor())

    def page_request(self, listing: Listing, cursor: Any, attempt: int = 0) -> scrapy.Request:
        # dont_filter: a page asked again has the URL scrapy's duplicate filter already saw.
        return scrapy.Request(listing.api.page_url(cursor), callback=self.parse_page, errback=self.page_failed,
                              cb_kwargs={"listing": listing, "cursor": cursor, "attempt": attempt},
                              dont_filter=attempt > 0)

    def parse_page(self, response: scrapy.http.Response, listing: Listing, cursor: Any, attempt: int = 0):
        self.count(listing, "pages")
        if self.scheduled >= self.params.max_posts:
            self.stop(listing, "max_posts")  # another source used up this run's posts
            return
        api = listing.api
        try:
            posts = [api.parse_post(raw) for raw in api.raw_posts(response)]
        except (ValueError, KeyError, TypeError) as exc:
            logger.error("%s: not a %s API page (%s); stopping this source", response.url, api.name, exc,
                         extra=FILE_ONLY)
            listing.error = f"not a {api.name} API page ({exc})"
            self.stop(listing, "listing_failed")
            return
        if not posts:
            proven = api.proven_end(cursor, listing.last_page_size)
            retries = self.settings.getint("EMPTY_PAGE_RETRIES")
            if not proven and attempt < retries:
                # A board under load answers an empty page: ask again after a pause of the host.
                wait = min(self.settings.getfloat("RETRY_BACKOFF_MAX"),
                           self.settings.getfloat("RETRY_BACKOFF_BASE") * 2 ** attempt)
                logger.info("%s came back empty; asking again in %.2f s (%d of %d)", response.url, wait,
                            attempt + 1, retries)
                self.count(listing, "empty_page_retries")
                pause_host(self.crawler, response.request, wait)
                yield self.page_request(listing, cursor, attempt + 1)
                return
            listing.empty_in_row += 1
            listing.open_gap(listing.lowest_id, cursor)
            following = api.next_cursor(cursor, posts)
            if proven or listing.empty_in_row >= EMPTY_PAGES_AT_END or following is None:
                self.end(listing, proven)
            else:
                yield self.page_request(listing, following)
            return
        listing.empty_in_row = 0
        listing.close_gap(max(post.post_id for post in posts))
        above = listing.lowest_id
        listing.last_page_size = len(posts)
        if api.short_page_ends_listing and len(posts) < api.page_size:
            # The board says the listing ends here; the next page checks it (posts there would
            # mean this page lost some, somewhere between the page above and that one).
            listing.open_gap(above, cursor)
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
            self.end(listing, proven=True)
        else:
            yield self.page_request(listing, following)

    def end(self, listing: Listing, proven: bool) -> None:
        """The listing ended. Unless the end is proven, what lay past the last post seen is a
        gap: the listing's last page may be the one that came back empty."""
        if listing.gap_open and not proven:
            listing.close_gap(0)
        listing.gap_open, listing.gap_cursors = False, []
        self.stop(listing, "end")

    def consider(self, listing: Listing, post: Post) -> PostItem | str | None:
        """The item to download for `post`, None to skip it, or "stop" to end the listing."""
        p = self.params
        self.count(listing, "seen")
        listing.lowest_id = post.post_id if listing.lowest_id is None else min(listing.lowest_id, post.post_id)
        if not post.md5 or not post.file_url:
            self.skip(listing, "unavailable")  # Danbooru hides the file of some posts from anonymous users
            return None
        md5 = post.md5.lower()
        if self.memory.knows(md5) or md5 in self.in_flight_md5:
            self.skip(listing, "known")
            listing.known_in_row += 1
            # N known posts in a row mean the rest is known, once the walk is past every
            # stretch that earlier runs did not see.
            gaps_passed = listing.must_reach is None or listing.lowest_id <= listing.must_reach
            if listing.early_stop and listing.known_in_row >= p.stop_after_known and gaps_passed:
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
            status = failure.value.response.status
            logger.error("%s answered HTTP %s after retries; stopping this source", request.url, status, extra=FILE_ONLY)
            listing.error = f"HTTP {status} after retries"
            self.stop(listing, "listing_failed")
        else:
            # Connection refused, DNS, timeouts: the CLI says it once per host; the traceback
            # of each attempt is in crawl.log.
            logger.error("%s failed: %s; stopping this source", request.url, failure.value, extra=FILE_ONLY)
            listing.error = str(failure.value).strip().rstrip(".")
            self.stop(listing, "listing_failed")
