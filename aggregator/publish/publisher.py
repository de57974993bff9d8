"""Publishing the digest: query the store, render the three formats, write the file
atomically, and keep what the HTTP server hands out: the rendered feeds and a snapshot of
the digest's stories (or copy clusters: settings.digest.group) for the web view (so the
server thread never reads the database)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from ..config import Config, DigestSettings, relative_to_config
from ..files import write_atomically
from ..store.database import Store
from ..store.queries import cluster_tags, digest_clusters, feed_tags
from ..store.story_queries import StoryView, digest_stories
from .digest import CONTENT_TYPES, FORMATS, DigestMeta, Listed, render
from .webview import DigestSnapshot, PageFilter


@dataclass(frozen=True)
class Rendered:
    """One format of the digest, ready to serve."""

    body: bytes
    content_type: str
    etag: str
    last_modified: str  # HTTP date


def load_digest(store: Store, settings: DigestSettings, now: datetime) -> DigestSnapshot:
    """The digest's stories as of `now` and the tags of the feeds behind each."""
    clusters, _ = ranked_digest(store, settings, now)
    tags = listed_tags(store, clusters)
    return DigestSnapshot(settings.title, tuple(clusters), tags, now, tuple(feed_tags(store)))


def listed_tags(store: Store, listed: Sequence[Listed]) -> dict[int, frozenset[str]]:
    """Per listed cluster or story id, the tags of the feeds behind it (a story: behind
    any of its clusters)."""
    parts = {v.id: [c.id for c in v.clusters] if isinstance(v, StoryView) else [v.id] for v in listed}
    tags = cluster_tags(store, [cid for ids in parts.values() for cid in ids])
    return {vid: frozenset().union(*(tags[cid] for cid in ids)) for vid, ids in parts.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # `--since all`


def ranked_digest(store: Store, settings: DigestSettings, now: datetime, min_size: int = 1,
                  tags: tuple[str, ...] = (), query: str = "") -> tuple[list[Listed], int]:  # fmt: skip
    """(The digest's stories, or copy clusters (settings.group), best first
    (ranking.story_score), how many matched) with the settings' filters and any extra
    ones (the web page's)."""
    since = now - timedelta(seconds=settings.window) if settings.window != float("inf") else _EPOCH
    query_tier = digest_stories if settings.group == "stories" else digest_clusters
    return query_tier(
        store, since, settings.max_entries,
        max(settings.min_size, min_size), settings.tags,
        now, (settings.rank_sources, settings.rank_recency), query, tags,
    )  # fmt: skip


def render_digest(
    clusters: Sequence[Listed],
    settings: DigestSettings,
    now: datetime,
    base_url: str | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Rendered]:
    """Every requested format of the digest of `clusters`."""
    out = {}
    for fmt in formats:
        self_url = f"{base_url}/digest.{fmt}" if base_url else None
        meta = DigestMeta(title=settings.title, self_url=self_url, site_url=base_url)
        body = render(clusters, fmt, meta, now)
        newest = max((c.updated or c.last_seen for c in clusters), default=now)
        out[fmt] = Rendered(
            body=body,
            content_type=CONTENT_TYPES[fmt],
            etag='"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"',
            last_modified=format_datetime(newest, usegmt=True),
        )
    return out


def build_digest(
    store: Store,
    settings: DigestSettings,
    now: datetime,
    base_url: str | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Rendered]:
    """Every requested format of the digest as of `now`."""
    return render_digest(ranked_digest(store, settings, now)[0], settings, now, base_url, formats)


class DigestCache:
    """The latest rendering of each format and the snapshot the web view renders from,
    swapped in whole so the server thread never sees a half-updated digest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rendered: dict[str, Rendered] = {}
        self._snapshot: DigestSnapshot | None = None
        self.health: dict = {}

    def update(self, rendered: dict[str, Rendered], health: dict | None = None,
               snapshot: DigestSnapshot | None = None) -> None:  # fmt: skip
        with self._lock:
            self._rendered = dict(rendered)
            if health is not None:
                self.health = dict(health)
            if snapshot is not None:
                self._snapshot = snapshot

    def get(self, fmt: str) -> Rendered | None:
        with self._lock:
            return self._rendered.get(fmt)

    def snapshot(self) -> DigestSnapshot | None:
        """The clusters of the last publish (immutable records), for the web view."""
        with self._lock:
            return self._snapshot


def publish(config: Config, store: Store, now: datetime, cache: DigestCache | None = None,
            base_url: str | None = None) -> dict[str, Rendered]:  # fmt: skip
    """Render the digest, refresh the cache (serving never waits on the file), then write
    settings.digest_path atomically, creating its folder."""
    snapshot = load_digest(store, config.settings.digest, now)
    rendered = render_digest(snapshot.clusters, config.settings.digest, now, base_url)
    if cache is not None:
        cache.update(rendered, snapshot=snapshot)
    path = relative_to_config(config, config.settings.digest_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, rendered[config.settings.digest.format].body)
    return rendered


def page_snapshot(store: Store, settings: DigestSettings, where: PageFilter, now: datetime) -> DigestSnapshot:
    """The web page's stories for a filter, queried over the whole digest window."""
    clusters, matched = ranked_digest(store, settings, now, where.min_size, where.tags, where.q)
    tags = listed_tags(store, clusters)
    return DigestSnapshot(settings.title, tuple(clusters), tags, now, tuple(feed_tags(store)), matched=matched)
