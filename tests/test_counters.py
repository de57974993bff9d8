"""The duplication bookkeeping of aggregator/store/migrations/sqlite/006 (items.duplicate, items.republished,
feed_counts) against a from-scratch computation: the queries `stats` ran before 006, over
every stored item. Checked after inserts, joins, items that move between clusters, a
recluster, pruning, hand-run SQL (each on SQLite and on PostgreSQL: the `world` fixture
stores on `db_target`), and the migration's backfill of an older SQLite database."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import test_clustering
from test_clustering import (
    Entry,
    World,
    ago,
    article,
    as_html,
    check_bookkeeping,
    link,
    mixed_feeds,
    syndicated,
)

from aggregator.service.clustering import Clusterer
from aggregator.store import stats
from aggregator.store.database import Store
from aggregator.store.upkeep import prune
from aggregator.timeutil import iso, utcnow

# the same fixtures as test_clustering's (a real feed server, a real database of each backend)
store = test_clustering.store
world = test_clustering.world

# What `stats` computed before migration 006, from every item: the reference (an item
# outside any cluster is no duplicate, however many others are outside one).
REFERENCE_MARKS = """
    SELECT i.id,
           CASE WHEN c.id IS NOT NULL AND (c.pruned > 0 OR row_number() OVER (
               PARTITION BY i.cluster_id ORDER BY i.first_seen_at, i.id) > 1) THEN 1 ELSE 0 END,
           CASE WHEN r.feed_id != i.feed_id THEN 1 ELSE 0 END
    FROM items i LEFT JOIN clusters c ON c.id = i.cluster_id
    LEFT JOIN items r ON r.id = c.representative_id"""
REFERENCE_DUPLICATES = """
    WITH ranked AS (
        SELECT i.first_seen_at AS seen, c.pruned AS pruned,
               row_number() OVER (PARTITION BY i.cluster_id ORDER BY i.first_seen_at, i.id) AS n
        FROM items i JOIN clusters c ON c.id = i.cluster_id)
    SELECT coalesce(sum(CASE WHEN seen >= ? THEN 1 ELSE 0 END), 0),
           coalesce(sum(CASE WHEN seen >= ? THEN 1 ELSE 0 END), 0), count(*)
    FROM ranked WHERE n > 1 OR pruned > 0"""
REFERENCE_PER_FEED = """
    SELECT f.id, count(i.id), coalesce(sum(CASE WHEN r.feed_id != i.feed_id THEN 1 ELSE 0 END), 0)
    FROM feeds f
    LEFT JOIN items i ON i.feed_id = f.id
    LEFT JOIN clusters c ON c.id = i.cluster_id
    LEFT JOIN items r ON r.id = c.representative_id
    GROUP BY f.id"""


@dataclass(frozen=True)
class FeedCounted:
    id: int
    items: int
    republished: int


@dataclass(frozen=True)
class Counted:
    """What `stats` shows, read from the trigger-kept marks and counters only."""

    items: int
    clusters: int
    duplicates_today: int
    duplicates_7d: int
    duplicates_all: int
    per_feed: tuple[FeedCounted, ...]


def kept_counts(store: Store, now: datetime) -> Counted:
    conn = store.conn
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    marked = "SELECT count(*) FROM items WHERE duplicate = 1 AND first_seen_at >= ?"
    kept = {r[0]: r[1:] for r in conn.execute("SELECT feed_id, items, republished FROM feed_counts")}
    return Counted(
        items=store.count("items"),
        clusters=store.count("clusters"),
        duplicates_today=conn.execute(marked, (iso(midnight),)).fetchone()[0],
        duplicates_7d=conn.execute(marked, (iso(now - stats.WEEK),)).fetchone()[0],
        duplicates_all=conn.execute("SELECT count(*) FROM items WHERE duplicate = 1").fetchone()[0],
        per_feed=tuple(FeedCounted(f, *kept.get(f, (0, 0))) for (f,) in conn.execute("SELECT id FROM feeds")),
    )


def check_counters(store: Store, now: datetime | None = None) -> stats.Stats | Counted:
    """Marks, feed counters and every `stats` number equal the from-scratch computation.
    Returns `stats.compute`'s figures on SQLite; on PostgreSQL the same numbers read from
    the marks and counters (stats.compute there is the read path's part of #17)."""
    now = now or utcnow()
    conn = store.conn
    marks = {
        r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, duplicate, republished FROM items")
    }
    expected = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(REFERENCE_MARKS)}
    assert marks == expected
    counted = {
        r[0]: r[1:]
        for r in conn.execute("SELECT feed_id, items, duplicates, republished FROM feed_counts")
        if any(r[1:])
    }
    recounted = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT feed_id, count(*), sum(duplicate), sum(republished) FROM items GROUP BY feed_id"
        )
    }
    assert counted == recounted
    got = kept_counts(store, now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    today, week, total = conn.execute(
        REFERENCE_DUPLICATES, (iso(midnight), iso(now - stats.WEEK))
    ).fetchone()
    assert (got.duplicates_today, got.duplicates_7d, got.duplicates_all) == (today, week, total)
    per_feed = {s.id: (s.items, s.republished) for s in got.per_feed}
    assert per_feed == {r[0]: tuple(r[1:]) for r in conn.execute(REFERENCE_PER_FEED)}
    if not store.on_file:
        return got
    shown = stats.compute(store, now)
    assert (shown.items, shown.clusters) == (got.items, got.clusters)
    assert (shown.duplicates_today, shown.duplicates_7d, shown.duplicates_all) == (today, week, total)
    assert {s.id: (s.items, s.republished) for s in shown.per_feed} == per_feed
    return shown


def set_first_seen(store: Store, days_ago: dict[int, float]) -> None:
    with store.transaction():
        for item_id, days in days_ago.items():
            at = iso(utcnow() - timedelta(days=days))
            store.conn.execute("UPDATE items SET first_seen_at = ? WHERE id = ?", (at, item_id))


def test_counters_follow_inserts_and_joins(world: World) -> None:
    mixed_feeds(world)
    world.fetch()
    got = check_counters(world.store)
    assert got.duplicates_all > 5 and any(s.republished for s in got.per_feed)
    # a second poll adds copies to existing clusters
    title, paragraphs = article("bridge")
    world.feed("late", Entry("l1", title, as_html(paragraphs), link("late", "bridge"), ago(1)))
    world.fetch()
    check_counters(world.store)


def test_counters_follow_items_that_move_between_clusters(world: World) -> None:
    bridge_t, bridge_p = article("bridge")
    strike_t, strike_p = article("rail_strike")
    world.feed("a", Entry("a1", bridge_t, as_html(bridge_p), link("a", "1"), ago(9)))
    world.feed(
        "b",
        Entry("b1", "Bridge shut", syndicated("bridge", "Bridge", "B"), link("b", "1"), ago(7)),
        Entry("b2", strike_t, as_html(strike_p), link("b", "2"), ago(6)),
    )
    world.fetch()
    ids = world.ids()
    # b2 was first seen after a1: once a1 carries the strike story it is the story's
    # first-seen member and b2 becomes the duplicate; b1 is left alone in the bridge cluster
    set_first_seen(world.store, {ids["a", "a1"]: 2, ids["b", "b1"]: 1, ids["b", "b2"]: 1})
    check_counters(world.store)
    world.feed("a", Entry("a1", "Strike vote", syndicated("rail_strike", "Strike", "A"),
                          link("a", "1"), ago(9)))  # fmt: skip
    report = world.fetch()
    assert report.updated_items == 1
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b2")
    marks = dict(world.store.conn.execute("SELECT id, duplicate FROM items").fetchall())
    assert (marks[ids["a", "a1"]], marks[ids["b", "b2"]], marks[ids["b", "b1"]]) == (0, 1, 0)
    check_bookkeeping(world.store)
    check_counters(world.store)


def test_counters_follow_a_recluster(world: World) -> None:
    mixed_feeds(world)
    world.fetch()
    settings = world.config().settings.dedup
    before = check_counters(world.store)
    # stricter thresholds split stories: other representatives, other duplicates
    Clusterer(replace(settings, threshold=0.95, lede_threshold=0.95, containment=0.99)).recluster(world.store)
    strict = check_counters(world.store)
    assert strict.clusters > before.clusters
    Clusterer(settings).recluster(world.store)
    assert check_counters(world.store).duplicates_all == before.duplicates_all


def test_counters_follow_pruning(world: World) -> None:
    mixed_feeds(world)
    world.fetch()
    ids = sorted(world.ids().values())
    # the first third was first seen 40 days ago, the rest over the last days
    set_first_seen(
        world.store, {i: (40 if n < len(ids) // 3 else n % 5) for n, i in enumerate(ids)}
    )
    before = check_counters(world.store)
    deleted, _ = prune(world.store, utcnow() - timedelta(days=30))
    assert deleted == len(ids) // 3
    after = check_counters(world.store)
    # every member left in a cluster that lost members counts as a duplicate
    pruned_members = world.store.conn.execute(
        "SELECT count(*), sum(i.duplicate) FROM items i JOIN clusters c ON c.id = i.cluster_id"
        " WHERE c.pruned > 0"
    ).fetchone()
    assert pruned_members[0] > 0 and pruned_members[0] == pruned_members[1]
    assert after.items == before.items - deleted


def test_counters_follow_hand_run_sql(world: World) -> None:
    """A writer outside the aggregator (the sqlite3 shell) cannot break the counters."""
    mixed_feeds(world)
    world.fetch()
    conn = world.store.conn
    cid, rep = conn.execute(
        "SELECT id, representative_id FROM clusters WHERE size >= 3 ORDER BY id LIMIT 1"
    ).fetchone()
    other = conn.execute(
        "SELECT id FROM items WHERE cluster_id = ? AND id != ? ORDER BY id DESC LIMIT 1", (cid, rep)
    ).fetchone()[0]
    conn.execute("UPDATE items SET first_seen_at = '2000-01-01T00:00:00Z' WHERE id = ?", (other,))
    check_counters(world.store)
    conn.execute("UPDATE clusters SET representative_id = ? WHERE id = ?", (other, cid))
    check_counters(world.store)
    conn.execute("DELETE FROM signatures WHERE item_id = ?", (other,))
    conn.execute("DELETE FROM items WHERE id = ?", (other,))
    check_counters(world.store)
    conn.execute("UPDATE clusters SET pruned = 1 WHERE id = ?", (cid,))
    check_counters(world.store)
    loner = conn.execute(
        "SELECT id, cluster_id FROM items WHERE cluster_id != ? LIMIT 1", (cid,)
    ).fetchone()
    conn.execute("UPDATE items SET cluster_id = NULL WHERE id = ?", (loner[0],))
    check_counters(world.store)
    conn.execute("UPDATE items SET cluster_id = ? WHERE id = ?", (cid, loner[0]))
    check_counters(world.store)


def test_migration_backfills_an_older_database(older_schema) -> None:
    """SQLite only: a PostgreSQL database starts at schema 13 (migrations/postgres), so
    there is no older one to backfill."""
    db, old = older_schema(5)
    Store.open(db, migrations_dir=old).close()
    now = utcnow()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO feeds (id, url, name, created_at) VALUES (?, ?, ?, '2026-01-01T00:00:00Z')",
            [(f, f"https://f{f}.example/", f"f{f}") for f in (1, 2, 3)],
        )
        # cluster 1: f1 first (rep), f2 and f3 copies; cluster 2: f2 alone; cluster 3 lost
        # its first members to retention; item 7 is not clustered
        conn.executemany(
            "INSERT INTO clusters (id, representative_id, size, feed_count, pruned, created_at)"
            " VALUES (?, ?, ?, ?, ?, '2026-01-01T00:00:00Z')",
            [(1, 1, 3, 3, 0), (2, 4, 1, 1, 0), (3, 5, 4, 2, 2)],
        )
        rows = [(1, 1, 1, 30), (2, 2, 1, 5), (3, 3, 1, 0), (4, 2, 2, 3), (5, 3, 3, 2),
                (6, 1, 3, 1), (7, 1, None, 0)]  # fmt: skip
        conn.executemany(
            "INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,"
            " changed_at, content_hash, cluster_id) VALUES (?, ?, ?, 't', 'x', ?, ?, ?, ?, ?)",
            [(i, f, f"k{i}", iso(now - timedelta(days=d, hours=i)), iso(now - timedelta(days=d)),
              iso(now), f"h{i}", c) for i, f, c, d in rows],
        )  # fmt: skip
    store = Store.open(db)
    try:
        got = check_counters(store, now)
        marks = {
            r[0]: r[1:] for r in store.conn.execute("SELECT id, duplicate, republished FROM items")
        }
        assert marks == {
            1: (0, 0),
            2: (1, 1),
            3: (1, 1),
            4: (0, 0),
            5: (1, 0),
            6: (1, 1),
            7: (0, 0),
        }
        assert (got.duplicates_today, got.duplicates_7d, got.duplicates_all) == (1, 4, 4)
    finally:
        store.close()
