"""A local image board that speaks the Gelbooru 0.2, Moebooru and Danbooru APIs.

Standard-library http.server on 127.0.0.1, port 0, in a thread. It pages like the real
boards (Danbooru's `b<id>` included, hidden posts dropped after the limit is applied),
serves real PNG/JPEG images made with Pillow, a robots.txt, and misbehaves on request:
queued error responses (429 with Retry-After, 500, ...) per page or image, listing pages
that come back empty for a while (a board under load: `empty_for`), wrong md5s, wrong
content types, truncated files, slow images. Every request is logged.

    board = MockBoard("gelbooru", [make_post(i) for i in range(1, 31)])
    with board:                      # starts the server; board.base_url is set
        ...
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

PAGE_LIMITS = {"gelbooru": 100, "moebooru": 100, "danbooru": 200}
SITE_RATINGS = {
    "gelbooru": {r: r for r in ("general", "safe", "sensitive", "questionable", "explicit")},
    "moebooru": {"safe": "s", "general": "s", "questionable": "q", "explicit": "e", "sensitive": "q"},
    "danbooru": {"general": "g", "safe": "g", "sensitive": "s", "questionable": "q", "explicit": "e"},
}


def image_bytes(post_id: int, width: int = 64, height: int = 64, fmt: str = "PNG", noise: bool = False) -> bytes:
    """A real image whose first pixel encodes the post id, so every post's bytes differ."""
    if noise:
        image = Image.effect_noise((width, height), 64).convert("RGB")
    else:
        image = Image.new("RGB", (width, height), ((post_id * 37) % 256, (post_id * 91) % 256, 128))
    image.putpixel((0, 0), ((post_id >> 16) & 255, (post_id >> 8) & 255, post_id & 255))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@dataclass
class MockPost:
    id: int
    data: bytes
    width: int
    height: int
    rating: str = "general"  # canonical; each API writes it its own way
    tags: list[str] = field(default_factory=lambda: ["1girl", "solo"])
    ext: str = "png"
    content_type: str | None = None  # default from ext
    api_md5: str | None = None  # default: the md5 of data
    hidden: bool = False  # dropped from pages after the limit (Danbooru's behaviour)
    file_host: str | None = None  # e.g. "localhost:<port>" to point the file off-site

    @property
    def md5(self) -> str:
        return self.api_md5 or hashlib.md5(self.data).hexdigest()


def make_post(post_id: int, *, width: int = 64, height: int = 64, fmt: str = "PNG", **kwargs) -> MockPost:
    data = image_bytes(post_id, width, height, fmt, noise=kwargs.pop("noise", False))
    return MockPost(post_id, data, width, height, ext="jpg" if fmt == "JPEG" else "png", **kwargs)


class MockBoard:
    def __init__(self, site: str, posts: list[MockPost] | None = None, *, robots: str | None = None,
                 image_delay: float = 0.0, honor_rating_query: bool = True):
        assert site in PAGE_LIMITS, site
        self.site = site
        self.posts: dict[int, MockPost] = {}
        self.add(posts or [])
        self.robots = robots
        self.image_delay = image_delay
        self.honor_rating_query = honor_rating_query
        # "page:<cursor>" or "image:<post id>" -> queued (status, headers) served before success
        self.failures: dict[str, deque[tuple[int, dict[str, str]]]] = defaultdict(deque)
        # "page:<cursor>" -> how many more requests of that page get an empty (200) answer
        self.hiccups: dict[str, int] = {}
        self.log: list[dict] = []
        self.images_served = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ control
    def add(self, posts: list[MockPost]) -> None:
        for post in posts:
            self.posts[post.id] = post

    def fail(self, key: str, *responses: tuple[int, dict[str, str]]) -> None:
        self.failures[key].extend(responses)

    def empty_for(self, cursor: str, times: int = 1) -> None:
        """The next `times` requests of the page at `cursor` ("" for Danbooru's first page) get
        a well-formed empty listing, as a board under load answers."""
        self.hiccups[f"page:{cursor}"] = self.hiccups.get(f"page:{cursor}", 0) + times

    def __enter__(self) -> "MockBoard":
        board = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                board.handle(self)

            def log_message(self, *args):  # keep pytest output quiet
                pass

        class Server(ThreadingHTTPServer):
            # The default listen backlog of 5 drops SYNs when the crawler opens its eight
            # connections at once; the kernel's 1 s / 3 s SYN retries then look like a slow crawl.
            request_queue_size = 128

            def handle_error(self, request, client_address):
                pass  # the crawler aborting an oversized download resets its connection

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ queries on the log
    def requests(self, kind: str | None = None) -> list[dict]:
        with self.lock:
            return [entry for entry in self.log if kind is None or entry["kind"] == kind]

    def image_requests(self, post_id: int | None = None) -> list[dict]:
        return [e for e in self.requests("image") if post_id is None or e["post_id"] == post_id]

    # ------------------------------------------------------------------ serving
    def handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        entry = {"time": time.monotonic(), "path": request.path, "host": request.headers.get("Host"),
                 "user_agent": request.headers.get("User-Agent"), "kind": "other", "post_id": None}
        try:
            status, headers, body = self.route(url.path, query, entry)
        except Exception as exc:  # a bug in the mock should show, not hang the crawl
            status, headers, body = 500, {"Content-Type": "text/plain"}, repr(exc).encode()
        entry["status"] = status
        with self.lock:
            self.log.append(entry)
        if entry["kind"] == "image" and self.image_delay:
            time.sleep(self.image_delay)
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        try:
            request.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the crawler aborted an oversized download
        if entry["kind"] == "image" and status == 200:
            with self.lock:
                self.images_served += 1

    def route(self, path: str, query: dict[str, str], entry: dict):
        if path == "/robots.txt":
            entry["kind"] = "robots"
            if self.robots is None:
                return 404, {"Content-Type": "text/plain"}, b"not found"
            return 200, {"Content-Type": "text/plain"}, self.robots.encode()
        if path.startswith("/images/"):
            entry["kind"] = "image"
            post_id = int(path.rsplit("/", 1)[1].split(".")[0])
            entry["post_id"] = post_id
            queued = self.failures.get(f"image:{post_id}")
            if queued:
                status, headers = queued.popleft()
                return status, {"Content-Type": "text/plain", **headers}, b"try again"
            post = self.posts.get(post_id)
            if post is None:
                return 404, {"Content-Type": "text/plain"}, b"no such file"
            content_type = post.content_type or ("image/jpeg" if post.ext == "jpg" else "image/png")
            return 200, {"Content-Type": content_type}, post.data
        api = {"gelbooru": "/index.php", "moebooru": "/post.json", "danbooru": "/posts.json"}[self.site]
        if path != api or (self.site == "gelbooru" and (query.get("page"), query.get("s"), query.get("q")) != ("dapi", "post", "index")):
            return 404, {"Content-Type": "text/plain"}, b"no such API"
        entry["kind"] = "page"
        limit = int(query.get("limit", 20))
        if limit > PAGE_LIMITS[self.site]:
            return 400, {"Content-Type": "application/json"}, b'{"error": "limit too large"}'
        cursor = query.get("pid" if self.site == "gelbooru" else "page", "")
        entry["cursor"] = cursor
        entry["tags"] = query.get("tags", "")
        queued = self.failures.get(f"page:{cursor}")
        if queued:
            status, headers = queued.popleft()
            return status, {"Content-Type": "text/plain", **headers}, b"slow down"
        posts = self.page(cursor, limit, query.get("tags", ""))
        if posts is None:
            return 410, {"Content-Type": "application/json"}, b'{"error": "page limit"}'
        with self.lock:
            hiccup = self.hiccups.get(f"page:{cursor}", 0) > 0
            if hiccup:
                self.hiccups[f"page:{cursor}"] -= 1
        entry["hiccup"] = hiccup
        if hiccup:
            posts = []
        entry["returned"] = [post.id for post in posts]
        if not posts and self.site == "gelbooru":
            return 200, {"Content-Type": "application/json"}, b""  # Safebooru's empty page
        return 200, {"Content-Type": "application/json"}, json.dumps([self.to_json(p) for p in posts]).encode()

    def matches(self, post: MockPost, tags: str) -> bool:
        site_rating = SITE_RATINGS[self.site][post.rating]
        for token in tags.split():
            negate = token.startswith("-")
            token = token.lstrip("-")
            if token.startswith("rating:"):
                if not self.honor_rating_query:
                    continue
                hit = site_rating == token.split(":", 1)[1]
            else:
                hit = token in post.tags
            if hit == negate:
                return False
        return True

    def page(self, cursor: str, limit: int, tags: str) -> list[MockPost] | None:
        listing = sorted((p for p in self.posts.values() if self.matches(p, tags)), key=lambda p: -p.id)
        if self.site == "danbooru" and cursor.startswith("b"):
            below = int(cursor[1:])
            chosen = [p for p in listing if p.id < below][:limit]
        else:
            number = int(cursor or (0 if self.site == "gelbooru" else 1))
            if self.site != "gelbooru":
                if self.site == "danbooru" and number > 2:
                    return None  # stands in for Danbooru's 1000-page limit: use b<id>
                number -= 1
            chosen = listing[number * limit:(number + 1) * limit]
        return [p for p in chosen if not p.hidden]

    def file_url(self, post: MockPost) -> str:
        host = post.file_host or f"127.0.0.1:{self.port}"
        return f"http://{host}/images/{post.id}.{post.ext}"

    def to_json(self, post: MockPost) -> dict:
        rating = SITE_RATINGS[self.site][post.rating]
        tags = " ".join(post.tags)
        if self.site == "gelbooru":  # Safebooru's shape: no file_url, "hash" for the md5
            out = {"id": post.id, "hash": post.md5, "width": post.width, "height": post.height,
                   "rating": rating, "tags": tags, "directory": "0", "image": f"{post.id}.{post.ext}"}
            if post.file_host:
                out["file_url"] = self.file_url(post)
            return out
        if self.site == "moebooru":
            return {"id": post.id, "md5": post.md5, "file_url": self.file_url(post), "width": post.width,
                    "height": post.height, "rating": rating, "tags": tags, "file_size": len(post.data)}
        return {"id": post.id, "md5": post.md5, "file_url": self.file_url(post), "image_width": post.width,
                "image_height": post.height, "rating": rating, "tag_string": tags, "file_size": len(post.data)}
