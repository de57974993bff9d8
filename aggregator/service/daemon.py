"""The long-running service: APScheduler (3.x, asyncio) jobs keep the store current and
the digest published.

- every `check_every` seconds: reload feeds.yaml if it changed (or on SIGHUP), then fetch
  the feeds whose `next_fetch_at` has come, and republish the digest if anything changed;
- daily: prune items older than `retention` (clusters keep their counts) and rebuild the
  dedup index, which also drops rows of items that left the window;
- hourly: `PRAGMA optimize` and a WAL checkpoint.

Each feed's `next_fetch_at` lives in the database, so a restarted daemon does not refetch
what is not yet due; brand-new feeds are spread over their first interval. SIGTERM/SIGINT
stop new fetches and cancel waiting ones; a feed's write is one synchronous transaction,
so cancellation never lands inside it. A second daemon on the same database refuses to
start (a lock file beside it); CLI readers do not take the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import signal
import time
from datetime import timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ..config import Config, database_path, load_config
from ..errors import ConfigError, StoreError
from ..publish.connections import raise_descriptor_limit
from ..publish.publisher import DigestCache, page_snapshot, publish
from ..publish.serve import DigestServer
from ..publish.webview import DigestSnapshot, PageFilter
from ..store.database import FeedRow, Store, due_feeds, schedule_new_feeds
from ..store.upkeep import health, maintain, prune
from ..timeutil import iso, utcnow
from .app import Pipeline
from .outage import is_outage

log = logging.getLogger("aggregator.daemon")
SHUTDOWN_GRACE = 8.0  # seconds in-flight work gets after SIGTERM (we promise exit within 10)


@contextlib.contextmanager
def single_instance(db_path: Path):
    """An exclusive lock beside the database: a second daemon refuses to start."""
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


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class Daemon:
    def __init__(self, config: Config, store: Store, *, once: bool = False):
        self.config = config
        self.store = store
        self.once = once
        self.pipeline = Pipeline.start(config, store)
        log.info("dedup index rebuilt: %d items in %.2fs",
                 len(self.pipeline.clusterer.index), self.pipeline.clusterer.rebuild_seconds)  # fmt: skip
        self.cache = DigestCache()
        self.server: DigestServer | None = None
        self._config_stamp = _stamp(config.path)
        self._reload_requested = False
        self._busy = asyncio.Lock()
        self._stop = asyncio.Event()
        self._poll_task: asyncio.Task | None = None
        self._republish = False
        self.scheduler: AsyncIOScheduler | None = None
        self.last_poll: str | None = None
        self.fatal: StoreError | None = None  # why the daemon stopped by itself
        self._counts: dict = {}

    # ------------------------------------------------------------ config

    def _sync(self) -> None:
        feeds = self.store.sync_feeds(self.config, utcnow())
        now = utcnow()
        # a feed never fetched is fetched now, as Miniflux and FreshRSS do when one is
        # added (the poll's concurrency limits bound the rush); also one an earlier
        # version scheduled for later
        new = {f.id: now for f in feeds if f.last_fetch_at is None and (f.next_fetch_at is None or f.next_fetch_at > now)}
        if new:
            schedule_new_feeds(self.store, new)
            log.info("%d new feed%s: fetching now", len(new), "" if len(new) == 1 else "s")

    def request_reload(self) -> None:
        self._reload_requested = True

    def _maybe_reload(self) -> None:
        stamp = _stamp(self.config.path)
        if not self._reload_requested and stamp == self._config_stamp:
            return
        self._reload_requested = False
        self._config_stamp = stamp
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("config reload failed, keeping the previous config: %s", exc)
            return
        before = {f.url for f in self.config.feeds}
        after = {f.url for f in new.feeds}
        if before and not after:  # an emptied or truncated file, like a broken edit
            log.error("config reload refused: %s lists no feeds (the running config has %d); "
                      "to stop following every feed, stop the daemon and start it on the empty "
                      "file", self.config.path, len(before))  # fmt: skip
            return
        for key in ("database", "http", "dedup", "parse_workers"):
            if getattr(new.settings, key) != getattr(self.config.settings, key):
                log.warning("settings.%s changed: takes effect after a restart", key)
        old_settings = self.config.settings
        self.config = new
        self.pipeline.config = new
        try:
            self._sync()
        except self.store.Error:
            self._reload_requested = True  # the new feeds are synced on the next tick
            raise
        if new.settings.check_every != old_settings.check_every and self.scheduler:
            self.scheduler.reschedule_job("tick", trigger="interval", seconds=new.settings.check_every)
        if (new.settings.digest, new.settings.digest_path) != (old_settings.digest, old_settings.digest_path):
            self._republish = True
        log.info("config reloaded: %d feeds (+%d, -%d)", len(after), len(after - before),
                 len(before - after))  # fmt: skip

    # ------------------------------------------------------------ jobs

    async def tick(self) -> None:
        """Fetch whatever is due; skipped while the previous tick is still running, and
        while database writes fail (aggregator.service.outage: then one due feed is the probe)."""
        if self._busy.locked() or self._stop.is_set():
            return
        async with self._busy:
            if not self._database_still_there():
                return
            outage = self.pipeline.outage
            if not outage.ready(time.monotonic()):
                return
            try:
                due = self._due()
            except self.store.Error as exc:
                if not is_outage(exc):
                    raise
                outage.record_failure(exc, self.store.name, time.monotonic(), utcnow())
                self._update_health()
                return
            if not due:
                if self._republish:
                    self.publish()
                return
            if outage.active:
                due = [random.choice(due)]
            self._poll_task = asyncio.ensure_future(self.pipeline.poll(due))
            try:
                report = await self._poll_task
            except asyncio.CancelledError:
                log.info("poll cancelled by shutdown; finished feeds are stored")
                return
            finally:
                self._poll_task = None
            self.last_poll = iso(utcnow())
            log.info(
                "poll: due=%d fetched=%d not_modified=%d new_items=%d updated_items=%d "
                "new_clusters=%d errors=%d duration=%.1fs",
                len(due), report.count("new", "updated", "unchanged"),
                report.count("not_modified"), report.new_items, report.updated_items,
                report.new_clusters, report.errors, report.duration,
            )  # fmt: skip
            if report.changed or self._republish:
                self.publish()
            self._update_health()

    def _due(self) -> list[FeedRow]:
        """Reload the config if it changed, follow a recluster done elsewhere, and list the
        feeds due now."""
        self._maybe_reload()
        if self.pipeline.clusterer.must_reload(self.store):
            log.info("clusters were rebuilt (recluster) or pruned elsewhere; reloading the dedup index")
            self.pipeline.clusterer.load(self.store, utcnow())
            self._republish = True
        return due_feeds(self.store, utcnow())

    def _database_still_there(self) -> bool:
        """Checked before each job: a database deleted (or replaced) under the daemon stops
        it, with a copy of everything written so far, instead of writing on into a file
        nobody can open again."""
        try:
            self.store.check_file()
            return True
        except StoreError as exc:
            problem = str(exc)
        try:
            saved = self.store.save_copy()
        except (self.store.Error, OSError) as exc:
            message = (f"{problem}; could not save a copy of what it held ({exc}); stopping. "
                       "Restore the file from a backup before starting the daemon again")  # fmt: skip
        else:
            message = (f"{problem}; stopping. Everything written until now is saved in {saved}: "
                       f"move it back to {self.store.path} (or pass --db {saved}) and start the "
                       "daemon again")  # fmt: skip
        log.error("%s", message)
        self.fatal = StoreError(message)
        self.stop()
        return False

    def publish(self) -> None:
        self._republish = False
        try:
            publish(self.config, self.store, utcnow(), self.cache,
                    self.server.base_url if self.server else None)  # fmt: skip
        except OSError as exc:
            log.error("cannot write the digest to %s: %s", self.config.settings.digest_path, exc)
        except self.store.Error as exc:
            self._gave_way(exc)
            self._republish = True  # once the database answers again
        self._update_health()

    def _gave_way(self, exc: Exception) -> None:
        """A job beside the poll (publishing, prune, maintain) met the database down: the
        outage is recorded (said once; the tick's probe ends it) and the job stops, rather
        than raise out of the scheduler, a traceback per run. Other errors raise."""
        if not is_outage(exc):
            raise exc
        self.pipeline.outage.record_failure(exc, self.store.name, time.monotonic(), utcnow())

    def _page_query(self, where: PageFilter) -> DigestSnapshot:
        """The web page's filters, in a server worker thread, on a connection of its own."""
        self.store.check_file()  # opening a deleted database would create an empty one
        store = Store.open(self.store.path)
        try:
            return page_snapshot(store, self.config.settings.digest, where, utcnow())
        finally:
            store.close()

    def _update_health(self) -> None:
        with contextlib.suppress(self.store.Error):  # a failing disk may fail reads too
            self._counts = health(self.store)
        counts, parts = self._counts, self.pipeline.health()
        # "failing" (HTTP 503) while nothing can be stored; "degraded" while some feed
        # fails or parsing runs in-process (HTTP 200: the daemon itself is serving)
        if parts["store"]["writes"] != "ok":
            status = "failing"
        elif counts.get("feeds_failing") or counts.get("feeds_dead") or parts["parse"]["workers"] != "ok":
            status = "degraded"
        else:
            status = "ok"
        self.cache.health = {"status": status, "last_poll": self.last_poll, **counts, **parts}

    async def prune_job(self) -> None:
        async with self._busy:
            if not self._database_still_there():
                return
            cutoff = utcnow() - timedelta(seconds=self.config.settings.retention)
            try:
                items, clusters = prune(self.store, cutoff)
                self.pipeline.clusterer.load(self.store, utcnow())
            except self.store.Error as exc:
                return self._gave_way(exc)
            log.info("pruned %d items and %d emptied clusters first seen before %s; "
                     "dedup index rebuilt", items, clusters, iso(cutoff))  # fmt: skip
            if items:
                self.publish()

    async def maintain_job(self) -> None:
        """Hourly: database upkeep, and a fresh digest so stories that left the digest
        window drop out even when no feed brought news."""
        async with self._busy:
            if not self._database_still_there():
                return
            try:
                maintain(self.store)
            except self.store.Error as exc:
                return self._gave_way(exc)
            self.publish()

    # ------------------------------------------------------------ life cycle

    def stop(self) -> None:
        if not self._stop.is_set():
            log.info("stopping: no new fetches; waiting for feeds in flight")
        self._stop.set()
        if self._poll_task is not None:
            self._poll_task.cancel()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        self._sync()
        if self.once:
            self._maybe_reload()
            await self.tick()
            self.publish()
            return 0
        settings = self.config.settings
        address = settings.http_address()
        if address:
            before, after = raise_descriptor_limit()
            if after != before:
                log.info("open-file limit raised from %d to %d (the hard limit)", before, after)
            try:
                self.server = DigestServer(address, self.cache, self._page_query).start()
            except OSError as exc:
                raise StoreError(
                    f"cannot serve the digest on {settings.http}: {exc.strerror}; "
                    "change settings.http or set it to off"
                ) from None
            log.info("serving the digest at %s/digest.atom", self.server.base_url)
        self.publish()
        scheduler = self.scheduler = AsyncIOScheduler(event_loop=loop)
        now = utcnow()
        # tick() returns at once while a poll is running, so overlapping runs are harmless
        # (and APScheduler does not warn about skipped runs during a long poll)
        scheduler.add_job(self.tick, "interval", id="tick", seconds=settings.check_every,
                          max_instances=3, coalesce=True, next_run_time=now)  # fmt: skip
        scheduler.add_job(self.prune_job, "interval", days=1, max_instances=1, coalesce=True,
                          next_run_time=now + timedelta(minutes=1))  # fmt: skip
        scheduler.add_job(self.maintain_job, "interval", hours=1, max_instances=1, coalesce=True)
        scheduler.start()
        log.info("daemon started: %d feeds, database %s, pid %d",
                 len(self.config.feeds), self.store.name, os.getpid())  # fmt: skip
        try:
            await self._stop.wait()
            scheduler.shutdown(wait=False)
            try:
                async with asyncio.timeout(SHUTDOWN_GRACE):
                    async with self._busy:
                        pass
            except TimeoutError:
                log.warning("work still running after %.0fs; leaving it", SHUTDOWN_GRACE)
        finally:
            if self.server:
                self.server.stop()
        log.info("stopped")
        if self.fatal:
            raise self.fatal
        return 0


def _exit_quietly(signum, frame) -> None:
    raise SystemExit(0)


def run_daemon(config: Config, db_override: str | None, once: bool) -> int:
    # Until the event loop takes over the signals (after the index rebuild, which can take
    # seconds), SIGTERM/SIGINT end start-up cleanly and SIGHUP is ignored; nothing has been
    # written yet.
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    db_path = database_path(config, db_override)
    store = Store.open(db_path, create_folder=True)
    try:
        # one daemon per SQLite file; on PostgreSQL any number of workers share the polling
        with single_instance(db_path) if store.on_file else contextlib.nullcontext():
            daemon = Daemon(config, store, once=once)
            try:
                return asyncio.run(daemon.run())
            finally:
                daemon.pipeline.close()
    finally:
        store.close()
