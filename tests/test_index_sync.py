"""The in-memory dedup index stays in step with the database when another process writes
clusters (`aggregator fetch` beside the daemon, a prune), and after a failed transaction.

Two "processes" are two Store connections and two Clusterers on one database (`db_target`:
an SQLite file, then a PostgreSQL database); each feed's items are written as
poll._store_document writes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.config import DedupSettings
from aggregator.ingest.normalize import content_hash
from aggregator.records import Item
from aggregator.service.clustering import Clusterer
from aggregator.store.clusters import index_state
from aggregator.store.database import Store
from aggregator.store.upkeep import prune

DATA = Path(__file__).parent / "data" / "dedup"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SETTINGS = DedupSettings()


class Failed(Exception):
    pass


def text_of(name: str) -> tuple[str, str]:
    head, _, body = (DATA / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    return head.strip(), " ".join(body.split())


def item(key: str, name: str, url: str, when: datetime = T0, extra: str = "") -> Item:
    title, text = text_of(name)
    text += extra
    return Item(key=key, url=url, canonical_url=url, title=title, text=text, author=None,
                published=when, updated=None, content_hash=content_hash(title, text))  # fmt: skip


def feed(store: Store, name: str) -> int:
    with store.transaction():
        store.conn.execute(
            "INSERT INTO feeds (url, name, created_at) VALUES (?, ?, '2026-01-01T00:00:00Z')"
            " ON CONFLICT (url) DO NOTHING",
            (f"https://{name}.example/feed", name),
        )
    return store.conn.execute("SELECT id FROM feeds WHERE name = ?", (name,)).fetchone()[0]


def store_feed(store: Store, clusterer: Clusterer, feed_id: int, items: list[Item], now: datetime,
               fail: bool = False) -> None:  # fmt: skip
    """One feed's transaction, as the poll writes it; `fail` makes it roll back after
    clustering."""
    try:
        with store.transaction():
            stored = store.stored_items(feed_id, [i.key for i in items])
            fresh = [i for i in items if i.key not in stored]
            changed = [(stored[i.key].id, feed_id, i, stored[i.key]) for i in items
                       if i.key in stored and stored[i.key].content_hash != i.content_hash]  # fmt: skip
            ids = store.insert_items(feed_id, fresh, now)
            for item_id, _, it, _ in changed:
                store.update_item(item_id, it, now)
            clusterer.assign(store, [(i, feed_id, it) for i, it in zip(ids, fresh, strict=True)], changed, now)
            if fail:
                raise Failed
    except Failed:
        clusterer.rollback()
        return
    clusterer.commit()


def cluster(store: Store, key: str) -> int:
    return store.conn.execute("SELECT cluster_id FROM items WHERE key = ?", (key,)).fetchone()[0]


@pytest.fixture
def two(db_target: Path | str) -> Iterator[tuple[Store, Store]]:
    daemon, other = Store.open(db_target), Store.open(db_target)
    try:
        yield daemon, other
    finally:
        daemon.close()
        other.close()


def test_an_item_edited_elsewhere_is_not_joined_through_its_stale_row(two) -> None:
    """The daemon indexed X (link u, cluster 1); another process edits X into another
    story, which moves it to a new cluster and deletes cluster 1. The daemon's next item
    with link u must join X where it is now (its stale row named cluster 1: FOREIGN KEY
    constraint failed, on every poll of that feed)."""
    daemon, other = two
    d, o = Clusterer(SETTINGS), Clusterer(SETTINGS)
    a, b = feed(daemon, "a"), feed(daemon, "b")
    u = "https://a.example/news/story-1"
    store_feed(daemon, d, a, [item("x", "bridge", u)], T0)
    store_feed(other, o, a, [item("x", "library_fire", u)], T0 + timedelta(hours=1))
    assert daemon.conn.execute("SELECT count(*) FROM clusters").fetchone()[0] == 1  # cluster 1 is gone
    store_feed(daemon, d, b, [item("y", "rail_strike", u)], T0 + timedelta(hours=2))
    assert cluster(daemon, "y") == cluster(daemon, "x")
    # and a copy of X's old text no longer joins X
    store_feed(daemon, d, b, [item("z", "bridge", "https://b.example/other")], T0 + timedelta(hours=3))
    assert cluster(daemon, "z") != cluster(daemon, "x")


def test_a_poll_with_only_changed_items_sees_items_stored_elsewhere(two) -> None:
    daemon, other = two
    d, o = Clusterer(SETTINGS), Clusterer(SETTINGS)
    a, b = feed(daemon, "a"), feed(daemon, "b")
    store_feed(daemon, d, a, [item("x", "rail_strike", "https://a.example/n/x")], T0)
    store_feed(other, o, b, [item("y", "bridge", "https://b.example/n/y")], T0 + timedelta(minutes=1))
    # x is edited into y's story: it must move to y's cluster, which only the other process indexed
    store_feed(daemon, d, a, [item("x", "bridge", "https://a.example/n/x")], T0 + timedelta(minutes=2))
    assert cluster(daemon, "x") == cluster(daemon, "y")


def test_alternating_writers_catch_up_without_rebuilding(two, monkeypatch) -> None:
    """The daemon and `aggregator fetch` writing in turn: each indexes only what the
    other placed (a full rebuild per transaction cost ~5 s at 200k indexed items), and
    copies still find each other across the two."""
    daemon, other = two
    d, o = Clusterer(SETTINGS), Clusterer(SETTINGS)
    a, b = feed(daemon, "a"), feed(daemon, "b")
    store_feed(daemon, d, a, [item("seed", "market_wrap_1", "https://a.example/seed")], T0)
    store_feed(other, o, b, [item("seed-b", "market_wrap_2", "https://b.example/seed")], T0)
    loads: list[int] = []
    original = Clusterer._load
    monkeypatch.setattr(Clusterer, "_load", lambda self, *args: loads.append(1) or original(self, *args))
    names = ["bridge", "library_fire", "rail_strike", "match_1", "match_2"]
    for i, name in enumerate(names):  # each story first in one process, its copy in the other
        first, second = ((daemon, d, a), (other, o, b)) if i % 2 else ((other, o, b), (daemon, d, a))
        store_feed(*first, [item(f"{name}-1", name, f"https://one.example/{name}")], T0 + timedelta(minutes=2 * i))
        store_feed(*second, [item(f"{name}-2", name, f"https://two.example/{name}", extra=" Updated.")],
                   T0 + timedelta(minutes=2 * i + 1))  # fmt: skip
    assert loads == []
    for name in names:
        assert cluster(daemon, f"{name}-1") == cluster(daemon, f"{name}-2"), name
    assert d.in_step(daemon) and not o.in_step(other)  # o has yet to see d's last write
    assert len(d.index) == len(o.index) + 1


def test_a_failed_load_is_not_in_step(two) -> None:
    """An index rebuild that fails half-way (a damaged signature row) must not be taken
    for a complete one: the next use rebuilds it."""
    daemon, _ = two
    a = feed(daemon, "a")
    store_feed(daemon, Clusterer(SETTINGS), a, [item("x", "bridge", "https://a.example/x")], T0)
    with daemon.transaction():
        daemon.conn.execute('UPDATE signatures SET "full" = ?', (b"\x01\x02\x03\x04\x05",))
    d = Clusterer(SETTINGS)
    with pytest.raises(ValueError):
        d.load(daemon, T0)
    assert not d.in_step(daemon) and d.must_reload(daemon)


def test_items_pruned_elsewhere_leave_the_index(two) -> None:
    daemon, other = two
    d = Clusterer(SETTINGS)
    a, b = feed(daemon, "a"), feed(daemon, "b")
    u = "https://a.example/news/old"
    store_feed(daemon, d, a, [item("x", "bridge", u)], T0)
    assert prune(other, T0 + timedelta(days=1)) == (1, 1)  # X and its cluster are gone
    store_feed(daemon, d, b, [item("y", "rail_strike", u)], T0 + timedelta(hours=2))
    assert daemon.conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1


def test_an_index_loaded_inside_a_failed_transaction_is_dropped(two) -> None:
    """A process's first assign builds the index inside its write transaction, where it
    sees that transaction's uncommitted edits. If the transaction fails, the index must
    not keep them (here X's new link, which was never committed)."""
    daemon, _ = two
    a, b = feed(daemon, "a"), feed(daemon, "b")
    store_feed(daemon, Clusterer(SETTINGS), a, [item("x", "bridge", "https://a.example/n/old")], T0)
    d = Clusterer(SETTINGS)  # a new process: no index yet
    store_feed(daemon, d, a, [item("x", "bridge", "https://a.example/n/new", extra=" Updated.")],
               T0 + timedelta(hours=1), fail=True)  # fmt: skip
    assert (d.generation, d.writes, len(d.index)) == (-1, -1, 0)  # rebuilt on next use
    store_feed(daemon, d, b, [item("y", "rail_strike", "https://a.example/n/new")], T0 + timedelta(hours=2))
    assert cluster(daemon, "y") != cluster(daemon, "x")
    assert d.writes == index_state(daemon)[1]


def test_own_writes_keep_the_index_in_step_and_a_rollback_does_not_count(two) -> None:
    daemon, _ = two
    d = Clusterer(SETTINGS)
    a = feed(daemon, "a")
    store_feed(daemon, d, a, [item("x", "bridge", "https://a.example/1")], T0)
    assert d.in_step(daemon)
    loads = d.rebuild_seconds
    store_feed(daemon, d, a, [item("y", "rail_strike", "https://a.example/2")], T0, fail=True)
    assert d.in_step(daemon)
    store_feed(daemon, d, a, [item("z", "library_fire", "https://a.example/3")], T0)
    assert d.in_step(daemon) and d.rebuild_seconds == loads  # never reloaded


def test_rollback_of_an_edit_after_catching_up_leaves_one_row_per_item(two) -> None:
    """B re-placed X; A catches up (a new row for X) and edits X in the same transaction
    (that row retired), then rolls back: A's index is as before the transaction (one
    live row for X, not in step), and its next transaction catches up again."""
    daemon, other = two
    d, o = Clusterer(SETTINGS), Clusterer(SETTINGS)
    a = feed(daemon, "a")
    store_feed(daemon, d, a, [item("x", "bridge", "https://a.example/x")], T0)
    store_feed(other, o, a, [item("x", "rail_strike", "https://a.example/x")], T0)
    store_feed(daemon, d, a, [item("x", "library_fire", "https://a.example/x")], T0, fail=True)
    x_id, x_cluster = daemon.conn.execute("SELECT id, cluster_id FROM items WHERE key = 'x'").fetchone()
    assert len(d.index.rows_of_item(x_id)) == 1 and not d.in_step(daemon)
    store_feed(daemon, d, a, [item("y", "market_wrap_1", "https://a.example/y")], T0)
    rows = d.index.rows_of_item(x_id)
    assert len(rows) == 1 and int(d.index.cluster_ids[rows[0]]) == x_cluster and d.in_step(daemon)


def test_catching_up_reads_the_placed_items_through_their_index(tmp_path: Path) -> None:
    """The catch-up query must not scan the items table (with ORDER BY id SQLite chose
    a scan in id order: ~150 ms at 100k items, per interleaved transaction). SQLite only:
    its planner's choice is fixed by the SQL; PostgreSQL's follows its table statistics
    (an almost empty table is scanned whatever its indexes), so there is no plan to pin."""
    daemon = Store.open(tmp_path / "a.db")
    try:
        plan = " ".join(
            row[-1]
            for row in daemon.conn.execute(
                "EXPLAIN QUERY PLAN " + _placed_since_sql(daemon), (0,)
            )
        )
    finally:
        daemon.close()
    assert "items_placed_seq" in plan and "SCAN i" not in plan.replace("SCAN i USING", "")


def _placed_since_sql(store: Store) -> str:
    """The SQL ClusterStore.placed_since runs, captured from a traced connection."""
    from aggregator.store.clusters import ClusterStore

    seen: list[str] = []
    store.conn.set_trace_callback(seen.append)
    try:
        list(ClusterStore(store).placed_since(0))
    finally:
        store.conn.set_trace_callback(None)
    sql = next(q for q in seen if "placed_seq >" in q)
    return sql.replace("placed_seq > 0", "placed_seq > ?")


def test_a_database_at_schema_9_gets_placed_seq(older_schema) -> None:
    """Migration 009 first carried the placed_seq column too; it moved to 010, so a
    database at 9 (from that first version, or from this one) is upgraded either way.
    SQLite only: a PostgreSQL database starts at schema 13."""
    path, folder = older_schema(9)
    Store.open(path, migrations_dir=folder).close()
    store = Store.open(path)
    try:
        columns = {r[1] for r in store.conn.execute("PRAGMA table_info(items)")}
        assert "placed_seq" in columns
        d = Clusterer(SETTINGS)
        store_feed(store, d, feed(store, "a"), [item("x", "bridge", "https://a.example/x")], T0)
        assert store.conn.execute("SELECT placed_seq FROM items").fetchone()[0] == d.writes == 1
    finally:
        store.close()
