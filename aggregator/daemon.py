"""The long-running service: an APScheduler (3.x, asyncio) job polls for due feeds every
few seconds and fetches them with the shared bounded client.

Each feed's `next_fetch_at` lives in the database, so a restarted daemon picks up where
it stopped and does not refetch what is not yet due. Brand-new feeds are spread over
their first interval (jitter) instead of all being fetched at once; `--once` fetches
every feed that is due or new, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import signal
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .app import Pipeline
from .config import Config, database_path
from .errors import StoreError
from .schedule import first_fetch_at
from .store import Store, due_feeds, schedule_new_feeds
from .timeutil import utcnow

log = logging.getLogger("aggregator.daemon")
POLL_EVERY = 5.0  # seconds between looks for due feeds


@contextlib.contextmanager
def single_instance(db_path: Path):
    """An exclusive lock beside the database: a second daemon refuses to start (CLI
    readers do not take it and keep working)."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the daemon's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(
            f"{db_path}: another aggregator daemon is already running on this database "
            f"(lock {lock_path}); stop it first or pass --db"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


class Daemon:
    def __init__(self, config: Config, store: Store, *, once: bool = False, seed: int | None = None):
        self.config = config
        self.store = store
        self.once = once
        self.rng = random.Random(seed)
        self.pipeline = Pipeline.start(config, store)
        self._busy = asyncio.Lock()
        self._stop = asyncio.Event()

    def _sync(self) -> None:
        feeds = self.store.sync_feeds(self.config, utcnow())
        now = utcnow()
        new = {}
        for f in feeds:
            if f.next_fetch_at is None:
                interval = f.interval_s or self.config.settings.interval
                new[f.id] = now if self.once else first_fetch_at(now, interval, self.rng)
        if new:
            schedule_new_feeds(self.store, new)

    async def tick(self) -> None:
        """Fetch whatever is due; skipped while the previous tick is still running."""
        if self._busy.locked() or self._stop.is_set():
            return
        async with self._busy:
            due = due_feeds(self.store, utcnow())
            if not due:
                return
            report = await self.pipeline.poll(due)
            log.info(
                "poll: due=%d fetched=%d not_modified=%d new_items=%d new_clusters=%d "
                "errors=%d duration=%.1fs",
                len(due), report.count("new", "updated", "unchanged"),
                report.count("not_modified"), report.new_items, report.new_clusters,
                report.errors, report.duration,
            )  # fmt: skip

    async def run(self) -> int:
        self._sync()
        if self.once:
            await self.tick()
            return 0
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        scheduler = AsyncIOScheduler()
        scheduler.add_job(self.tick, "interval", seconds=POLL_EVERY, max_instances=1,
                          coalesce=True, next_run_time=utcnow())  # fmt: skip
        scheduler.start()
        log.info("daemon started: %d feeds, database %s", len(self.config.feeds), self.store.path)
        await self._stop.wait()
        log.info("stopping: waiting for feeds in flight")
        scheduler.shutdown(wait=False)
        try:
            async with asyncio.timeout(8):
                async with self._busy:
                    pass
        except TimeoutError:
            log.warning("feeds still in flight after 8s; their transactions are rolled back")
        return 0


def run_daemon(config: Config, db_override: str | None, once: bool) -> int:
    db_path = database_path(config, db_override)
    store = Store.open(db_path)
    try:
        with single_instance(db_path):
            return asyncio.run(Daemon(config, store, once=once).run())
    finally:
        store.close()
