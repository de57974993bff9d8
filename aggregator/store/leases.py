"""How several workers (`aggregator run` processes, on one or more hosts) share one
PostgreSQL database: feed leases for the polling, one lock for the publishing.

Polling. A worker claims due feeds instead of listing them: one statement marks up to
`limit` due feeds that nobody holds with its id and the end of its lease (`FOR UPDATE SKIP
LOCKED`: two workers claiming at once never wait for each other and never get the same
feed). It runs as its own short transaction, outside the store's write lock, so claiming
never queues behind a feed's write. Writing a feed's result moves its next fetch time and
clears its lease (Store.update_feed_state), so a finished feed is neither due nor shown as
held. While a batch runs its worker renews its leases every third of the lease, so a batch
slowed by slow hosts keeps them; whatever the batch did not write (a shutdown, an outage)
is released when it ends. A worker that dies keeps its leases until they end; then any
other worker claims those feeds. So each feed is fetched by one worker per due time, and a
crash delays a feed by at most one lease. Times are the workers' clocks, like every next
fetch time: the hosts must agree on the time (NTP) to well within a lease.

Publishing. The worker holding a session-level advisory lock (PUBLISH_LOCK_KEY) on a
connection of its own writes the digest file and serves HTTP; the others try to take it at
every tick. When the holder dies its session ends, the server frees the lock, and another
worker takes over within a tick or two.

SQLite has one daemon per file and never claims; `claim` works there too (for tests and
tools) because the dialect's skip_locked is empty and SQLite has one writer anyway.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ..timeutil import iso
from .database import FeedRow, Store, _feed_row
from .dialect import PUBLISH_LOCK_KEY

APPLICATION_PREFIX = "aggregator "  # pg_stat_activity.application_name of a worker's lock session
HOST_CHARS = 40  # application_name holds 63 bytes: the host name is cut to fit the id
# the lock session must notice a peer gone without a FIN (a host that lost power): the
# server probes an idle connection after 30 s, then every 10 s, and drops it after 3 misses
KEEPALIVE = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"

CLAIM = """WITH due AS MATERIALIZED (
               SELECT id FROM feeds
               WHERE active = 1 AND status != 'dead' AND next_fetch_at IS NOT NULL
                 AND next_fetch_at <= ? AND (lease_until IS NULL OR lease_until <= ?)
               ORDER BY next_fetch_at, id LIMIT ? {skip_locked})
           UPDATE feeds SET lease_owner = ?, lease_until = ?
           WHERE id IN (SELECT id FROM due)
           RETURNING *"""


def worker_id(host: str | None = None, pid: int | None = None) -> str:
    """host:pid:random, unique across hosts and restarts (a pid comes back after a reboot)."""
    host = (host or socket.gethostname() or "localhost")[:HOST_CHARS]
    return f"{host}:{pid or os.getpid()}:{secrets.token_hex(3)}"


def claim(store: Store, owner: str, now: datetime, lease: float, limit: int) -> list[FeedRow]:
    """Up to `limit` due feeds nobody holds (or whose lease ended), now held by `owner`
    until `now + lease`, those due first first. One statement: its own transaction."""
    stamp = iso(now)
    rows = store.query(
        CLAIM.format(skip_locked=store.dialect.skip_locked),
        [stamp, stamp, limit, owner, iso(now + timedelta(seconds=lease))],
    )
    feeds = [_feed_row(r) for r in rows]
    return sorted(feeds, key=lambda f: (f.next_fetch_at, f.id))  # RETURNING keeps no order


def renew(store: Store, owner: str, until: datetime) -> int:
    """Extend every lease `owner` still holds to `until`; returns how many."""
    return store.conn.execute(
        "UPDATE feeds SET lease_until = ? WHERE lease_owner = ?", (iso(until), owner)
    ).rowcount


def release(store: Store, owner: str) -> int:
    """Give back the feeds `owner` holds but did not write (they stay due, for anyone)."""
    return store.conn.execute(
        "UPDATE feeds SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,)
    ).rowcount


def leases(store: Store) -> dict[str, int]:
    """How many feeds each worker holds now."""
    return dict(
        store.conn.execute(
            "SELECT lease_owner, count(*) FROM feeds WHERE lease_owner IS NOT NULL GROUP BY lease_owner"
        ).fetchall()
    )


def lock_session_url(url: str, owner: str) -> str:
    """The database URL for a worker's lock session: named after the worker (so
    pg_stat_activity lists the workers) and with TCP keepalives (so a dead host's lock is
    freed in about a minute, not the system's two hours)."""
    parts = urlsplit(url)
    given = parse_qsl(parts.query)
    options = " ".join([v for k, v in given if k == "options"] + [KEEPALIVE])
    query = [(k, v) for k, v in given if k not in ("application_name", "options")]
    query += [("application_name", APPLICATION_PREFIX + owner), ("options", options)]
    # libpq decodes %XX only (a "+" stays a plus sign)
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


_HIGH, _LOW = PUBLISH_LOCK_KEY >> 32, PUBLISH_LOCK_KEY & 0xFFFFFFFF
# pg_locks shows a bigint advisory key as classid (high half), objid (low half), objsubid 1
_HELD = f"""EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                    AND l.classid = {_HIGH} AND l.objid = {_LOW} AND l.objsubid = 1
                    AND l.pid = {{pid}})"""


class PublisherLock:
    """One worker's session for the publisher lock (PostgreSQL only): `hold()` at every
    tick says whether this worker is the publisher, taking the lock when it is free. The
    session's Store also serves the publisher's own reads (the digest, /healthz), so they
    never share a connection with the worker's writes."""

    def __init__(self, url: str, owner: str):
        self.owner = owner
        self.store = Store.open(lock_session_url(url, owner))

    def hold(self) -> bool:
        """True while this session holds the lock, taking it if nobody does. Asking
        pg_locks first keeps the lock taken once (pg_try_advisory_lock would stack it). A
        session the connection replaced after a drop holds nothing: False, until it takes
        the lock again."""
        held = _HELD.format(pid="pg_backend_pid()")
        return bool(
            self.store.conn.execute(
                f"SELECT CASE WHEN {held} THEN true ELSE pg_try_advisory_lock({PUBLISH_LOCK_KEY}) END"
            ).fetchone()[0]
        )

    def holder(self) -> str | None:
        """The worker that publishes now (None: nobody, or not a worker we can name)."""
        row = self.store.conn.execute(
            f"""SELECT a.application_name FROM pg_stat_activity a
                WHERE a.datname = current_database() AND {_HELD.format(pid="a.pid")}"""
        ).fetchone()
        if not row or not (row[0] or "").startswith(APPLICATION_PREFIX):
            return None
        return row[0][len(APPLICATION_PREFIX) :]

    def workers(self) -> list[dict]:
        """The workers connected to this database now, oldest first: id, since when,
        whether it publishes, how many feeds it holds (/healthz)."""
        held = leases(self.store)
        rows = self.store.conn.execute(
            f"""SELECT a.application_name, a.backend_start, {_HELD.format(pid="a.pid")}
                FROM pg_stat_activity a
                WHERE a.datname = current_database() AND a.application_name LIKE ?
                ORDER BY a.backend_start""",
            (APPLICATION_PREFIX + "%",),
        ).fetchall()
        out = []
        for name, since, publishes in rows:
            owner = name[len(APPLICATION_PREFIX) :]
            out.append({"id": owner, "since": iso(since), "publisher": bool(publishes),
                        "leased_feeds": held.get(owner, 0)})  # fmt: skip
        return out

    def close(self) -> None:
        """Ends the session, which frees the lock for another worker."""
        self.store.close()
