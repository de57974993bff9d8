"""Wiring: builds the pipeline's objects from a Config and runs it. Entry points (CLI,
scheduler.py) call these and print; the stages themselves live in their own modules."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .clustering import Clusterer
from .config import Config, database_path
from .fetch import Fetcher, make_client
from .poll import FeedOutcome, Poller, PollReport, make_parse_executor
from .store import Store
from .timeutil import utcnow


@contextlib.contextmanager
def open_store(config: Config, db_override: str | None = None) -> Iterator[Store]:
    store = Store.open(database_path(config, db_override))
    try:
        yield store
    finally:
        store.close()


@dataclass
class Pipeline:
    """Everything a poll needs, built once and reused across polls (the daemon) or
    used for one pass (`aggregator fetch`)."""

    config: Config
    store: Store
    clusterer: Clusterer

    @classmethod
    def start(cls, config: Config, store: Store) -> Pipeline:
        clusterer = Clusterer(config.settings.dedup)
        clusterer.load(store, utcnow())
        return cls(config, store, clusterer)

    async def poll(
        self,
        feeds=None,
        on_done: Callable[[FeedOutcome], None] | None = None,
    ) -> PollReport:
        """Fetch `feeds` (default: every active feed) once."""
        settings = self.config.settings
        if feeds is None:
            feeds = self.store.sync_feeds(self.config, utcnow())
        executor = make_parse_executor(settings.parse_workers) if len(feeds) > 1 else None
        try:
            async with make_client(settings) as client:
                poller = Poller(self.config, self.store, Fetcher(client, settings),
                                self.clusterer, executor)  # fmt: skip
                return await poller.poll(feeds, on_done)
        finally:
            if executor:
                executor.shutdown(cancel_futures=True)


def fetch_all(
    config: Config, store: Store, on_start: Callable[[int], None] | None = None,
    on_done: Callable[[FeedOutcome], None] | None = None,
) -> PollReport:  # fmt: skip
    """`aggregator fetch`: one pass over all active feeds."""
    feeds = store.sync_feeds(config, utcnow())
    if on_start:
        on_start(len(feeds))
    pipeline = Pipeline.start(config, store)
    return asyncio.run(pipeline.poll(feeds, on_done))


def default_db_path(config: Config, override: str | None) -> Path:
    return database_path(config, override)
