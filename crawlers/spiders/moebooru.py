"""Moebooru (Konachan, yande.re): /post.json?page=<n from 1>&limit=<n>&tags=<tags>."""

from __future__ import annotations

from typing import Any

from crawlers.spiders.base import BoardApi, Post


class MoebooruApi(BoardApi):
    name = "moebooru"
    RATING_NAMES = {"s": "safe", "q": "questionable", "e": "explicit"}
    QUERY_RATINGS = ("s", "q", "e")

    def first_cursor(self) -> int:
        return 1

    def page_url(self, cursor: int) -> str:
        return self.api_url("/post.json", {"page": cursor, "limit": self.page_size, "tags": self.query_tags()})

    def next_cursor(self, cursor: int, posts: list[Post]) -> int:
        return cursor + 1

    def parse_post(self, raw: dict[str, Any]) -> Post:
        return Post(
            post_id=int(raw["id"]),
            md5=raw.get("md5"),
            file_url=self.absolute(raw.get("file_url")),
            width=int(raw.get("width") or 0),
            height=int(raw.get("height") or 0),
            rating=self.rating_name(raw.get("rating")),
            tags=str(raw.get("tags", "")).split(),
            file_size=int(raw["file_size"]) if raw.get("file_size") else None,
        )
