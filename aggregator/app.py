"""Wiring: builds the pipeline's objects from a Config and runs it. Entry points (CLI,
scheduler.py) call these and print; the stages themselves live in their own modules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from .addresses import OwnServer, own_server
from .clustering import Clusterer
from .config import Config
from .fetch import Fetcher, make_client
from .poll import FeedOutcome, Poller, PollReport, make_parse_executor
from .store import FeedRow, Store, open_store  # noqa: F401 - open_store: part of this API
from .timeutil import utcnow


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
    # the digest server no fetch may reach: where settings.http pointed at start (the
    # daemon serves there until it restarts, even if a reload changes settings.http)
    own: OwnServer | None = None

    @classmethod
    def start(cls, config: Config, store: Store, load_index: bool = True) -> Pipeline:
        """With load_index False the dedup index is built when the first new item needs
        it (Clusterer.assign), so a poll where every feed answers 304 never builds it."""
        clusterer = Clusterer(config.settings.dedup)
        if load_index:
            clusterer.load(store, utcnow())
        return cls(config, store, clusterer, own=own_server(config.settings.http_address()))

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
                            self.clusterer, executor, writer=self.writer)  # fmt: skip
            try:
                return await poller.poll(feeds, on_done)
            finally:
                if poller.pool_broken:  # replaced before the next poll
                    self.close()
                    self._executor_ready = False

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
    on_done: Callable[[FeedOutcome], None] | None = None,
) -> PollReport:  # fmt: skip
    """`aggregator fetch`: one pass over all active feeds that are not dead."""
    feeds = [f for f in store.sync_feeds(config, utcnow()) if f.status != "dead"]
    if on_start:
        on_start(len(feeds))
    pipeline = Pipeline.start(config, store, load_index=False)
    try:
        return asyncio.run(pipeline.poll(feeds, on_done))
    finally:
        pipeline.close()
