"""`aggregator stats`: what the database holds and how much duplication it removed.
Plain records out, computed in one read snapshot; `now` is passed in.

Every figure means the same on both backends but the database's size: an SQLite file and
its WAL file; a PostgreSQL database's pg_database_size() (tables, indexes, TOAST, what
VACUUM has not yet given back), with no WAL figure: the server's WAL is shared by every
database on it, so it is None (null in JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ..timeutil import from_iso, iso
from .database import Store

LARGEST_WINDOW = timedelta(hours=24)
LARGEST_COUNT = 10
WEEK = timedelta(days=7)

# Feed states as `stats` and `feeds list` name them: the feeds table's status for feeds
# still in feeds.yaml, "inactive" for the others.
_STATE = {"ok": "ok", "error": "failing", "dead": "dead", "new": "new"}


@dataclass(frozen=True)
class FeedCounts:
    ok: int = 0
    failing: int = 0  # the last fetch failed; retried with backoff
    dead: int = 0  # 410 Gone: no longer fetched
    new: int = 0  # never fetched yet
    inactive: int = 0  # removed from feeds.yaml; items kept

    @property
    def total(self) -> int:
        return self.ok + self.failing + self.dead + self.new + self.inactive


@dataclass(frozen=True)
class FeedStats:
    """One feed's items, and how many of them repeat a story another feed reported
    first (the item's cluster's representative, its earliest member, is another feed's)."""

    id: int
    name: str
    url: str
    state: str
    items: int
    republished: int

    @property
    def republished_share(self) -> float | None:
        return round(self.republished / self.items, 3) if self.items else None


@dataclass(frozen=True)
class ClusterSize:
    id: int
    size: int
    feeds: int
    title: str
    url: str | None
    last_seen: datetime | None


@dataclass(frozen=True)
class Stats:
    feeds: FeedCounts
    items: int
    clusters: int
    # Items that joined an existing cluster (not their cluster's first-seen member), by
    # their first-seen time: since 00:00 UTC today, in the last 7 days, among all stored.
    duplicates_today: int
    duplicates_7d: int
    duplicates_all: int
    largest: tuple[ClusterSize, ...]  # most members, active in the last 24 h
    db_path: Path | str  # the SQLite file, or the PostgreSQL URL without its password
    db_bytes: int
    wal_bytes: int | None  # None on PostgreSQL
    per_feed: tuple[FeedStats, ...]  # highest republished share first

    def to_json(self) -> dict:
        """The documented shape of `stats --json` (times ISO 8601 UTC, sizes in bytes)."""
        f = self.feeds
        return {
            "feeds": {"total": f.total, "ok": f.ok, "failing": f.failing, "dead": f.dead,
                      "new": f.new, "inactive": f.inactive},
            "items": self.items,
            "clusters": self.clusters,
            "duplicates": {"today": self.duplicates_today, "7d": self.duplicates_7d,
                           "all": self.duplicates_all},
            "largest_clusters_24h": [
                {"id": c.id, "size": c.size, "feeds": c.feeds, "title": c.title, "url": c.url,
                 "last_seen": iso(c.last_seen)}
                for c in self.largest
            ],
            "database": {"path": str(self.db_path), "bytes": self.db_bytes + (self.wal_bytes or 0),
                         "db_bytes": self.db_bytes, "wal_bytes": self.wal_bytes},
            "per_feed": [
                {"id": s.id, "name": s.name, "url": s.url, "state": s.state, "items": s.items,
                 "republished": s.republished, "republished_share": s.republished_share}
                for s in self.per_feed
            ],
        }  # fmt: skip


def compute(store: Store, now: datetime) -> Stats:
    """Every number of `aggregator stats`, from one consistent read."""
    c = store.conn
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    with store.snapshot():
        states: dict[str, int] = {}
        for active, status, count in c.execute(
            "SELECT active, status, count(*) FROM feeds GROUP BY active, status"
        ):
            state = _STATE.get(status, status) if active else "inactive"
            states[state] = states.get(state, 0) + count
        # Counters and duplicate marks kept by triggers (aggregator/store/migrations/sqlite/006): reading them
        # costs milliseconds where ranking every item cost seconds at 1M items.
        items, total = c.execute(
            "SELECT coalesce(sum(items), 0), coalesce(sum(duplicates), 0) FROM feed_counts"
        ).fetchone()
        clusters = c.execute("SELECT count(*) FROM clusters").fetchone()[0]
        today, week = _duplicates_since(store, midnight), _duplicates_since(store, now - WEEK)
        largest = tuple(
            ClusterSize(cid, size, feeds, title or "", url, from_iso(last))
            for cid, size, feeds, title, url, last in c.execute(
                """SELECT c.id, c.size, c.feed_count, r.title, r.url, c.last_seen
                   FROM clusters c LEFT JOIN items r ON r.id = c.representative_id
                   WHERE c.last_seen >= ? AND c.size >= 2
                   ORDER BY c.size DESC, c.last_seen DESC, c.id DESC LIMIT ?""",
                (iso(now - LARGEST_WINDOW), LARGEST_COUNT),
            )
        )
        db_bytes, wal_bytes = _sizes(store)
        per_feed = [
            FeedStats(fid, name, url, _STATE.get(status, status) if active else "inactive",
                      count, republished or 0)  # fmt: skip
            for fid, name, url, active, status, count, republished in c.execute(
                """SELECT f.id, coalesce(f.name, f.title, f.url), f.url, f.active, f.status,
                          coalesce(n.items, 0), n.republished
                   FROM feeds f LEFT JOIN feed_counts n ON n.feed_id = f.id"""
            )
        ]
    per_feed.sort(key=lambda s: (-(s.republished_share or 0), -s.items, s.id))
    return Stats(
        feeds=FeedCounts(**{k: v for k, v in states.items() if k in FeedCounts.__dataclass_fields__}),
        items=items,
        clusters=clusters,
        duplicates_today=today,
        duplicates_7d=week,
        duplicates_all=total,
        largest=largest,
        db_path=store.path if store.on_file else store.name,
        db_bytes=db_bytes,
        wal_bytes=wal_bytes,
        per_feed=tuple(per_feed),
    )


def _duplicates_since(store: Store, since: datetime) -> int:
    """Items marked duplicate first seen since `since`, from the partial index of
    aggregator/store/migrations/sqlite/006 (never the full first-seen index: that reads every
    item's row). SQLite is told which index; PostgreSQL's planner picks it by itself."""
    indexed = " INDEXED BY items_duplicate_seen" if store.on_file else ""
    return store.conn.execute(
        f"SELECT count(*) FROM items{indexed} WHERE duplicate = 1 AND first_seen_at >= ?",
        (iso(since),),
    ).fetchone()[0]


def _sizes(store: Store) -> tuple[int, int | None]:
    """(The database's bytes, its WAL's bytes or None where there is no WAL of its own)."""
    if not store.on_file:
        return store.conn.execute("SELECT pg_database_size(current_database())").fetchone()[0], None
    return _size(store.path), _size(store.path.with_name(store.path.name + "-wal"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
