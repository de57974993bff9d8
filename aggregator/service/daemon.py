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
so cancellation never lands inside it. A second daemon on the same SQLite file refuses to
start (a lock file beside it); CLI readers do not take the lock.

On PostgreSQL any number of daemons ("workers", on one or more hosts) share one database
(aggregator/store/leases.py): each claims due feeds in batches of CLAIM_BATCH x
settings.concurrency, polls the batch and claims again while batches come back full;
every worker fetches, parses and signs; assignment to clusters stays exactly-once behind
the store's write lock, each worker's index catching up with the others' writes. One of
them, the holder of the publisher lock, writes the digest file, serves HTTP and runs the
daily prune and the hourly upkeep; it republishes whenever any worker (or `aggregator
fetch`) wrote clusters, checked every tick on a connection and a thread of its own, so
publishing never waits for a poll. The others take its part over within a tick or two of
its end. Every worker must read the same feeds.yaml: each one makes the feeds table match
its own file.
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ..config import Config, database_path, load_config
from ..errors import ConfigError, StoreError
from ..publish.connections import raise_descriptor_limit
from ..publish.publisher import DigestCache, page_snapshot, publish
from ..publish.serve import DigestServer
from ..publish.webview import DigestSnapshot, PageFilter
from ..store.clusters import index_state
from ..store.database import FeedRow, Store, due_feeds, schedule_new_feeds
from ..store.leases import PublisherLock, claim, release, renew, worker_id
from ..store.upkeep import health, maintain, prune
from ..timeutil import iso, utcnow
from .app import Pipeline
from .outage import is_outage
from .poll import PollReport

log = logging.getLogger("aggregator.daemon")
SHUTDOWN_GRACE = 8.0  # seconds in-flight work gets after SIGTERM (we promise exit within 10)
# PostgreSQL: feeds claimed at a time, per settings.concurrency. Enough to keep the
# fetches going (the poll keeps 2x concurrency in flight), few enough that the last batches
# spread over the workers and that one batch takes minutes, not a whole lease (which is
# renewed anyway while the batch runs).
CLAIM_BATCH = 4
HEALTH_EVERY = 60.0  # seconds: the publisher refreshes /healthz at least this often
# The publisher republishes whenever clusters changed, but spends at most this share of its
# time publishing: the digest's queries grow with the database (0.8 s at 100,000 items on
# PostgreSQL), and republishing at every tick of a cold poll took most of a core.
PUBLISH_DUTY = 0.1


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
        self._http_address = config.settings.http_address()  # a reload takes effect on restart
        # PostgreSQL: one of several workers, which claims the feeds it polls and publishes
        # only while it holds the publisher lock; SQLite: the only daemon, the publisher
        self.worker: str | None = None if store.on_file else worker_id()
        self.publisher: PublisherLock | None = None
        self.publishing = store.on_file
        self._publisher_thread: ThreadPoolExecutor | None = None
        self._stepping = False  # a publisher step is running
        self._published_state: tuple[int, int] | None = None  # index_state at the last publish
        self._health_at = 0.0  # time.monotonic() of the publisher's last /healthz refresh
        self._publish_after = 0.0  # time.monotonic() before which the publisher does not republish
        self._health_stale = True
        self._serve_error: str | None = None  # why the publisher cannot serve HTTP (said once)

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
        for key in ("database", "http", "dedup", "stories", "parse_workers"):
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
            for job in ("tick", "publisher") if self.publisher else ("tick",):
                self.scheduler.reschedule_job(job, trigger="interval", seconds=new.settings.check_every)
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
            if not self.pipeline.outage.ready(time.monotonic()):
                return
            waited = self.store.lock_wait
            polled = await self._poll_due()
            if polled is None:
                return  # cancelled by shutdown
            report, due, batches = polled
            if due:
                extra = "" if self.store.on_file else (
                    f" batches={batches} lock_wait={self.store.lock_wait - waited:.2f}s"
                )  # fmt: skip
                log.info(
                    "poll: due=%d fetched=%d not_modified=%d new_items=%d updated_items=%d "
                    "new_clusters=%d errors=%d duration=%.1fs%s",
                    due, report.count("new", "updated", "unchanged"),
                    report.count("not_modified"), report.new_items, report.updated_items,
                    report.new_clusters, report.errors, report.duration, extra,
                )  # fmt: skip
            if self.store.on_file and (report.changed or self._republish):
                self.publish()
            if due or self.pipeline.outage.active:
                self._update_health()

    async def _poll_due(self) -> tuple[PollReport, int, int] | None:
        """(What the polls did, feeds due, batches): SQLite polls every due feed at once;
        PostgreSQL claims a batch, polls it and claims again while batches come back full.
        While writes fail, one feed is the probe. None when shutdown cancelled a poll."""
        outage = self.pipeline.outage
        report, due, batches = PollReport(), 0, 0
        while not self._stop.is_set():
            probe = outage.active
            limit = 1 if probe else CLAIM_BATCH * self.config.settings.concurrency
            try:
                batch = self._due(limit, probe)
            except self.store.Error as exc:
                if not is_outage(exc):
                    raise
                outage.record_failure(exc, self.store.name, time.monotonic(), utcnow())
                break
            if not batch:
                break
            due, batches = due + len(batch), batches + 1
            done = await self._poll(batch)
            if done is None:
                return None
            report.outcomes += done.outcomes
            report.duration += done.duration
            if self.store.on_file or probe or len(batch) < limit:
                break
        return report, due, batches

    async def _poll(self, feeds: list[FeedRow]) -> PollReport | None:
        """One poll of `feeds`; None when shutdown cancelled it. A worker renews its leases
        while the poll runs and gives back what it did not write when it ends."""
        done = asyncio.Event()
        keeper = None if self.store.on_file else asyncio.ensure_future(self._keep_leases(done))
        self._poll_task = asyncio.ensure_future(self.pipeline.poll(feeds))
        try:
            report = await self._poll_task
        except asyncio.CancelledError:
            log.info("poll cancelled by shutdown; finished feeds are stored")
            return None
        finally:
            self._poll_task = None
            done.set()
            if keeper is not None:
                await keeper
        self.last_poll = iso(utcnow())
        if self.worker is not None:
            # the poll is over, so the writer thread is idle: no transaction to step into
            try:
                release(self.store, self.worker)
            except self.store.Error as exc:
                log.warning("could not give back the feeds this poll left (%s); they are "
                            "claimed again once their lease ends", exc)  # fmt: skip
        return report

    async def _keep_leases(self, done: asyncio.Event) -> None:
        """Every third of settings.lease until `done`: this worker's leases run another
        lease from now (on the writer thread, between two feeds' transactions)."""
        while True:
            lease = self.config.settings.lease
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), lease / 3)
            if done.is_set():
                return
            until = utcnow() + timedelta(seconds=lease)
            try:
                await self._on_writer(renew, self.store, self.worker, until)
            except self.store.Error as exc:
                log.warning("could not renew this worker's leases (%s); its feeds may be "
                            "fetched again by another worker once they end", exc)  # fmt: skip

    async def _on_writer(self, job: Callable, *args):
        """Run `job` where the poll writes: its writer thread if it has one, else here."""
        writer = self.pipeline.writer
        if writer is None:
            return job(*args)
        return await asyncio.get_running_loop().run_in_executor(writer, job, *args)

    def _due(self, limit: int, probe: bool) -> list[FeedRow]:
        """Reload the config if it changed, follow a recluster done elsewhere, and list the
        feeds to poll now: on SQLite every due feed (one at random to probe an outage), on
        PostgreSQL up to `limit` due feeds claimed for this worker."""
        self._maybe_reload()
        if self.pipeline.clusterer.must_reload(self.store):
            log.info("clusters were rebuilt (recluster) or pruned elsewhere; reloading the dedup index")
            self.pipeline.clusterer.load(self.store, utcnow())
            self._republish = True
        now = utcnow()
        if self.worker is not None:
            return claim(self.store, self.worker, now, self.config.settings.lease, limit)
        due = due_feeds(self.store, now)
        return [random.choice(due)] if probe and due else due

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

    def publish(self, store: Store | None = None) -> None:
        """Render and write the digest from `store` (default: the daemon's own)."""
        store = store or self.store
        self._republish = False
        try:
            publish(self.config, store, utcnow(), self.cache,
                    self.server.base_url if self.server else None)  # fmt: skip
        except OSError as exc:
            log.error("cannot write the digest to %s: %s", self.config.settings.digest_path, exc)
        except self.store.Error as exc:
            if store is not self.store:
                raise  # the publisher's step tries again at its next tick
            self._gave_way(exc)
            self._republish = True  # once the database answers again
        self._update_health(store)

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

    def _update_health(self, store: Store | None = None) -> None:
        """/healthz. A worker's own connection is the poll's, so on PostgreSQL the
        publisher refreshes it on its own session (`_publisher_step`)."""
        if store is None and self.publisher is not None:
            self._health_stale = True
            return
        store = store or self.store
        with contextlib.suppress(store.Error):  # a failing disk may fail reads too
            self._counts = health(store)
            if self.publisher is not None:
                self._counts["worker"] = self.worker
                self._counts["workers"] = self.publisher.workers()
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
        self._health_at, self._health_stale = time.monotonic(), False

    async def prune_job(self) -> None:
        if not self.publishing:
            return  # on PostgreSQL the publisher prunes for every worker
        async with self._busy:
            if not self._database_still_there():
                return
            cutoff = utcnow() - timedelta(seconds=self.config.settings.retention)
            try:
                items, clusters = prune(self.store, cutoff)
                if not items:
                    return  # nothing changed: the index stays (its rebuild takes seconds)
                self.pipeline.clusterer.load(self.store, utcnow())
            except self.store.Error as exc:
                return self._gave_way(exc)
            log.info("pruned %d items and %d emptied clusters first seen before %s; "
                     "dedup index rebuilt", items, clusters, iso(cutoff))  # fmt: skip
            self._changed()

    async def maintain_job(self) -> None:
        """Hourly: database upkeep, and a fresh digest so stories that left the digest
        window drop out even when no feed brought news."""
        if not self.publishing:
            return
        async with self._busy:
            if not self._database_still_there():
                return
            try:
                maintain(self.store)
            except self.store.Error as exc:
                return self._gave_way(exc)
            self._changed()

    def _changed(self) -> None:
        """The digest must be published again: now on SQLite; on PostgreSQL by the
        publisher's next step, on its own connection."""
        if self.publisher is None:
            self.publish()
        else:
            self._republish = True

    # ------------------------------------------------------------ publisher (PostgreSQL)

    async def publisher_job(self) -> None:
        """Every tick, on the publisher thread (never waiting for a poll); skipped while
        the previous step still runs (a publish can outlast a tick). At shutdown the
        scheduler cancels this job; the step itself ends on its thread, which run() waits for."""
        if self._stop.is_set() or self._publisher_thread is None or self._stepping:
            return
        self._stepping = True
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._publisher_thread, self._publisher_step)
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
        finally:
            self._stepping = False

    def _publisher_step(self, starting: bool = False) -> None:
        """Take the publisher's part when it is free, give it up when the lock is gone (the
        session was replaced after a drop), and while holding it republish whenever any
        worker wrote clusters (meta index_writes, cluster_generation) or a job asked to."""
        lock = self.publisher
        try:
            holding = lock.hold()
        except lock.store.Error as exc:
            # the database is unreachable: the part stays as it is (a publisher keeps serving
            # the last digest, /healthz says failing) until the lock can be asked again
            log.debug("publisher lock not checked: %s", exc)
            if self.publishing and self._health_stale:
                self._update_health(lock.store)  # the outage, from memory: no query needed
            return
        if not holding:
            if self.publishing:
                self.publishing = False
                self._stop_serving()
                log.warning("worker %s no longer holds the publisher lock (its database session "
                            "ended); another worker publishes the digest", self.worker)  # fmt: skip
            elif starting:
                log.info("worker %s polls; worker %s publishes the digest and serves HTTP",
                         self.worker, lock.holder() or "(unknown)")  # fmt: skip
            return
        if not self.publishing:
            self.publishing = True
            log.info("worker %s publishes the digest%s", self.worker,
                     "" if starting else " (taking over)")  # fmt: skip
            self._republish = True
            self._update_health(lock.store)  # before the server answers /healthz
        self._serve(starting)
        try:
            state = index_state(lock.store)
            changed = self._republish or state != self._published_state
            if changed and time.monotonic() >= self._publish_after:
                self._published_state = state
                started = time.monotonic()
                self.publish(lock.store)
                self._publish_after = started + (time.monotonic() - started) / PUBLISH_DUTY
            elif self._health_stale or time.monotonic() - self._health_at >= HEALTH_EVERY:
                self._update_health(lock.store)
        except lock.store.Error as exc:
            self._republish = True  # tried again at the next step
            log.warning("could not publish the digest (%s); trying again at the next tick", exc)

    def _serve(self, starting: bool) -> None:
        """Serve HTTP where settings.http said at start-up, if not yet. At start-up a taken
        address stops the daemon (as on SQLite); a worker taking over says so once and
        tries again at every step, publishing the file meanwhile."""
        if self.server is not None or not self._http_address:
            return
        try:
            self._start_serving()
        except StoreError as exc:
            if starting:
                raise
            if str(exc) != self._serve_error:
                log.error("%s; this worker publishes the digest file meanwhile and tries again "
                          "every tick", exc)  # fmt: skip
            self._serve_error = str(exc)
            return
        if self._serve_error:
            self._serve_error = None
            self._republish = True  # links in the digest name the server

    def _start_serving(self) -> None:
        address = self._http_address
        if not address:
            return
        before, after = raise_descriptor_limit()
        if after != before:
            log.info("open-file limit raised from %d to %d (the hard limit)", before, after)
        try:
            self.server = DigestServer(address, self.cache, self._page_query).start()
        except OSError as exc:
            raise StoreError(
                f"cannot serve the digest on {self.config.settings.http}: {exc.strerror}; "
                "change settings.http or set it to off"
            ) from None
        log.info("serving the digest at %s/digest.atom", self.server.base_url)

    def _stop_serving(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def release_leases(self) -> None:
        """At exit (after the writer thread stopped): the feeds this worker still holds are
        due for any other worker at once, not after their lease."""
        if self.worker is not None:
            with contextlib.suppress(self.store.Error):
                release(self.store, self.worker)

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
        try:
            if self.store.on_file:
                self._start_serving()
                self.publish()
            else:
                log.info("worker %s: claims due feeds %d at a time, each for %.0fs (renewed while "
                         "it polls)", self.worker, CLAIM_BATCH * settings.concurrency,
                         settings.lease)  # fmt: skip
                self.publisher = PublisherLock(str(self.store.path), self.worker)
                self._publisher_thread = ThreadPoolExecutor(1, thread_name_prefix="publisher")
                self._publisher_step(starting=True)
            scheduler = self.scheduler = AsyncIOScheduler(event_loop=loop)
            now = utcnow()
            # tick() returns at once while a poll is running, so overlapping runs are harmless
            # (and APScheduler does not warn about skipped runs during a long poll)
            scheduler.add_job(self.tick, "interval", id="tick", seconds=settings.check_every,
                              max_instances=3, coalesce=True, next_run_time=now)  # fmt: skip
            if self.publisher is not None:
                scheduler.add_job(self.publisher_job, "interval", id="publisher",
                                  seconds=settings.check_every, max_instances=3, coalesce=True,
                                  next_run_time=now + timedelta(seconds=settings.check_every))  # fmt: skip
            scheduler.add_job(self.prune_job, "interval", days=1, max_instances=1, coalesce=True,
                              next_run_time=now + timedelta(minutes=1))  # fmt: skip
            scheduler.add_job(self.maintain_job, "interval", hours=1, max_instances=1,
                              coalesce=True)  # fmt: skip
            scheduler.start()
            log.info("daemon started: %d feeds, database %s, pid %d",
                     len(self.config.feeds), self.store.name, os.getpid())  # fmt: skip
            await self._stop.wait()
            # no new runs; then let the runs already handed to the loop start (they see the
            # stop and return) before the scheduler is shut down: shutting it down cancels
            # every run not finished, and APScheduler logs each as "Error running job"
            # with a CancelledError traceback (CI saw one for a tick not yet started)
            scheduler.pause()
            try:
                async with asyncio.timeout(SHUTDOWN_GRACE):
                    async with self._busy:
                        pass
                    for _ in range(3):
                        await asyncio.sleep(0)
            except TimeoutError:
                log.warning("work still running after %.0fs; leaving it", SHUTDOWN_GRACE)
            scheduler.shutdown(wait=False)
        finally:
            if self._publisher_thread is not None:
                self._publisher_thread.shutdown(wait=True)
            self._stop_serving()
            if self.publisher is not None:
                with contextlib.suppress(Exception):  # its session ends either way
                    self.publisher.close()
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
                daemon.release_leases()
    finally:
        store.close()
