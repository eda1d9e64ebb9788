"""The spider (base.py) and one API per board; `APIS` maps a source's `site` to its API class."""

from crawlers.spiders.base import BoardSpider
from crawlers.spiders.danbooru import DanbooruApi
from crawlers.spiders.gelbooru import GelbooruApi
from crawlers.spiders.moebooru import MoebooruApi

APIS = {cls.name: cls for cls in (GelbooruApi, MoebooruApi, DanbooruApi)}

__all__ = ["APIS", "BoardSpider"]
