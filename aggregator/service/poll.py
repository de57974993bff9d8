"""One pass over due feeds: fetch -> parse -> normalise -> dedup -> store, per feed.

Fetches run concurrently on the event loop; parsing (CPU-bound feedparser) runs in a
process pool so fetching keeps going and both cores work; each feed's result is written
in one transaction together with its cluster assignments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ..config import Config, DedupSettings
from ..dedup.signature import Signature, Signer
from ..dedup.stories import StoryTerms, story_terms
from ..ingest.fetch import Fetcher
from ..ingest.normalize import clean_link, clean_title, normalize_entries
from ..ingest.parse import parse_feed
from ..records import FetchResult, FetchStatus, Item, ParsedFeed
from ..store.database import SEARCH_BATCH, FeedRow, Store, StoredItem
from ..timeutil import utcnow
from .outage import StoreOutage, is_outage
from .schedule import jittered, next_fetch_delay

log = logging.getLogger("aggregator.poll")
NOT_MODIFIED_BATCH = 200  # 304 answers recorded per transaction


@dataclass(frozen=True)
class Document:
    """A parsed feed plus the MinHash signatures and story terms of its items (by item
    key), computed in the same worker so the CPU-heavy signing and tokenising run on every
    core, not in the event loop or the writer."""

    feed: ParsedFeed
    signatures: dict[str, Signature] = field(default_factory=dict)
    story_terms: dict[str, StoryTerms] = field(default_factory=dict)


_signers: dict[DedupSettings, Signer] = {}


def process_document(
    body: bytes, headers: dict[str, str], now: datetime, dedup: DedupSettings | None = None,
    stories: bool = False,
) -> Document:  # fmt: skip
    """Bytes -> clean Items (and their signatures). Top-level and pure so a worker process
    can run it. A parser bug becomes this feed's error here, in the worker, so that an
    exception out of the pool always means the pool itself failed."""
    try:
        return _process(body, headers, now, dedup, stories)
    except Exception as exc:
        return Document(ParsedFeed(error=f"parser crashed: {type(exc).__name__}: {exc}"))


def _process(
    body: bytes, headers: dict[str, str], now: datetime, dedup: DedupSettings | None, stories: bool
) -> Document:  # fmt: skip
    raw = parse_feed(body, headers)
    items = normalize_entries(raw.entries, now) if raw.entries else ()
    error = raw.error
    if not error and not items:
        error = "the feed has no entries with a title or text"
    parsed = ParsedFeed(
        title=clean_title(raw.title) or None,  # shown in tables, JSON, the digest
        link=clean_link(raw.link),
        items=items,
        ttl=raw.ttl,
        warning=raw.warning,
        error=error,
        format=raw.format,
    )
    if dedup is None or error:
        return Document(parsed)
    signer = _signers.get(dedup) or _signers.setdefault(dedup, Signer(dedup))
    signatures = signer.sign_many([(i.title, i.text) for i in items])
    terms = {i.key: story_terms(i.title, i.text) for i in items} if stories else {}
    return Document(parsed, {i.key: sig for i, sig in zip(items, signatures, strict=True)}, terms)


def make_parse_executor(workers: int) -> Executor | None:
    """A pool of `workers` processes for parsing; None (the loop's thread pool) for 0.
    forkserver, not fork: the daemon has threads, and forking a threaded process can
    deadlock."""
    if workers <= 0:
        return None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["aggregator.service.poll"])
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_exit_with_parent, initargs=(os.getpid(),)
    )


def _first_job(pool: Executor) -> None:
    """One trivial job, run to its end (see Poller._pool_started)."""
    with contextlib.suppress(Exception):
        pool.submit(os.getpid).result()


def _exit_with_parent(parent: int) -> None:
    """Runs in each parse worker: exit when the process that made the pool is gone. A
    SIGKILLed daemon cannot shut its pool down, and idle workers would otherwise wait for
    work forever (keeping the forkserver alive too)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass  # alive, owned by someone else

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class ClusterStage(Protocol):
    """The dedup stage as the poller sees it (see aggregator.dedup)."""

    def assign(
        self,
        store: Store,
        new: Sequence[tuple[int, int, Item]],
        changed: Sequence[tuple[int, int, Item, StoredItem]],
        now: datetime,
        signatures: Mapping[str, Signature] | None = None,
        story_terms: Mapping[str, StoryTerms] | None = None,
    ) -> int:
        """Put new/changed items (item id, feed id, item[, old]) into clusters inside the
        caller's transaction; returns how many clusters were created."""

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


@dataclass(frozen=True)
class FeedOutcome:
    """What one feed's poll did, for the per-feed summary and logs."""

    feed: FeedRow
    status: str  # new | updated | unchanged | not_modified | error | retry_later | gone
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    new_clusters: int = 0
    error: str | None = None
    warning: str | None = None
    moved_to: str | None = None
    elapsed: float = 0.0
    not_stored: bool = False  # the database refused the write (see aggregator.service.outage)


@dataclass
class PollReport:
    outcomes: list[FeedOutcome] = field(default_factory=list)
    duration: float = 0.0

    def count(self, *statuses: str) -> int:
        return sum(1 for o in self.outcomes if o.status in statuses)

    @property
    def new_items(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def updated_items(self) -> int:
        return sum(o.updated for o in self.outcomes)

    @property
    def new_clusters(self) -> int:
        return sum(o.new_clusters for o in self.outcomes)

    @property
    def errors(self) -> int:
        return self.count("error", "retry_later", "gone")

    @property
    def changed(self) -> bool:
        return self.new_items > 0 or self.updated_items > 0


class Poller:
    """Runs polls; holds the collaborators (store, fetcher, parse pool, dedup stage)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        fetcher: Fetcher,
        clusters: ClusterStage | None = None,
        executor: Executor | None = None,
        clock: Callable[[], datetime] = utcnow,
        writer: Executor | None = None,
        outage: StoreOutage | None = None,
    ):
        self.config = config
        self.store = store
        self.fetcher = fetcher
        self.clusters = clusters
        self.executor = executor
        # One thread does every database write of a poll (and the clustering inside it),
        # so the event loop keeps serving fetches: a busy loop would make their timeouts
        # expire. None writes on the loop itself (tests, single feeds).
        self.writer = writer
        self.clock = clock
        self.stopping = False
        self._writes_failing = False
        # the parse pool failed in this poll (why), or worked at least once: the owner of
        # the pool replaces it, says so once, and reports it in /healthz
        self.pool_error: str | None = None
        self.pool_worked = False
        self._pool_start: asyncio.Future | None = None
        self.outage = outage or StoreOutage(base_delay=config.settings.check_every)
        # 304s change only fetch times, so their rows are written NOT_MODIFIED_BATCH per
        # transaction (a commit each cost ~2 ms: 20 s of a 10,000-feed warm poll). If the
        # process dies first, those feeds are merely fetched again early.
        self._not_modified: list[tuple[FeedRow, dict, FetchResult]] = []

    async def poll(
        self, feeds: Sequence[FeedRow], on_done: Callable[[FeedOutcome], None] | None = None
    ) -> PollReport:
        """Fetch and store `feeds` concurrently; one feed failing never stops the others."""
        started = time.monotonic()
        report = PollReport()

        # Back-pressure: at most this many feeds between the start of their fetch and the
        # end of their write. Without it every fetched body and parsed document of a cold
        # poll waited in memory for the parse workers and the writer (3.9 GB at 10,000
        # feeds); twice `concurrency` keeps the workers fed through a fetch's latency.
        in_flight = asyncio.Semaphore(2 * self.config.settings.concurrency)

        async def one(feed: FeedRow) -> None:
            try:
                async with in_flight:
                    if self.stopping or self._writes_failing:
                        return  # still due: fetched on the next poll
                    outcome = await self.poll_feed(feed)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:  # a bug or a database error: this feed only
                log.exception("feed %s (%s): unexpected error", feed.display_name, feed.url)
                outcome = FeedOutcome(
                    feed=feed, status="error", error=f"internal error: {type(exc).__name__}: {exc}"
                )
            report.outcomes.append(outcome)
            if outcome.error and outcome.status in ("error", "retry_later", "gone") and not outcome.not_stored:
                log.warning("feed %s (%s): %s", outcome.feed.display_name, feed.url, outcome.error)
            if on_done:
                on_done(outcome)

        self._writes_failing = False
        try:
            await asyncio.gather(*(one(f) for f in feeds))
        finally:
            if self._not_modified:
                await self._flush_even_if_cancelled()
        if self.store.search_backlog:
            await self._write(self._index_search)
        report.duration = time.monotonic() - started
        return report

    def _interval(self, feed: FeedRow) -> float:
        return feed.interval_s or self.config.settings.interval

    async def poll_feed(self, feed: FeedRow) -> FeedOutcome:
        fetch = await self.fetcher.fetch(feed.url, feed.etag, feed.last_modified)
        loop = asyncio.get_running_loop()
        if fetch.status is not FetchStatus.OK:
            return await self._write(self._store_failure, feed, fetch)
        dedup = self.config.settings.dedup if self.clusters else None
        stories = dedup is not None and self.config.settings.stories.enabled
        args = (fetch.body, fetch.headers, fetch.fetched_at, dedup, stories)
        pool = None if self.pool_error else self.executor
        try:
            if pool is not None:
                await self._pool_started(pool)
            doc = await loop.run_in_executor(pool, process_document, *args)
            self.pool_worked = self.pool_worked or pool is not None
        except Exception as exc:
            if pool is None:
                raise
            # process_document keeps its own errors, so the pool failed: a worker died
            # (BrokenProcessPool), or no worker can start (the forkserver is gone or its
            # socket was cleaned from /tmp). The rest of this poll parses here.
            self.pool_error = f"{type(exc).__name__}: {exc}"
            doc = await loop.run_in_executor(None, process_document, *args)
        return await self._write(self._store_document, feed, fetch, doc.feed, doc.signatures, doc.story_terms)

    async def _pool_started(self, pool: Executor) -> None:
        """Wait until the parse pool's processes exist, starting them off the event loop.
        The first job given to a new pool starts the forkserver, which imports the
        pipeline (4.6 s on a busy machine): submitted from the loop, that stood the loop
        still, so fetches in flight ran out of time and the web server stopped answering.
        A poll whose feeds all answer 304 never starts the pool. A pool that cannot start
        fails again at the job that follows, which reports it."""
        if self._pool_start is None:
            self._pool_start = asyncio.ensure_future(asyncio.to_thread(_first_job, pool))
        await asyncio.shield(self._pool_start)

    # ------------------------------------------------------------ writing

    async def _write(self, method: Callable[..., FeedOutcome], *args) -> FeedOutcome:
        """Run a store method on the writer thread. If the poll is cancelled meanwhile,
        the transaction still finishes there (it is never cut in half)."""
        if self.writer is None:
            return method(*args)
        return await asyncio.get_running_loop().run_in_executor(self.writer, method, *args)

    def _index_search(self) -> None:
        """Full-text indexing happens in batches (see aggregator/store/migrations/sqlite/005); a failure here
        loses nothing: the items stay waiting for the next batch or the next search."""
        try:
            self.store.index_search()
        except self.store.Error as exc:
            if is_outage(exc):
                self._writes_failed(exc)
                return
            log.warning("search index not updated (%s); it catches up on the next poll or search", exc)

    def _store_failure(self, feed: FeedRow, fetch: FetchResult) -> FeedOutcome:
        now = self.clock()
        status = fetch.status.value
        if fetch.status is FetchStatus.NOT_MODIFIED:
            errors, feed_status, error = 0, "ok", None
        elif fetch.status is FetchStatus.GONE:
            errors, feed_status, error = feed.error_count + 1, "dead", fetch.error
        else:
            errors, feed_status, error = feed.error_count + 1, "error", fetch.error
        delay = next_fetch_delay(
            self._interval(feed),
            error_count=errors,
            retry_after=fetch.retry_after,
            max_age=fetch.max_age,
        )
        if fetch.status is FetchStatus.NOT_MODIFIED:
            delay = jittered(delay, self._interval(feed), random.random())
        state = dict(
            status=feed_status,
            last_fetch_at=fetch.fetched_at,
            last_http_status=fetch.http_status,
            error_count=errors,
            last_error=error,
            next_fetch_at=now + timedelta(seconds=delay),
            # a failed attempt keeps the validators we had, so the next try stays conditional
            etag=fetch.etag or feed.etag,
            last_modified=fetch.last_modified or feed.last_modified,
        )
        if fetch.status is FetchStatus.NOT_MODIFIED:
            state["last_success_at"] = fetch.fetched_at
        if fetch.permanent_redirect:
            state["moved_to"] = fetch.permanent_redirect
        if fetch.status is FetchStatus.NOT_MODIFIED:
            self._not_modified.append((feed, state, fetch))
            if len(self._not_modified) >= NOT_MODIFIED_BATCH:
                self._flush_not_modified()
        else:
            try:
                with self.store.transaction():
                    self._record_attempt(feed, state, fetch)
            except self.store.Error as exc:
                if not is_outage(exc):
                    raise
                return self._not_stored(feed, fetch, exc)
            self._wrote()
        return FeedOutcome(
            feed=feed, status=status, error=error, moved_to=fetch.permanent_redirect,
            elapsed=fetch.elapsed,
        )  # fmt: skip

    # ------------------------------------------------------------ failed writes

    def _not_stored(self, feed: FeedRow, fetch: FetchResult, exc: Exception) -> FeedOutcome:
        """The database refused this feed's write (rolled back: nothing half-stored). The
        episode is said once (`_writes_failed`); the feed's error and backoff are recorded
        where the database still takes a small write, else they live in the outage state
        (/healthz) and the feed, whose row did not change, is simply due again later."""
        self._writes_failed(exc)
        errors = feed.error_count + 1
        error = f"could not store what was fetched: the database refused the write ({exc})"
        delay = next_fetch_delay(self._interval(feed), error_count=errors)
        with contextlib.suppress(self.store.Error), self.store.transaction():
            self.store.update_feed_state(
                feed.id, status="error", last_fetch_at=fetch.fetched_at, error_count=errors,
                last_error=error, next_fetch_at=self.clock() + timedelta(seconds=delay),
            )  # fmt: skip
        return FeedOutcome(feed=feed, status="error", error=error, elapsed=fetch.elapsed, not_stored=True)

    def _writes_failed(self, exc: Exception) -> None:
        self._writes_failing = True  # the feeds of this poll not yet fetched wait
        self.outage.record_failure(exc, self.store.name, time.monotonic(), self.clock())

    def _wrote(self) -> None:
        self.outage.record_success()

    def _record_attempt(self, feed: FeedRow, state: dict, fetch: FetchResult) -> None:
        self.store.update_feed_state(feed.id, **state)
        self.store.log_fetch(
            feed.id, fetch.fetched_at, fetch.status.value, fetch.http_status, fetch.elapsed,
            error=state["last_error"],
        )  # fmt: skip

    async def _flush_even_if_cancelled(self) -> None:
        """The buffered 304s are written when the poll ends, also when it is cancelled
        (daemon shutdown, Ctrl-C): the write is handed to the writer thread, which the
        pipeline lets finish before it closes."""
        if self.writer is None:
            self._flush_not_modified()
            return
        done = self.writer.submit(self._flush_not_modified)
        await asyncio.shield(asyncio.wrap_future(done))

    def _flush_not_modified(self) -> None:
        waiting, self._not_modified = self._not_modified, []
        try:
            with self.store.transaction():
                for feed, state, fetch in waiting:
                    self._record_attempt(feed, state, fetch)
        except self.store.Error as exc:
            # the fetches happened; only their bookkeeping is lost, so those feeds are
            # simply due again (their next fetch time was not moved)
            if is_outage(exc):
                self._writes_failed(exc)
            else:
                log.warning("could not record %d not-modified answers (%s); those feeds will be "
                            "fetched again when next due", len(waiting), exc)  # fmt: skip
        else:
            if waiting:
                self._wrote()

    def _store_document(
        self, feed: FeedRow, fetch: FetchResult, parsed: ParsedFeed, signatures: dict, story_terms: dict
    ) -> FeedOutcome:
        if parsed.error:
            failed = FetchResult(
                url=fetch.url, status=FetchStatus.ERROR, fetched_at=fetch.fetched_at,
                http_status=fetch.http_status, error=parsed.error, elapsed=fetch.elapsed,
                permanent_redirect=fetch.permanent_redirect,
            )  # fmt: skip
            return self._store_failure(feed, failed)
        now = self.clock()
        items = parsed.items
        new_clusters = 0
        try:
            with self.store.transaction():
                stored = self.store.stored_items(feed.id, [i.key for i in items])
                fresh = [i for i in items if i.key not in stored]
                changed = [
                    (stored[i.key].id, feed.id, i, stored[i.key])
                    for i in items
                    if i.key in stored and stored[i.key].content_hash != i.content_hash
                ]
                ids = self.store.insert_items(feed.id, fresh, now)
                for item_id, _, item, _ in changed:
                    self.store.update_item(item_id, item, now)
                if self.clusters:
                    new_clusters = self.clusters.assign(
                        self.store,
                        [(i, feed.id, item) for i, item in zip(ids, fresh, strict=True)],
                        changed,
                        now,
                        signatures,
                        story_terms,
                    )
                interval = self._interval(feed)
                delay = jittered(next_fetch_delay(interval, ttl=parsed.ttl, max_age=fetch.max_age),
                                 interval, random.random())  # fmt: skip
                state = dict(
                    status="ok",
                    title=parsed.title,
                    site_url=parsed.link,
                    format=parsed.format,
                    warning=parsed.warning,
                    last_fetch_at=fetch.fetched_at,
                    last_success_at=fetch.fetched_at,
                    last_http_status=fetch.http_status,
                    error_count=0,
                    last_error=None,
                    next_fetch_at=now + timedelta(seconds=delay),
                    etag=fetch.etag,
                    last_modified=fetch.last_modified,
                    ttl_s=parsed.ttl,
                    max_age_s=fetch.max_age,
                    moved_to=fetch.permanent_redirect,
                )
                self.store.update_feed_state(feed.id, **state)
                self.store.log_fetch(
                    feed.id, fetch.fetched_at, "ok", fetch.http_status, fetch.elapsed,
                    new_items=len(fresh), updated_items=len(changed),
                )  # fmt: skip
        except BaseException as exc:
            if self.clusters:
                self.clusters.rollback()
            if isinstance(exc, self.store.Error) and is_outage(exc):
                return self._not_stored(feed, fetch, exc)
            raise
        if self.clusters:
            self.clusters.commit()
        self._wrote()
        if self.store.search_backlog >= SEARCH_BATCH:
            self._index_search()
        unchanged = len(items) - len(fresh) - len(changed)
        status = "new" if fresh else "updated" if changed else "unchanged"
        return FeedOutcome(
            feed=feed, status=status, new=len(fresh), updated=len(changed), unchanged=unchanged,
            new_clusters=new_clusters, warning=parsed.warning, moved_to=fetch.permanent_redirect,
            elapsed=fetch.elapsed,
        )  # fmt: skip
