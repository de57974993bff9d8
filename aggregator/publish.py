"""Publishing the digest: query the store, render the three formats, write the file
atomically, and keep the bytes the HTTP server hands out."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime

from .config import Config, DigestSettings, relative_to_config
from .digest import CONTENT_TYPES, FORMATS, DigestMeta, render
from .files import write_atomically
from .queries import digest_clusters
from .store import Store


@dataclass(frozen=True)
class Rendered:
    """One format of the digest, ready to serve."""

    body: bytes
    content_type: str
    etag: str
    last_modified: str  # HTTP date


def build_digest(
    store: Store,
    settings: DigestSettings,
    now: datetime,
    base_url: str | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> dict[str, Rendered]:
    """Every requested format of the digest as of `now`."""
    clusters = digest_clusters(
        store, now - timedelta(seconds=settings.window), settings.max_entries,
        settings.min_size, settings.tags,
    )  # fmt: skip
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


class DigestCache:
    """The latest rendering of each format, swapped in whole so the server thread never
    sees a half-updated digest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rendered: dict[str, Rendered] = {}
        self.health: dict = {}

    def update(self, rendered: dict[str, Rendered], health: dict | None = None) -> None:
        with self._lock:
            self._rendered = dict(rendered)
            if health is not None:
                self.health = dict(health)

    def get(self, fmt: str) -> Rendered | None:
        with self._lock:
            return self._rendered.get(fmt)


def publish(config: Config, store: Store, now: datetime, cache: DigestCache | None = None,
            base_url: str | None = None) -> dict[str, Rendered]:  # fmt: skip
    """Render the digest, write settings.digest_path atomically, refresh the cache."""
    rendered = build_digest(store, config.settings.digest, now, base_url)
    path = relative_to_config(config, config.settings.digest_path)
    write_atomically(path, rendered[config.settings.digest.format].body)
    if cache is not None:
        cache.update(rendered)
    return rendered
