"""The one item the spiders yield: a board post that passed the API-side filters."""

from __future__ import annotations

import scrapy


class PostItem(scrapy.Item):
    site = scrapy.Field()
    post_id = scrapy.Field()
    md5 = scrapy.Field()  # lower-case hex, from the API; checked against the bytes
    tags = scrapy.Field()  # list of str
    rating = scrapy.Field()  # canonical name (crawlers.params.RATINGS)
    width = scrapy.Field()  # from the API, then replaced by the decoded image's size
    height = scrapy.Field()
    source_url = scrapy.Field()
    file_urls = scrapy.Field()  # FilesPipeline input: [source_url]
    files = scrapy.Field()  # FilesPipeline output
    source = scrapy.Field()  # index into anime.crawl.sources (per-source counters)
    stored = scrapy.Field()  # set by BoardFilesPipeline: sha256, ext, path, bytes, width, height
