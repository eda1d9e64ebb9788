"""The anime-image crawler: a scrapy project for Gelbooru 0.2, Moebooru and Danbooru boards.

`python -m crawlers crawl` (the DVC stage `crawl_anime`) crawls every source of
`anime.crawl.sources` (params.py) into one store, `data/raw/anime/`:

    images/<sha256>.<ext>   every stored image, named by the SHA-256 of its bytes
    manifest.jsonl          one line per stored post: the crawl's memory (never fetched again)
    crawl_stats.json        the last run's summary (posts seen, new, skipped, bytes, time)
    crawl_state.json        per listing: whether the last run walked it (enables the early stop) and
                            the id ranges it did not see (gaps.py; the next walk passes them first)
    crawl.log               the last run's whole log (the console gets one line per event)

The crawler is the bottom layer: it imports nothing from `pipeline` (tests/crawlers/
test_layering.py), which builds on it (the params type, the log reader, atomic writes).
"""
