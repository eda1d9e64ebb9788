"""`anime.crawl`: the crawler's params, checked before any request is made.

The crawler owns its params type and reads its own section of params.yaml; pipeline/config.py
nests `AnimeCrawlParams` in the full `Params` and reuses `ParamsError` and `one_line_error`.
Pipeline builds on crawlers, never the reverse (tests/crawlers/test_layering.py).

Several boards may be crawled into one store, each a `BoardSource` (site, base_url, tags,
ratings): they run in one scrapy crawler, so each host gets its own politeness slot and
two sources on one host share it. The old single-board form (site, base_url, tags, ... at
the top of anime.crawl) still reads, as a list of one source.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Fixed layout, relative to the repository root where DVC runs every stage.
PARAMS_FILE = Path("params.yaml")
RAW_ANIME_DIR = Path("data/raw/anime")

# The largest page each API serves. Gelbooru 0.2 documents 1000 but gelbooru.com caps at
# 100; Moebooru (Konachan, yande.re) caps at 100; Danbooru at 200.
PAGE_SIZE_MAX: dict[str, int] = {"gelbooru": 100, "moebooru": 100, "danbooru": 200}
# Ratings are compared after each spider maps its site's letters to these names
# (Moebooru "s" is safe, Danbooru "s" is sensitive, so raw letters would be ambiguous).
RATINGS: tuple[str, ...] = ("general", "safe", "sensitive", "questionable", "explicit")


# Marks a key that changes how fast a stage runs and no number or file it makes: dvc.yaml leaves
# it out of the stage's params, so changing it stales nothing (pipeline/config.py uses the same
# mark; tests/test_config.py checks dvc.yaml against it).
SPEED_ONLY = {"speed_only": True}


def speed_only(field) -> bool:
    """Whether a pydantic FieldInfo carries the SPEED_ONLY mark."""
    return bool((field.json_schema_extra or {}).get("speed_only"))


def result_keys(model, *, also_exclude: frozenset[str] = frozenset(), **dump_kwargs) -> dict:
    """`model` dumped without its SPEED_ONLY fields (and `also_exclude`): the keys that made an
    output, for a meta.json. Derived from the marks, so a key marked speed-only later leaves
    every meta.json at once, as it leaves the stage's tracked params."""
    speed = {name for name, field in type(model).model_fields.items() if speed_only(field)}
    return model.model_dump(exclude=speed | set(also_exclude), **dump_kwargs)


class ParamsError(ValueError):
    """Bad params; the message is one line naming the file and the key."""


class MissingInputError(FileNotFoundError):
    """A file the user named (in params.yaml or on the command line), or that an earlier stage
    makes, is missing; the message is one line naming it and saying what to do. The CLIs print
    it without a traceback; a plain FileNotFoundError (a bug) keeps its traceback. Defined here,
    in the lower layer, so the crawler's readers can raise it too."""


class _Strict(BaseModel):
    # extra="forbid": a typo in params.yaml is an error, never a silently ignored knob.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BoardSource(_Strict):
    """One board listing: which API, where, and which posts of it."""

    site: Literal["gelbooru", "moebooru", "danbooru"] = "gelbooru"
    base_url: str = "https://safebooru.org"
    tags: str = "1girl solo"
    ratings: list[str] = Field(default_factory=lambda: ["general", "safe"], min_length=1)
    # Extra hosts that serve the board's files (its CDN); anything else is off-site.
    # Subdomains of base_url's host are always allowed (e.g. files.yande.re for yande.re).
    file_hosts: list[str] = Field(default_factory=list)
    page_size: int | None = Field(None, gt=0)  # null = the API's maximum

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"must be an http(s) URL such as https://safebooru.org (got {value!r})")
        return value.rstrip("/")

    @field_validator("ratings")
    @classmethod
    def _ratings(cls, value: list[str]) -> list[str]:
        unknown = [r for r in value if r not in RATINGS]
        if unknown:
            raise ValueError(f"unknown rating {unknown[0]!r}; use {', '.join(RATINGS)}")
        return value

    @field_validator("page_size")
    @classmethod
    def _page_size(cls, value: int | None, info) -> int | None:
        site = info.data.get("site")
        limit = PAGE_SIZE_MAX.get(site)
        if value is not None and limit is not None and value > limit:
            raise ValueError(f"must be at most {limit}, the {site} API's limit")
        return value

    @property
    def effective_page_size(self) -> int:
        return self.page_size or PAGE_SIZE_MAX[self.site]

    @property
    def listing_key(self) -> str:
        """Names this listing in crawl_state.json (one out folder collects several boards)."""
        return f"{self.site} {self.base_url} tags={self.tags!r} ratings={sorted(self.ratings)}"


# The keys of the single-board form, which now belong to a source.
SOURCE_KEYS = tuple(BoardSource.model_fields)


class AnimeCrawlParams(_Strict):
    """`anime.crawl`: which boards to crawl and how politely (crawlers/, docs/crawling.md)."""

    PAGE_SIZE_MAX: ClassVar[dict[str, int]] = PAGE_SIZE_MAX
    RATINGS: ClassVar[tuple[str, ...]] = RATINGS

    sources: list[BoardSource] = Field(default_factory=lambda: [BoardSource()], min_length=1)
    min_width: int = Field(256, ge=0)
    min_height: int = Field(256, ge=0)
    # Most new posts one run downloads, over all sources together. 20,000 posts give the
    # default set about 10,000 faces (docs/crawling.md: about 5.6 hours at the polite rate).
    max_posts: int = Field(20_000, gt=0)
    stop_after_known: int = Field(200, gt=0)  # a refresh stops a listing after this many known posts in a row
    max_file_size: int = Field(20 * 1024 * 1024, gt=0)  # bytes; larger posts are skipped, larger downloads aborted
    max_pixels: int = Field(89_478_485, gt=0)  # decompression-bomb limit (Pillow's default)
    # Seconds between requests to one host; 0 = no limit. Pacing only: the same posts either way.
    download_delay: float = Field(1.0, ge=0, json_schema_extra=SPEED_ONLY)
    obey_robots: bool = True
    user_agent: str = "dcgan-pipeline/0.1 (+https://github.com/dcgan-pipeline/dcgan-pipeline)"

    @model_validator(mode="before")
    @classmethod
    def _single_board_form(cls, data: Any) -> Any:
        """The form before several boards (site, base_url, tags, ... beside max_posts) reads as
        one source, so existing params files keep working."""
        if not isinstance(data, dict):
            return data
        old = [key for key in SOURCE_KEYS if key in data]
        if not old:
            return data
        if "sources" in data:
            raise ValueError(f"give the board either in `sources` or with {', '.join(old)} at the top of "
                             f"anime.crawl, not both (move {', '.join(old)} into a `sources` entry)")
        data = dict(data)
        data["sources"] = [{key: data.pop(key) for key in old}]
        return data

    @field_validator("sources")
    @classmethod
    def _distinct_sources(cls, value: list[BoardSource]) -> list[BoardSource]:
        keys = [source.listing_key for source in value]
        for index, key in enumerate(keys):
            if key in keys[:index]:
                raise ValueError(f"sources {keys.index(key)} and {index} are the same listing ({key})")
        return value

    @field_validator("user_agent")
    @classmethod
    def _user_agent(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must identify the project (boards block anonymous crawlers)")
        return value


# --------------------------------------------------------------------------- the params file


def one_line_error(error: ValidationError, source: Path, prefix: tuple[str, ...] = ()) -> str:
    """`<file>: <dotted key>: <message>` for the first problem pydantic found."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in (*prefix, *first["loc"])) or "<root>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif "input" in first and not isinstance(first["input"], dict) and f"(got {first['input']!r})" not in message:
        message = f"{message} (got {first['input']!r})"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    return f"{source}: {key}: {message[0].lower() + message[1:]}{suffix}"


def read_params_file(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """The YAML mapping of a params file, or ParamsError with one line naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found (run from the repository root)") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return raw


def load_crawl_params(path: Path | str = PARAMS_FILE) -> AnimeCrawlParams:
    """`anime.crawl` of a params file: only the crawler's own section is checked here."""
    path = Path(path)
    anime = read_params_file(path).get("anime") or {}
    section = (anime.get("crawl") or {}) if isinstance(anime, dict) else None
    if not isinstance(section, dict):
        raise ParamsError(f"{path}: anime.crawl: expected a mapping")
    try:
        return AnimeCrawlParams.model_validate(section)
    except ValidationError as exc:
        raise ParamsError(one_line_error(exc, path, ("anime", "crawl"))) from None
