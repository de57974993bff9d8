"""Wiring: builds the pipeline's objects from a Config and runs it. Entry points (CLI,
scheduler.py) call these and print; the stages themselves live in their own modules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from ..config import Config, FeedConfig
from ..errors import ConfigError
from ..ingest.addresses import OwnServer, own_server
from ..ingest.discover import FoundFeed, as_url, find_feed
from ..ingest.fetch import Fetcher, make_client
from ..store.database import FeedRow, Store, open_store  # noqa: F401 - open_store: part of this API
from ..store.queries import find_feeds
from ..timeutil import iso, utcnow
from .clustering import Clusterer
from .outage import StoreOutage
from .poll import FeedOutcome, Poller, PollReport, make_parse_executor

log = logging.getLogger("aggregator.pipeline")


@dataclass
class Pipeline:
    """Everything a poll needs, built once and reused across polls (the daemon) or used
    for one pass (`aggregator fetch`). Close it to stop the parse workers."""

    config: Config
    store: Store
    clusterer: Clusterer
    executor: Executor | None = None
    _executor_ready: bool = False
    writer: ThreadPoolExecutor | None = None
    outage: StoreOutage = field(default_factory=lambda: StoreOutage(base_delay=60.0))
    # while the parse pool fails (why, since when): feeds are parsed in-process, and a new
    # pool is tried at each poll
    pool_error: str | None = None
    pool_failed_since: datetime | None = None
    # the digest server no fetch may reach: where settings.http pointed at start (the
    # daemon serves there until it restarts, even if a reload changes settings.http)
    own: OwnServer | None = None

    @classmethod
    def start(cls, config: Config, store: Store, load_index: bool = True) -> Pipeline:
        """With load_index False the dedup index is built when the first new item needs
        it (Clusterer.assign), so a poll where every feed answers 304 never builds it."""
        clusterer = Clusterer(config.settings.dedup, config.settings.stories)
        if load_index:
            clusterer.load(store, utcnow())
        return cls(config, store, clusterer, outage=StoreOutage(base_delay=config.settings.check_every),
                   own=own_server(config.settings.http_address()))  # fmt: skip

    def _parse_executor(self, feeds: int) -> Executor | None:
        if not self._executor_ready and feeds > 1:
            self.executor = make_parse_executor(self.config.settings.parse_workers)
            self._executor_ready = True
        return self.executor

    async def poll(
        self,
        feeds: Sequence[FeedRow] | None = None,
        on_done: Callable[[FeedOutcome], None] | None = None,
    ) -> PollReport:
        """Fetch `feeds` (default: every active feed) once."""
        settings = self.config.settings
        if feeds is None:
            feeds = self.store.sync_feeds(self.config, utcnow())
        executor = self._parse_executor(len(feeds))
        async with make_client(settings, self.own) as client:
            if self.writer is None and len(feeds) > 1:
                self.writer = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
            poller = Poller(self.config, self.store, Fetcher(client, settings),
                            self.clusterer, executor, writer=self.writer, outage=self.outage)  # fmt: skip
            try:
                return await poller.poll(feeds, on_done)
            finally:
                self._after_poll(poller)

    def _after_poll(self, poller: Poller) -> None:
        """A pool that failed is replaced before the next poll (said once per episode; a
        pool that cannot start at all leaves every poll parsing in-process)."""
        if poller.pool_error:
            if self.pool_error is None:
                log.error("the parse worker pool failed (%s); parsing in-process (one core) until "
                          "a new pool works, tried at each poll", poller.pool_error)  # fmt: skip
                self.pool_failed_since = utcnow()
            self.pool_error = poller.pool_error
            self.close()
            self._executor_ready = False
        elif poller.pool_worked and self.pool_error:
            log.warning("parse workers work again (failing since %s)", iso(self.pool_failed_since))
            self.pool_error = self.pool_failed_since = None

    def health(self) -> dict:
        """The pipeline's part of /healthz: database writes and the parse workers."""
        parse = {"workers": "ok"} if self.pool_error is None else {
            "workers": "failing: parsing in-process", "error": self.pool_error,
            "since": iso(self.pool_failed_since),
        }  # fmt: skip
        return {"store": self.outage.health(), "parse": parse}

    def close(self) -> None:
        """Let a write in progress finish (never cut a transaction), stop the workers."""
        if self.writer is not None:
            self.writer.shutdown(wait=True)
            self.writer = None
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None


def fetch_all(
    config: Config, store: Store, on_start: Callable[[int], None] | None = None,
    on_done: Callable[[FeedOutcome], None] | None = None, only: str | None = None,
) -> PollReport:  # fmt: skip
    """`aggregator fetch`: one pass over all active feeds that are not dead. With `only`
    (a name or URL, the rule of `--feed` everywhere) just that feed, even a dead one:
    naming it is asking to try it again."""
    active = store.sync_feeds(config, utcnow())
    if only is None:
        feeds = [f for f in active if f.status != "dead"]
    else:
        wanted = set(find_feeds(store, only))
        feeds = [f for f in active if f.id in wanted]
        if not feeds:
            raise ConfigError(f"{only!r} is no longer in {config.path}; add it back to fetch it")
    if on_start:
        on_start(len(feeds))
    pipeline = Pipeline.start(config, store, load_index=False)
    try:
        return asyncio.run(pipeline.poll(feeds, on_done))
    finally:
        pipeline.close()


def add_feed(
    config: Config, url: str, name: str | None = None, tags: Sequence[str] = (),
    interval: float | None = None,
) -> tuple[FeedConfig, FoundFeed]:  # fmt: skip
    """`feeds add`: `url` (`example.org` means https://example.org) is refused when already
    followed before any request is made; then it must answer with a feed, or be a page
    linking one (`check_feed`), and that feed must not be followed either; then it is
    appended to feeds.yaml. Returns the entry written and how the feed was found."""
    from .. import feeds_file  # ruamel.yaml: only this command needs it, not fetch or run

    url = as_url(url)
    feeds_file.refuse_followed(config, url)
    found = check_feed(config, url)
    feeds_file.refuse_followed(config, found.url)
    feed = FeedConfig(url=found.url, name=" ".join((name or "").split()) or None,
                      tags=tuple(dict.fromkeys(tags)), interval=interval)  # fmt: skip
    feeds_file.add_feed(config.path, feed)
    return feed, found


def check_feed(config: Config, url: str) -> FoundFeed:
    """`feeds add`: the feed at `url` (or the one its web page links to), fetched with the
    daemon's client settings; FetchError or ParseError when there is none."""

    async def check() -> FoundFeed:
        async with make_client(config.settings) as client:
            return await find_feed(Fetcher(client, config.settings), url)

    return asyncio.run(check())
