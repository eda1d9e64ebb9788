"""The crawl's memory: append-only JSON-lines logs keyed by the API's md5.

manifest.jsonl has one line per stored post, appended only after its image is in place;
rejected.jsonl has one line per post whose bytes were refused for good (corrupt, md5
mismatch, not an image, too large), so a refresh neither downloads them again nor lets
them break its run of known posts. A post whose md5 either log lists is never fetched
again, on any site. Lines are appended with flush + fsync, so a crawl killed at any moment
keeps every line it wrote; a line cut short by the kill (the only possible damage) is
trimmed when the log is next opened.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from crawlers.params import MissingInputError

logger = logging.getLogger(__name__)

MANIFEST_FIELDS = ("site", "post_id", "md5", "sha256", "path", "tags", "rating", "width", "height",
                   "bytes", "source_url", "fetched_at")
REJECTED_FIELDS = ("site", "post_id", "md5", "reason", "source_url", "fetched_at")


class PostLog:
    def __init__(self, path: Path | str, fields: tuple[str, ...] = MANIFEST_FIELDS):
        self.path = Path(path)
        self.fields = fields
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.md5s: set[str] = set()
        self.sha256s: set[str] = set()
        self.count = 0
        self._trim_partial_line()
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    try:
                        entry = json.loads(line)
                        self.md5s.add(entry["md5"])
                        if "sha256" in entry:
                            self.sha256s.add(entry["sha256"])
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ValueError(f"{self.path}:{number}: not a manifest line ({exc})") from None
                    self.count += 1
        self._handle = open(self.path, "a", encoding="utf-8")

    def _trim_partial_line(self) -> None:
        # A kill during write() can leave a last line without its newline; appending after it
        # would glue two records together. Its image, if any, stays an unlisted orphan.
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a partial last line left by an interrupted crawl", self.path)
        with open(self.path, "r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())

    def knows_md5(self, md5: str) -> bool:
        return md5.lower() in self.md5s

    def knows_sha256(self, sha256: str) -> bool:
        return sha256 in self.sha256s

    def append(self, entry: dict[str, Any]) -> None:
        """Record one post; for the manifest, only once its image is complete and in place."""
        missing = [name for name in self.fields if name not in entry]
        if missing:
            raise ValueError(f"manifest entry lacks {', '.join(missing)}")
        self._handle.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.md5s.add(entry["md5"])
        if "sha256" in entry:
            self.sha256s.add(entry["sha256"])
        self.count += 1

    def close(self) -> None:
        self._handle.close()


def read_log(path: Path | str, *, strings: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every complete line of a log, as the crop stage and the tests read it. A last line cut
    short by a killed crawl is skipped (the next crawl trims it); any other bad line, or one
    without a string under each key of `strings`, is an error that names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; run the crawl_anime stage first")
    lines = path.read_text(encoding="utf-8").split("\n")
    # The last element is "" for a complete file, or a partial line cut by a kill.
    if lines[-1]:
        logger.warning("%s: ignoring a partial last line (an interrupted crawl)", path)
    entries = []
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(entry, dict):
            raise ValueError(f"{path}:{number}: a log line must be a JSON object")
        for key in strings:
            if not isinstance(entry.get(key), str):
                raise ValueError(f"{path}:{number}: a log line needs a {key!r} string")
        entries.append(entry)
    return entries


class CrawlMemory:
    """Both logs of one output folder; `knows(md5)` is the question the spiders ask."""

    def __init__(self, out_dir: Path | str):
        out_dir = Path(out_dir)
        self.manifest = PostLog(out_dir / "manifest.jsonl", MANIFEST_FIELDS)
        self.rejected = PostLog(out_dir / "rejected.jsonl", REJECTED_FIELDS)

    def knows(self, md5: str) -> bool:
        return self.manifest.knows_md5(md5) or self.rejected.knows_md5(md5)

    def close(self) -> None:
        self.manifest.close()
        self.rejected.close()
