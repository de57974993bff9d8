"""Records passed between pipeline stages. Frozen and typed: no dicts of unknown shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class FetchStatus(StrEnum):
    """How one fetch of one feed ended."""

    OK = "ok"  # 2xx with a body
    NOT_MODIFIED = "not_modified"  # 304: nothing to parse, nothing to write
    ERROR = "error"  # network error, 4xx/5xx, size limit: retried with backoff
    RETRY_LATER = "retry_later"  # 429/503 with the server's Retry-After
    GONE = "gone"  # 410: the feed is dead


@dataclass(frozen=True)
class FetchResult:
    """What came back from one HTTP fetch of a feed."""

    url: str
    status: FetchStatus
    fetched_at: datetime
    http_status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    last_modified: str | None = None
    final_url: str | None = None  # where redirects ended
    permanent_redirect: str | None = None  # set when a 301/308 moved the feed
    retry_after: float | None = None  # seconds the server asked us to wait
    max_age: float | None = None  # Cache-Control max-age hint, seconds
    error: str | None = None
    elapsed: float = 0.0


@dataclass(frozen=True)
class Item:
    """One normalised feed entry, as stored and clustered."""

    key: str  # stable id within its feed: guid, else canonical link, else content hash
    url: str | None  # the link as published
    canonical_url: str | None  # for exact-duplicate matching
    title: str
    text: str  # clean plain text, boilerplate stripped
    author: str | None
    published: datetime  # UTC; first-seen time when the feed gives no date
    updated: datetime | None
    content_hash: str
    shared_link: bool = False  # other entries of its feed document have the same link
    undated: bool = False  # the feed gave no usable date: `published` is when we first saw it


@dataclass(frozen=True)
class ParsedFeed:
    """A feed document turned into records; `error` set when it yielded nothing usable."""

    title: str | None = None
    link: str | None = None
    items: tuple[Item, ...] = ()
    ttl: float | None = None  # RSS <ttl>, seconds
    warning: str | None = None  # bozo feed that still gave entries
    error: str | None = None
    format: str | None = None  # rss20, atom10, json11, ...


@dataclass(frozen=True)
class RawEntry:
    """An entry as the parser found it, before cleaning (HTML, tracking links, raw dates)."""

    guid: str | None
    link: str | None
    title: str | None
    content: str | None  # the longest body the feed gave
    author: str | None
    published: datetime | None
    updated: datetime | None
    title_is_html: bool = True
    content_is_html: bool = True  # False for declared plain text (Atom type="text", content_text)


@dataclass(frozen=True)
class RawFeed:
    """A parsed feed document: entries still raw; `error` when nothing usable came out."""

    format: str | None
    title: str | None = None
    link: str | None = None
    ttl: float | None = None
    entries: tuple[RawEntry, ...] = ()
    warning: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class FeedSite:
    """What a feed said about itself at its last good fetch: its title and the site it
    belongs to (its `<link>`), for exports that need more than feeds.yaml holds."""

    title: str | None
    site_url: str | None
