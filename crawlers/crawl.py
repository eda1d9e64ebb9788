"""One crawl run: open the crawl's memory, run the spider, write the summary and the state."""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scrapy.crawler import CrawlerProcess

from crawlers.manifest import CrawlMemory
from crawlers.pipelines import IMAGES_SUBDIR, remove_temp_files
from crawlers.settings import build_settings
from crawlers.spiders import SPIDERS
from pipeline.config import AnimeCrawlParams
from pipeline.datasets import write_json_atomic

logger = logging.getLogger(__name__)

STATS_FILE = "crawl_stats.json"
STATE_FILE = "crawl_state.json"
SKIP_REASONS = ("known", "rating", "size", "bad_image", "md5_mismatch", "content_type", "too_large",
                "duplicate", "unavailable", "offsite", "robots", "failed")
# A run that stopped for one of these walked the listing without gaps.
CLEAN_STOPS = {"end", "known", "max_posts"}


class CrawlError(RuntimeError):
    """The crawl could not read the board's listing (robots.txt, HTTP errors)."""


def listing_key(params: AnimeCrawlParams) -> str:
    """The listing a state entry describes: one out folder may collect several boards."""
    return f"{params.site} {params.base_url} tags={params.tags!r} ratings={sorted(params.ratings)}"


def read_state(out_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((out_dir / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def run_crawl(params: AnimeCrawlParams, out_dir: Path | str, settings_overrides: dict[str, str] | None = None) -> dict[str, Any]:
    out_dir = Path(out_dir)
    (out_dir / IMAGES_SUBDIR).mkdir(parents=True, exist_ok=True)
    removed = remove_temp_files(out_dir / IMAGES_SUBDIR)
    state, key = read_state(out_dir), listing_key(params)
    early_stop = bool(state.get(key, {}).get("clean"))
    # Marked unclean until the end, so a kill at any point disables the next run's early stop.
    state[key] = {"clean": False, "started_at": _now()}
    write_json_atomic(out_dir / STATE_FILE, state)

    memory = CrawlMemory(out_dir)
    started = time.monotonic()
    process = CrawlerProcess(build_settings(params, out_dir, settings_overrides))
    crawler = process.create_crawler(SPIDERS[params.site])
    try:
        process.crawl(crawler, params=params, memory=memory, early_stop=early_stop)
        process.start()
    finally:
        memory.close()
    seconds = time.monotonic() - started

    stats = crawler.stats.get_stats()
    new = int(stats.get("anime/new", 0))
    summary = {
        "site": params.site,
        "base_url": params.base_url,
        "posts_seen": int(stats.get("anime/seen", 0)),
        "new": new,
        "skipped": {reason: int(stats.get(f"anime/skipped/{reason}", 0)) for reason in SKIP_REASONS},
        "bytes": int(stats.get("anime/bytes", 0)),
        "seconds": round(seconds, 3),
        "images_per_second": round(new / seconds, 2) if seconds > 0 else 0.0,
        "pages": int(stats.get("anime/pages", 0)),
        "stop_reason": stats.get("anime/stop_reason", "unknown"),
        "finish_reason": stats.get("finish_reason"),
        "early_stop_enabled": early_stop,
        "manifest_posts": memory.manifest.count,
        "temp_files_removed": removed,
        "finished_at": _now(),
    }
    write_json_atomic(out_dir / STATS_FILE, summary)
    clean = (summary["stop_reason"] in CLEAN_STOPS and summary["finish_reason"] == "finished"
             and summary["skipped"]["failed"] == 0)
    state[key] = {"clean": clean, "finished_at": summary["finished_at"]}
    write_json_atomic(out_dir / STATE_FILE, state)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    skipped = ", ".join(f"{reason} {count}" for reason, count in summary["skipped"].items() if count) or "none"
    return (f"crawl {summary['site']} {summary['base_url']}: {summary['posts_seen']} posts seen, "
            f"{summary['new']} new, skipped: {skipped}; {summary['bytes'] / 1e6:.1f} MB in "
            f"{summary['seconds']:.1f} s ({summary['images_per_second']} images/s); "
            f"stopped: {summary['stop_reason']}; manifest: {summary['manifest_posts']} posts")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
