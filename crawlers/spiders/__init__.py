"""One spider per board API; `SPIDERS` maps `anime.crawl.site` to its class."""

from crawlers.spiders.danbooru import DanbooruSpider
from crawlers.spiders.gelbooru import GelbooruSpider
from crawlers.spiders.moebooru import MoebooruSpider

SPIDERS = {cls.name: cls for cls in (GelbooruSpider, MoebooruSpider, DanbooruSpider)}
