"""CLI: `python -m crawlers crawl [--params params.yaml] [--out data/raw/anime] [-s KEY=VALUE]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlparse

from crawlers.params import PARAMS_FILE, RAW_ANIME_DIR, ParamsError, load_crawl_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crawlers", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    crawl = commands.add_parser("crawl", help="crawl the boards of anime.crawl.sources into the raw anime set")
    crawl.add_argument("--params", type=Path, default=PARAMS_FILE, help="params file (default: %(default)s)")
    crawl.add_argument("--out", type=Path, default=RAW_ANIME_DIR, help="output folder (default: %(default)s)")
    crawl.add_argument("-s", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a scrapy setting (e.g. LOG_LEVEL=DEBUG)")
    args = parser.parse_args(argv)

    try:
        params = load_crawl_params(args.params)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key] = value

    # Imported here so that `--help` and params errors do not pay for importing scrapy.
    from crawlers.crawl import format_summary, run_crawl

    summary = run_crawl(params, args.out, overrides)
    print(format_summary(summary), flush=True)
    # Every source ran to its end; the posts of the sources that worked are kept either way.
    # One line per host that failed (two boards on one host fail together), the details in the log.
    status = 0
    failed: dict[str, list[dict]] = {}
    for source in summary["sources"]:
        if source["stop_reason"] == "robots":
            print(f"error: robots.txt forbids the API of {source['base_url']} (see the log above and "
                  "docs/crawling.md)", file=sys.stderr)
            status = 1
        elif source["stop_reason"] in ("listing_failed", "unknown"):
            failed.setdefault(urlparse(source["base_url"]).netloc, []).append(source)
    for host, sources in failed.items():
        reasons = "; ".join(dict.fromkeys(source.get("error") or "stopped early" for source in sources))
        print(f"error: {host}: could not read the listing of {', '.join(s['base_url'] for s in sources)}: "
              f"{reasons} (details in {summary['log_file']})", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
