"""Gelbooru 0.2 DAPI (Safebooru, Gelbooru and their clones).

    index.php?page=dapi&s=post&q=index&json=1&pid=<page index from 0>&limit=<n>&tags=<tags>

Safebooru answers a JSON list without file URLs (the file lives at
images/<directory>/<image>) and an empty body past the end; gelbooru.com wraps the list in
{"post": [...]} and gives `file_url`. Both are read here.
"""

from __future__ import annotations

import json
from typing import Any

from crawlers.spiders.base import BoardApi, Post


class GelbooruApi(BoardApi):
    name = "gelbooru"
    RATING_NAMES = {
        "general": "general", "safe": "safe", "sensitive": "sensitive",
        "questionable": "questionable", "explicit": "explicit",
        "g": "general", "s": "safe", "q": "questionable", "e": "explicit",
    }
    QUERY_RATINGS = ("general", "safe", "sensitive", "questionable", "explicit")

    def first_cursor(self) -> int:
        return 0

    def page_url(self, cursor: int) -> str:
        return self.api_url("/index.php", {
            "page": "dapi", "s": "post", "q": "index", "json": 1,
            "pid": cursor, "limit": self.page_size, "tags": self.query_tags(),
        })

    def next_cursor(self, cursor: int, posts: list[Post]) -> int:
        return cursor + 1

    def raw_posts(self, response) -> list[dict[str, Any]]:
        text = response.text.strip()
        if text.startswith("{"):
            data = json.loads(text)
            posts = data.get("post", [])
            return posts if isinstance(posts, list) else [posts]
        return super().raw_posts(response)

    def parse_post(self, raw: dict[str, Any]) -> Post:
        file_url = raw.get("file_url")
        if not file_url and raw.get("directory") is not None and raw.get("image"):
            file_url = f"{self.base_url}/images/{raw['directory']}/{raw['image']}"
        return Post(
            post_id=int(raw["id"]),
            md5=raw.get("md5") or raw.get("hash"),
            file_url=self.absolute(file_url),
            width=int(raw.get("width") or 0),
            height=int(raw.get("height") or 0),
            rating=self.rating_name(raw.get("rating")),
            tags=str(raw.get("tags", "")).split(),
        )
