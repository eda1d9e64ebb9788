"""Danbooru: /posts.json?page=b<id>&limit=<n>&tags=<tags>.

Numbered pages stop at 1000 (HTTP 410), so after the first page the spider asks for the
posts below the lowest id seen ("b<id>"), which has no depth limit. Danbooru drops posts a
visitor may not see after applying the limit, so a page can come back short or empty
while older posts exist: a short page says nothing about the end. After an empty page the
spider skips one id window and probes on. Only "b1" (nothing can lie below id 1) proves the
end: any other empty window may be the board under load.
Note: Danbooru's robots.txt disallows the JSON API, see docs/crawling.md.
"""

from __future__ import annotations

from typing import Any

from crawlers.spiders.base import BoardApi, Post


class DanbooruApi(BoardApi):
    name = "danbooru"
    RATING_NAMES = {"g": "general", "s": "sensitive", "q": "questionable", "e": "explicit"}
    QUERY_RATINGS = ("g", "s", "q", "e")

    def first_cursor(self) -> str | None:
        return None  # the newest posts

    def page_url(self, cursor: str | None) -> str:
        query: dict[str, Any] = {"limit": self.page_size, "tags": self.query_tags()}
        if cursor is not None:
            query = {"page": cursor, **query}
        return self.api_url("/posts.json", query)

    def next_cursor(self, cursor: str | None, posts: list[Post]) -> str | None:
        if posts:
            return f"b{min(post.post_id for post in posts)}"
        if cursor is None:
            return None  # nothing visible at all
        below = int(cursor[1:]) - self.page_size
        return f"b{below}" if below > 1 else None

    short_page_ends_listing = False  # hidden posts shorten any page

    def proven_end(self, cursor: str | None, last_page_size: int | None) -> bool:
        return cursor is not None and int(cursor[1:]) <= 1

    def parse_post(self, raw: dict[str, Any]) -> Post:
        return Post(
            post_id=int(raw["id"]),
            md5=raw.get("md5"),
            file_url=self.absolute(raw.get("file_url")),
            width=int(raw.get("image_width") or 0),
            height=int(raw.get("image_height") or 0),
            rating=self.rating_name(raw.get("rating")),
            tags=str(raw.get("tag_string", "")).split(),
            file_size=int(raw["file_size"]) if raw.get("file_size") else None,
        )
