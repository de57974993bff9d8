"""Periodic upkeep of the store: pruning old items, merging the full-text index, health
counts."""

from __future__ import annotations

import time
from datetime import datetime

from ..timeutil import iso
from .clusters import bump_cluster_generation
from .database import Store

SEARCH_MERGE_SECONDS = 2.0  # at most this long merging index segments in maintain()


def prune(store: Store, before: datetime) -> tuple[int, int]:
    """Delete items first seen before `before` (with their signatures). Clusters keep their
    counts: their `pruned` column records the loss, their representative moves to the
    earliest remaining member, and clusters with no member left are deleted.
    Returns (items deleted, clusters deleted)."""
    cutoff = iso(before)
    c = store.conn
    with store.transaction():
        ids = store.dialect.id_type
        c.execute(f"CREATE TEMP TABLE IF NOT EXISTS doomed (id {ids} PRIMARY KEY, cluster_id {ids})")
        c.execute("DELETE FROM doomed")
        c.execute(
            "INSERT INTO doomed SELECT id, cluster_id FROM items WHERE first_seen_at < ?", (cutoff,)
        )
        items = c.execute("SELECT count(*) FROM doomed").fetchone()[0]
        if not items:
            return 0, 0
        bump_cluster_generation(store)  # another process's dedup index must drop these rows
        c.execute("DELETE FROM signatures WHERE item_id IN (SELECT id FROM doomed)")
        c.execute("DELETE FROM items WHERE id IN (SELECT id FROM doomed)")
        c.execute(
            """UPDATE clusters SET pruned = pruned + (SELECT count(*) FROM doomed d
                                                       WHERE d.cluster_id = clusters.id)
               WHERE id IN (SELECT cluster_id FROM doomed)"""
        )
        gone = c.execute(
            """DELETE FROM clusters WHERE id IN (SELECT cluster_id FROM doomed)
               AND NOT EXISTS (SELECT 1 FROM items i WHERE i.cluster_id = clusters.id)"""
        ).rowcount
        c.execute(
            """UPDATE clusters SET representative_id = (
                   SELECT id FROM items i WHERE i.cluster_id = clusters.id
                   ORDER BY published_at, id LIMIT 1)
               WHERE id IN (SELECT cluster_id FROM doomed)"""
        )
        c.execute("DELETE FROM doomed")
    return items, gone


def maintain(store: Store) -> None:
    """Periodic upkeep: refresh the query planner's statistics, merge the full-text
    index's segments a little, fold the WAL back. PostgreSQL's autovacuum does the like by
    itself, when its thresholds are crossed; the hourly ANALYZE keeps the planner's
    statistics fresh after a big poll anyway, and folding the search index's pending list
    (the GIN index's counterpart of FTS5's segments) keeps searches from reading it whole.
    Neither waits for a writer's transaction nor makes one wait."""
    if not store.on_file:
        store.conn.execute("ANALYZE")
        store.conn.execute("SELECT gin_clean_pending_list('items_search_doc'::regclass)")
        return
    store.conn.execute("PRAGMA optimize")
    merge_search_segments(store)
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def merge_search_segments(store: Store, seconds: float = SEARCH_MERGE_SECONDS) -> int:
    """Incremental FTS5 merges (~0.15 s each, one transaction each, so writers wait no
    longer) until nothing is left to merge or `seconds` have passed; returns how many
    steps did work. Call it outside a transaction. The write path leaves more segments (aggregator/store/migrations/sqlite/008); this keeps
    their number, and so the cost of a search, from growing."""
    started = time.perf_counter()
    steps = 0
    while time.perf_counter() - started < seconds:
        before = store.conn.total_changes
        with store.transaction():
            store.conn.execute("INSERT INTO items_fts (items_fts, rank) VALUES ('merge', 2000)")
        if store.conn.total_changes - before < 2:  # FTS5's sign that there was nothing to merge
            break
        steps += 1
    return steps


def health(store: Store) -> dict:
    """Counts for /healthz and `stats`."""
    c = store.conn
    with store.snapshot():
        by_status = dict(
            c.execute("SELECT status, count(*) FROM feeds WHERE active = 1 GROUP BY status").fetchall()
        )
        return {
            "feeds_ok": by_status.get("ok", 0),
            "feeds_failing": by_status.get("error", 0),
            "feeds_dead": by_status.get("dead", 0),
            "feeds_new": by_status.get("new", 0),
            "items": c.execute("SELECT count(*) FROM items").fetchone()[0],
            "clusters": c.execute("SELECT count(*) FROM clusters").fetchone()[0],
            "last_fetch": c.execute("SELECT max(fetched_at) FROM fetch_log").fetchone()[0],
        }
