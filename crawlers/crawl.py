"""One crawl run: open the crawl's memory, run the spider over every source, write the summary
and the state."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from scrapy.crawler import CrawlerProcess

from crawlers.atomic import write_json_atomic
from crawlers.console import add_console_handler
from crawlers.gaps import read_gaps
from crawlers.manifest import CrawlMemory
from crawlers.params import AnimeCrawlParams, BoardSource
from crawlers.pipelines import IMAGES_SUBDIR, remove_temp_files, utc_now
from crawlers.settings import build_settings
from crawlers.spiders import BoardSpider

logger = logging.getLogger(__name__)

STATS_FILE = "crawl_stats.json"
STATE_FILE = "crawl_state.json"
SKIP_REASONS = ("known", "rating", "size", "too_many_pixels", "bad_image", "md5_mismatch", "content_type",
                "too_large", "duplicate", "unavailable", "offsite", "robots", "failed")
# A listing that stopped for one of these was walked down to the bottom, or down to posts that
# an earlier walk had seen, past every stretch an earlier walk missed. Not max_posts: below
# that stop lies unexplored listing, so the next run must walk past its known posts to grow
# the set. A walk is `complete` when it also left no gap (crawlers/gaps.py).
COMPLETE_STOPS = {"end", "known"}
# The reasons a source's listing could not be read; the CLI exits with an error.
FAILED_STOPS = ("robots", "listing_failed", "unknown")


class CrawlError(RuntimeError):
    """The crawl could not read the board's listing (robots.txt, HTTP errors)."""


def listing_key(source: BoardSource) -> str:
    """The listing a state entry describes: one out folder may collect several boards."""
    return source.listing_key


def read_state(out_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((out_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def overall_stop(reasons: list[str]) -> str:
    """One stop reason for the run: a failure if any source failed, else the first of
    max_posts, known, end that some source stopped for."""
    for reason in (*FAILED_STOPS, "max_posts", "known", "end"):
        if reason in reasons:
            return reason
    return reasons[0] if reasons else "unknown"


def run_crawl(params: AnimeCrawlParams, out_dir: Path | str, settings_overrides: dict[str, str] | None = None) -> dict[str, Any]:
    out_dir = Path(out_dir)
    (out_dir / IMAGES_SUBDIR).mkdir(parents=True, exist_ok=True)
    removed = remove_temp_files(out_dir / IMAGES_SUBDIR)
    state = read_state(out_dir)
    keys = [listing_key(source) for source in params.sources]
    # Per listing: whether the last run walked it to its end (or its known posts), which
    # enables the early stop, and the stretches it did not see, which the early stop waits for.
    # Entries from before gaps say `complete` for a walk that had none.
    early_stop, gaps = [], []
    for key in keys:
        entry = state.get(key) if isinstance(state.get(key), dict) else {}
        old_gaps = read_gaps(entry)
        early_stop.append(old_gaps is not None and bool(entry.get("walked", entry.get("complete"))))
        gaps.append(old_gaps or [])
    # Marked not walked until the end, so a kill at any point disables the next run's early
    # stop (a full walk, which passes every gap); the gaps are kept for a person to read.
    for key, old_gaps in zip(keys, gaps):
        state[key] = {"complete": False, "walked": False, "gaps": [gap.to_json() for gap in old_gaps],
                      "started_at": utc_now()}
    write_json_atomic(out_dir / STATE_FILE, state)

    memory = CrawlMemory(out_dir)
    started = time.monotonic()
    settings = build_settings(params, out_dir, settings_overrides)
    process = CrawlerProcess(settings)  # its root handler writes LOG_FILE
    console = add_console_handler(settings.get("LOG_FORMAT"), settings.get("LOG_DATEFORMAT"))
    crawler = process.create_crawler(BoardSpider)
    try:
        process.crawl(crawler, params=params, memory=memory, early_stop=early_stop, gaps=gaps)
        process.start()
    finally:
        memory.close()
        logging.root.removeHandler(console)
    seconds = time.monotonic() - started

    stats = crawler.stats.get_stats()
    listings = crawler.spider.listings
    finish_reason = stats.get("finish_reason")
    sources = []
    for listing in listings:
        counts = listing.counts
        sources.append({
            "site": listing.source.site,
            "base_url": listing.source.base_url,
            "tags": listing.source.tags,
            "posts_seen": counts.get("seen", 0),
            "new": counts.get("new", 0),
            "skipped": {reason: counts.get(f"skipped/{reason}", 0) for reason in SKIP_REASONS},
            "bytes": counts.get("bytes", 0),
            "pages": counts.get("pages", 0),
            "stop_reason": listing.stop_reason or "unknown",
            "early_stop_enabled": listing.early_stop,
            "empty_page_retries": counts.get("empty_page_retries", 0),
            "error": listing.error,
            "gaps": [gap.to_json() for gap in listing.gaps()],
        })
    new = int(stats.get("anime/new", 0))
    first = params.sources[0]
    summary = {
        "site": first.site if len(sources) == 1 else "+".join(s["site"] for s in sources),
        "base_url": first.base_url if len(sources) == 1 else " ".join(s["base_url"] for s in sources),
        "posts_seen": int(stats.get("anime/seen", 0)),
        "new": new,
        "skipped": {reason: int(stats.get(f"anime/skipped/{reason}", 0)) for reason in SKIP_REASONS},
        "bytes": int(stats.get("anime/bytes", 0)),
        "seconds": round(seconds, 3),
        "images_per_second": round(new / seconds, 2) if seconds > 0 else 0.0,
        "pages": int(stats.get("anime/pages", 0)),
        "stop_reason": overall_stop([s["stop_reason"] for s in sources]),
        "finish_reason": finish_reason,
        "early_stop_enabled": any(early_stop),
        "gaps": sum(len(source["gaps"]) for source in sources),
        "manifest_posts": memory.manifest.count,
        "temp_files_removed": removed,
        "log_file": settings.get("LOG_FILE"),
        "sources": sources,
        "finished_at": utc_now(),
    }
    write_json_atomic(out_dir / STATS_FILE, summary)
    for key, source in zip(keys, sources):
        walked = (source["stop_reason"] in COMPLETE_STOPS and finish_reason == "finished"
                  and source["skipped"]["failed"] == 0)
        state[key] = {"complete": walked and not source["gaps"], "walked": walked, "gaps": source["gaps"],
                      "finished_at": summary["finished_at"]}
    write_json_atomic(out_dir / STATE_FILE, state)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    skipped = ", ".join(f"{reason} {count}" for reason, count in summary["skipped"].items() if count) or "none"
    lines = [f"crawl {summary['site']} {summary['base_url']}: {summary['posts_seen']} posts seen, "
             f"{summary['new']} new, skipped: {skipped}; {summary['bytes'] / 1e6:.1f} MB in "
             f"{summary['seconds']:.1f} s ({summary['images_per_second']} images/s); "
             f"stopped: {summary['stop_reason']}{_gaps(summary['gaps'])}; "
             f"manifest: {summary['manifest_posts']} posts"]
    if len(summary["sources"]) > 1:
        for source in summary["sources"]:
            lines.append(f"  {source['site']} {source['base_url']} ({source['tags']}): {source['posts_seen']} seen, "
                         f"{source['new']} new, {source['pages']} pages, stopped: {source['stop_reason']}"
                         f"{_gaps(len(source['gaps']))}")
    return "\n".join(lines)


def _gaps(count: int) -> str:
    if not count:
        return ""
    return (f", {count} gap{'s' * (count > 1)} not seen (in {STATE_FILE}; "
            "the next run walks past them before it stops early)")


