"""What the crawl prints: the full log goes to <out>/crawl.log (scrapy's LOG_FILE, tracebacks
included); the console gets what a person watching needs, one line each.

An unreachable board used to print two ~60-line tracebacks (scrapy's robots.txt and retry
middlewares) before the project's own error. On the console: the project's lines, scrapy's
progress (logstats) and other warnings, never a traceback; download failures are left to
the spider and the CLI, which say once per failed host what happened (crawlers/__main__.py).
"""

from __future__ import annotations

import logging

LOG_FILE = "crawl.log"
# Download failures, already reported by the spider (per listing) and the CLI (per host).
_QUIET = ("scrapy.downloadermiddlewares.retry", "scrapy.downloadermiddlewares.robotstxt")
# A record logged with extra={"console": False} goes to crawl.log only.
FILE_ONLY = {"console": False}


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False or record.name.startswith(_QUIET):
            return False
        if record.name.startswith("crawlers") or record.name == "scrapy.extensions.logstats":
            return record.levelno >= logging.INFO
        return record.levelno >= logging.WARNING


class _OneLineFormatter(logging.Formatter):
    """The message without its traceback (crawl.log has it)."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        return super().format(record).replace("\n", " ")


def add_console_handler(fmt: str, datefmt: str) -> logging.Handler:
    """Beside scrapy's root handler (the log file): the console's share of the log, on stderr."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.INFO)
    handler.addFilter(_ConsoleFilter())
    handler.setFormatter(_OneLineFormatter(fmt=fmt, datefmt=datefmt))
    logging.root.addHandler(handler)
    return handler
