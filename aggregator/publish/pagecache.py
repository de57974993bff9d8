"""The web page (`GET /`) served from a cached render, like the digest's feeds.

Rendering per request let a few large digests cost the CPU of the whole machine (eight
1 MB titles: 0.8 s per request). Here a page is rendered once per publish and filter and
then handed out as bytes; concurrent requests for a page not yet rendered wait for the one
render in progress instead of each starting their own.

A render is also refreshed once it is PAGE_MAX_AGE old, since the page shows relative times
("5m ago") and the daemon may not publish for an hour when no feed brings news.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from ..timeutil import utcnow
from .publisher import DigestCache, Rendered
from .webview import CONTENT_TYPE, DigestSnapshot, PageFilter, render_page

log = logging.getLogger("aggregator.serve")

PAGE_MAX_AGE = 60.0  # seconds a render is served: its relative times stay right to the minute
PAGE_RENDERS_KEPT = 32  # renders kept (one per filter, least recently used dropped first)


@dataclass(frozen=True)
class _Page:
    source: DigestSnapshot  # the published snapshot it was rendered after
    built: datetime
    rendered: Rendered


class PageCache:
    """Renders of the web page by filter, valid until the digest is published again or
    they are PAGE_MAX_AGE old. `page_query` answers a filter from the database (a filter
    looks through every story of the window); without it, filters select from the
    published stories. `renders` counts renders, for /healthz and the tests."""

    def __init__(self, digest: DigestCache,
                 page_query: Callable[[PageFilter], DigestSnapshot] | None = None,
                 clock: Callable[[], datetime] = utcnow, max_age: float = PAGE_MAX_AGE,
                 kept: int = PAGE_RENDERS_KEPT):  # fmt: skip
        self.digest = digest
        self.page_query = page_query
        self.clock = clock
        self.max_age = max_age
        self.kept = kept
        self.renders = 0
        self._pages: OrderedDict[PageFilter, _Page] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[PageFilter, threading.Lock] = {}

    def get(self, where: PageFilter) -> Rendered | None:
        """The page for `where`, or None before the first publish."""
        snapshot = self.digest.snapshot()
        if snapshot is None:
            return None
        with self._lock:
            page = self._fresh(where, snapshot)
            if page is not None:
                return page
            building = self._building.setdefault(where, threading.Lock())
        with building:  # one render per page at a time; the others take its result
            with self._lock:
                page = self._fresh(where, snapshot)
            if page is not None:
                return page
            now = self.clock()
            rendered, complete = self._render(snapshot, where, now)
            with self._lock:
                self.renders += 1
                if complete:  # a page made after a failed query is not kept
                    self._pages[where] = _Page(snapshot, now, rendered)
                    self._pages.move_to_end(where)
                while len(self._pages) > self.kept:
                    self._pages.popitem(last=False)
                self._building.pop(where, None)
            return rendered

    def _fresh(self, where: PageFilter, snapshot: DigestSnapshot) -> Rendered | None:
        """The kept render for `where` if it is of this publish and young enough (call
        with the lock held)."""
        page = self._pages.get(where)
        if page is None or page.source is not snapshot:
            return None
        if (self.clock() - page.built).total_seconds() >= self.max_age:
            return None
        self._pages.move_to_end(where)
        return page.rendered

    def _render(
        self, snapshot: DigestSnapshot, where: PageFilter, now: datetime
    ) -> tuple[Rendered, bool]:
        """The page and whether it is the one asked for (False: the filter's query failed,
        so it shows the digest's stories)."""
        source, complete = snapshot, True
        if where and self.page_query is not None:
            try:  # a filter looks through every story of the window, not the digest's few
                source = self.page_query(where)
            except Exception as exc:  # the page must answer: the digest's stories then
                log.warning("web page query failed (%s); showing the digest's stories", exc)
                complete = False
        body = render_page(source, where, now)
        etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        return Rendered(body, CONTENT_TYPE, etag, format_datetime(now, usegmt=True)), complete
