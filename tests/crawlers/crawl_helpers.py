"""Helpers for the crawler tests: every crawl is the real CLI in a subprocess (a Twisted
reactor cannot restart inside one pytest process) against the mock board in mock_board.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

REPO = Path(__file__).resolve().parents[2]
USER_AGENT = "dcgan-pipeline-tests/0 (+https://example.invalid/dcgan-pipeline)"


def source(board, base_url: str | None = None, **overrides) -> dict:
    """One entry of anime.crawl.sources for a mock board (base_url: another name for its host)."""
    return {"site": board.site, "base_url": base_url or board.base_url, "tags": "1girl", "page_size": 5, **overrides}


def crawl_params(board, **overrides) -> dict:
    """A params file for one board (the single-board form, which still reads) or, given a list
    of `source()` entries, for several."""
    if isinstance(board, list):
        crawl = {"sources": board}
    else:
        crawl = {"site": board.site, "base_url": board.base_url, "tags": "1girl", "page_size": 5}
    crawl.update({"min_width": 48, "min_height": 48, "download_delay": 0, "stop_after_known": 3,
                  "user_agent": USER_AGENT})
    crawl.update(overrides)
    return {"runs": {}, "anime": {"crawl": crawl}}


def crawl_command(tmp_path: Path, board, out: Path, **overrides) -> list[str]:
    params = tmp_path / f"params-{'sources' if isinstance(board, list) else board.site}.yaml"
    params.write_text(yaml.safe_dump(crawl_params(board, **overrides)))
    # Short backoff so retry tests stay quick; Retry-After is still honoured in full.
    return [sys.executable, "-m", "crawlers", "crawl", "--params", str(params), "--out", str(out),
            "-s", "RETRY_BACKOFF_BASE=0.05"]


def run_crawl(tmp_path: Path, board, out: Path, send_log: Path | None = None,
              **overrides) -> tuple[subprocess.CompletedProcess, dict]:
    """The crawler's CLI on `board`; with `send_log`, every request's send time goes there
    (send_times.py; read it back with sent())."""
    command, env = crawl_command(tmp_path, board, out, **overrides), None
    if send_log is not None:
        command += ["-s", 'DOWNLOAD_HANDLERS={"http": "tests.crawlers.send_times.SendTimeHandler"}']
        env = {**os.environ, "CRAWL_SEND_LOG": str(send_log)}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    stats_file = out / "crawl_stats.json"
    summary = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    return result, summary


def manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_manifest_integrity(out: Path) -> list[dict]:
    """Every listed image exists, is whole (its sha256 matches its name) and is listed once."""
    entries = manifest(out)
    for entry in entries:
        path = out / entry["path"]
        assert path.is_file(), f"manifest lists {entry['path']} but the file is missing"
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == path.name.split(".")[0]
        assert hashlib.md5(data).hexdigest() == entry["md5"]
        assert len(data) == entry["bytes"]
    assert len({e["md5"] for e in entries}) == len(entries), "a post is listed twice"
    assert len({e["sha256"] for e in entries}) == len(entries), "the same bytes are listed twice"
    return entries


def sent(send_log: Path, port: int | None = None, robots: bool = False) -> list[tuple[float, str]]:
    """(time.monotonic() when the crawler sent it, url) of each request in a send log, in order;
    only those to `port` if given, robots.txt only if asked for."""
    rows = []
    for line in send_log.read_text().splitlines():
        stamp, _, url = line.partition(" ")
        if (robots or not url.endswith("/robots.txt")) and (port is None or urlsplit(url).port == port):
            rows.append((float(stamp), url))
    return sorted(rows)
