"""A download handler for the crawler tests: scrapy's own HTTP handler, writing down the moment
each request leaves the downloader, after its politeness delay. The politeness tests measure
the gaps there, where the crawler sends, and not in the mock board's handler thread, which a
loaded machine may run late (one gap once came out 1.6 ms there for a 250 ms delay).

Enabled per crawl by crawl_helpers.run_crawl(send_log=...): `-s DOWNLOAD_HANDLERS=...` on the
crawler's CLI and $CRAWL_SEND_LOG naming the file, one "<time.monotonic()> <url>" per line.
"""

from __future__ import annotations

import os
import time

from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler


class SendTimeHandler(HTTP11DownloadHandler):
    async def download_request(self, request):
        sent = time.monotonic()  # before anything else: the request is on its way from here
        with open(os.environ["CRAWL_SEND_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{sent!r} {request.url}\n")
        return await super().download_request(request)
