"""When the database stops taking writes (a full disk, an I/O error, a read-only file) the
fault is the machine's, not one feed's: every feed would fail the same way, so fetching on
at the usual pace only burns bandwidth and floods the log (it was 280 failed cycles a
minute for 6 feeds). This is a circuit breaker: the first failed write opens an episode,
said once; fetching pauses for a backoff that doubles per failed try (check_every, 2x, 4x
... at most STORE_RETRY_MAX); each try is one feed (a probe); the first write that works
ends the episode, said once too. Pure state: the poller and the daemon log and decide.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..timeutil import iso

log = logging.getLogger("aggregator.store")
STORE_RETRY_MAX = 600.0  # seconds: once space is back, the daemon resumes within 10 minutes


def is_outage(exc: BaseException) -> bool:
    """A database error that says nothing about the feed being written: SQLite's
    OperationalError (disk full, I/O error, read-only, locked too long) or a bare
    DatabaseError (a damaged file); psycopg's OperationalError (the server is down or
    restarting, the connection dropped, the disk is full) and a read-only transaction (a
    standby after a failover, default_transaction_read_only). IntegrityError and the like
    are bugs in one write and stay that feed's error."""
    if type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError):
        return True
    psycopg = _psycopg()
    return psycopg is not None and isinstance(
        exc, (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)
    )


def _psycopg():
    """psycopg (with its errors module), if a PostgreSQL store loaded it: SQLite users
    never import it."""
    return sys.modules.get("psycopg")


def _unreachable(exc: BaseException) -> bool:
    """A PostgreSQL error that means no connection: none could be made, or it broke (no
    SQLSTATE, or class 08), or the server is shutting down or starting (57P01-57P03)."""
    psycopg = _psycopg()
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def advice(exc: BaseException, database: object) -> str:
    """The outage's one message: what failed, on which database, and what to do."""
    reason = " ".join(str(exc).split())
    if _unreachable(exc):
        return (f"cannot reach the database {database}: {reason}. Check that the PostgreSQL server "
                "is running and reachable (pg_isready)")  # fmt: skip
    psycopg = _psycopg()
    if psycopg is not None and isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return (f"the database {database} takes no writes: {reason}. It is read-only (a standby "
                "server, or default_transaction_read_only): point aggregator at the primary")  # fmt: skip
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return (f"the database {database} refuses writes: {reason}. See the PostgreSQL server's log "
                "(a full disk?)")  # fmt: skip
    return (f"cannot write to the database {database}: {reason}. Free space on its disk (or fix "
            "the file's permissions)")  # fmt: skip


@dataclass
class StoreOutage:
    """One episode of failed writes at a time; see the module docstring."""

    base_delay: float
    since: datetime | None = None
    error: str | None = None
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() of the next try
    retry_at_wall: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def active(self) -> bool:
        return self.since is not None

    def ready(self, now: float) -> bool:
        """May a poll run now (`now`: time.monotonic())?"""
        return not self.active or now >= self.retry_at

    def failed(self, error: str, now: float, wall: datetime) -> bool:
        """Record a failed write; True when it opens an episode (the one to say)."""
        with self._lock:
            first = self.since is None
            if first:
                self.since = wall
            self.failures += 1
            self.error = error
            delay = min(self.base_delay * 2 ** min(self.failures - 1, 20), STORE_RETRY_MAX)
            self.retry_at = now + delay
            self.retry_at_wall = wall + timedelta(seconds=delay)
            return first

    def succeeded(self) -> tuple[int, datetime] | None:
        """Record a write that worked; (failed tries, since) when it ends an episode."""
        with self._lock:
            if self.since is None:
                return None
            ended = (self.failures, self.since)
            self.since, self.error, self.failures, self.retry_at_wall = None, None, 0, None
            return ended

    def record_failure(self, exc: BaseException, path: object, now: float, wall: datetime) -> None:
        """`failed`, and the episode's one message when it opens."""
        if self.failed(" ".join(str(exc).split()), now, wall):
            log.error("%s; fetching pauses, retries with backoff (up to every %.0f minutes) and "
                      "resumes by itself once a write works; nothing stored is lost",
                      advice(exc, path), STORE_RETRY_MAX / 60)  # fmt: skip

    def record_success(self) -> None:
        """`succeeded`, and the episode's closing message."""
        ended = self.succeeded()
        if ended:
            tries, since = ended
            log.warning("database writes work again (%d failed tr%s since %s); polling resumes",
                        tries, "y" if tries == 1 else "ies", iso(since))  # fmt: skip

    def health(self) -> dict:
        """The `store` part of /healthz."""
        with self._lock:
            if self.since is None:
                return {"writes": "ok"}
            return {
                "writes": "failing",
                "error": self.error,
                "since": iso(self.since),
                "failed_tries": self.failures,
                "next_try": iso(self.retry_at_wall) if self.retry_at_wall else None,
            }
