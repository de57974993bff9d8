"""Many items joining one story cluster (issue #12, item 10): the duplication marks of
aggregator/store/migrations/sqlite/006 must cost the same per item whatever the cluster's size
(aggregator/store/migrations/sqlite/012). Work is counted in SQLite virtual-machine steps (the progress
handler), which are the same on any machine however busy: a fetch of one feed of N
identical entries over 127.0.0.1 into a real SQLite file, then a recluster and a prune of
that database, at N = 1,000 and 4,000. Before 012 every joining item re-marked the whole
cluster, so the steps per item grew with N (about 4x from 1,000 to 4,000).

The marks themselves are checked against the from-scratch computation of tests/test_counters
after every step, after random hand-run writes, and after the upgrade of a database at
schema 011. bench/cluster_writes.py prints the seconds.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from random import Random

import pytest
from feedserver import FeedServer
from harness import record
from test_clustering import Entry, World, ago, article, as_html, link, mixed_feeds, rss
from test_counters import check_counters

from aggregator.config import dump_yaml, parse_config
from aggregator.service.app import fetch_all
from aggregator.service.clustering import Clusterer
from aggregator.store.database import Store
from aggregator.store.upkeep import prune
from aggregator.timeutil import iso, utcnow

REPO = Path(__file__).resolve().parents[2]
SIZES = (1000, 4000)
STEP_GRAIN = 100  # the progress handler runs every this many VM steps
# Per-item steps may grow this much from 1,000 to 4,000 items: the cluster's stats are
# recomputed once per transaction (ClusterStore.refresh), a scan of its members that a
# recluster repeats for each batch of 2,000 items. Before 012 the growth was ~4x.
GROWTH_ALLOWED = 1.25
TEXT = (
    "<p>The harbour bridge will close for repairs from Monday, the city council said on "
    "Tuesday, after inspectors found corrosion in two of the main cables that carry its deck.</p>"
)


@contextmanager
def vm_steps(conn) -> Iterator[list[int]]:
    """Counts the SQLite virtual-machine steps run on `conn` inside the block."""
    counted = [0]

    def tick() -> int:
        counted[0] += STEP_GRAIN
        return 0  # go on

    conn.set_progress_handler(tick, STEP_GRAIN)
    try:
        yield counted
    finally:
        conn.set_progress_handler(None, STEP_GRAIN)


def identical_entries(n: int) -> bytes:
    """One feed of `n` entries that differ only in their guid: one story, `n` times."""
    published = ago(2)
    return rss("Mirror", [Entry(f"copy-{i}", "Harbour bridge to close for repairs", TEXT,
                                link("mirror", "harbour-bridge"), published) for i in range(n)])  # fmt: skip


@dataclass(frozen=True)
class Figures:
    """Steps per item of each write to a database holding one story `items` times."""

    items: int
    fetch: float
    recluster: float
    prune: float


def one_story(tmp: Path, server: FeedServer, n: int) -> Figures:
    """Fetch a feed of `n` identical entries, recluster, prune half, counting steps; the
    marks must match the from-scratch computation after each."""
    server.set(f"/mirror{n}.xml", identical_entries(n))
    text = dump_yaml({"settings": {"http": "off", "parse_workers": 0, "max_bytes": "50MB"},
                           "feeds": [{"url": server.url(f"/mirror{n}.xml"), "name": "mirror"}]})  # fmt: skip
    (tmp / "feeds.yaml").write_text(text, encoding="utf-8")
    config = parse_config(text, tmp / "feeds.yaml")
    store = Store.open(tmp / "agg.db")
    try:
        with vm_steps(store.conn) as fetched:
            report = fetch_all(config, store)
        assert report.errors == 0 and report.new_items == n
        assert store.conn.execute("SELECT max(size), count(*) FROM clusters").fetchone() == (n, 1)
        check_counters(store)
        with vm_steps(store.conn) as reclustered:
            assert Clusterer(config.settings.dedup).recluster(store) == 1
        check_counters(store)
        with store.transaction():  # half the copies were first seen 40 days ago
            store.conn.execute(
                "UPDATE items SET first_seen_at = ? WHERE id <= ?",
                (iso(utcnow() - timedelta(days=40)), n // 2),
            )
        with vm_steps(store.conn) as pruned:
            assert prune(store, utcnow() - timedelta(days=30)) == (n // 2, 0)
        check_counters(store)
    finally:
        store.close()
    return Figures(n, fetched[0] / n, reclustered[0] / n, pruned[0] / (n // 2))


@pytest.fixture(scope="module")
def figures(tmp_path_factory) -> dict[int, Figures]:
    with FeedServer() as server:
        got = {n: one_story(tmp_path_factory.mktemp(f"story{n}"), server, n) for n in SIZES}
    for f in got.values():
        record(
            f"one story of {f.items:,} copies, VM steps per item",
            f"fetch {f.fetch:,.0f}, recluster {f.recluster:,.0f}, prune {f.prune:,.0f}",
        )
    return got


def growth(figures: dict[int, Figures], write: str) -> float:
    small, large = (getattr(figures[n], write) for n in SIZES)
    return large / small


def test_a_feed_of_identical_entries_costs_the_same_per_item_at_any_size(figures) -> None:
    assert growth(figures, "fetch") <= GROWTH_ALLOWED, figures


def test_reclustering_one_big_story_costs_the_same_per_item_at_any_size(figures) -> None:
    assert growth(figures, "recluster") <= GROWTH_ALLOWED, figures


def test_pruning_one_big_story_costs_the_same_per_item_at_any_size(figures) -> None:
    assert growth(figures, "prune") <= GROWTH_ALLOWED, figures


# ---------------------------------------------------------------- the marks stay exact


class HandWriter:
    """Random writes to clusters and items as a writer outside the aggregator (the sqlite3
    shell) could make them, keeping what every aggregator write keeps: a cluster's
    representative is one of its members, and a cluster without members is deleted."""

    def __init__(self, store: Store, rng: Random):
        self.conn = store.conn
        self.rng = rng
        self.next_id = 1
        self.conn.executemany(
            "INSERT INTO feeds (id, url, created_at) VALUES (?, ?, '2026-01-01T00:00:00Z')",
            [(f, f"https://f{f}.example/") for f in range(1, 5)],
        )

    def seen(self) -> str:
        """First-seen times from a few values, so ties between members are common."""
        return f"2026-01-{self.rng.randint(1, 6):02d}T00:00:00Z"

    def pick(self, sql: str, *params: object) -> int | None:
        ids = [r[0] for r in self.conn.execute(sql + " ORDER BY id", params)]
        return self.rng.choice(ids) if ids else None

    def item(self) -> int | None:
        return self.pick("SELECT id FROM items")

    def cluster(self) -> int | None:
        return self.pick("SELECT id FROM clusters")

    def insert(self, cluster: int | None) -> int:
        item_id, self.next_id = self.next_id, self.next_id + 1
        self.conn.execute(
            "INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,"
            " changed_at, content_hash, cluster_id) VALUES (?, ?, ?, 't', 'x', ?, ?, ?, 'h', ?)",
            (
                item_id,
                self.rng.randint(1, 4),
                f"k{item_id}",
                self.seen(),
                self.seen(),
                self.seen(),
                cluster,
            ),
        )
        return item_id

    def new_story(self) -> None:
        """As the aggregator adds one: the item, its cluster, the item joins it."""
        item_id = self.insert(None)
        cid = self.conn.execute("SELECT coalesce(max(id), 0) + 1 FROM clusters").fetchone()[0]
        self.conn.execute(
            "INSERT INTO clusters (id, representative_id, size, created_at) VALUES (?, ?, 1, ?)",
            (cid, item_id, self.seen()),
        )
        self.conn.execute("UPDATE items SET cluster_id = ? WHERE id = ?", (cid, item_id))

    def tidy(self) -> None:
        """Representatives back among their members (the earliest published, as
        ClusterStore.refresh picks them); clusters left empty deleted."""
        self.conn.execute(
            "DELETE FROM clusters WHERE NOT EXISTS (SELECT 1 FROM items WHERE cluster_id = clusters.id)"
        )
        self.conn.execute(
            """UPDATE clusters SET representative_id = (SELECT id FROM items WHERE cluster_id = clusters.id
                                                       ORDER BY published_at, id LIMIT 1)
               WHERE NOT EXISTS (SELECT 1 FROM items WHERE id = clusters.representative_id
                                 AND cluster_id = clusters.id)"""
        )

    def step(self) -> str:
        """One random write (several rows for some); returns what it did."""
        c, rng = self.conn, self.rng
        action = rng.choice(["join", "join", "story", "move", "move_all", "unclustered", "seen",
                             "seen_all", "feed", "delete", "delete_seen", "pruned", "representative"])  # fmt: skip
        cluster, item = self.cluster(), self.item()
        if action == "story" or cluster is None or item is None:
            self.new_story()
            return "story"
        if action == "join":
            self.insert(cluster)
        elif action == "move":
            c.execute("UPDATE items SET cluster_id = ? WHERE id = ?", (cluster, item))
        elif action == "move_all":  # every member of one story into another
            c.execute(
                "UPDATE items SET cluster_id = ? WHERE cluster_id = ?", (cluster, self.cluster())
            )
        elif action == "unclustered":
            c.execute("UPDATE items SET cluster_id = NULL WHERE id = ?", (item,))
        elif action == "seen":
            c.execute("UPDATE items SET first_seen_at = ? WHERE id = ?", (self.seen(), item))
        elif action == "seen_all":
            c.execute(
                "UPDATE items SET first_seen_at = ? WHERE cluster_id = ?", (self.seen(), cluster)
            )
        elif action == "feed":  # representatives included
            c.execute("UPDATE items SET feed_id = ? WHERE id = ?", (rng.randint(1, 4), item))
        elif action == "delete":
            c.execute("DELETE FROM items WHERE id = ?", (item,))
        elif action == "delete_seen":  # as retention does
            c.execute(
                "DELETE FROM items WHERE first_seen_at < ? AND cluster_id = ?",
                (self.seen(), cluster),
            )
        elif action == "pruned":
            c.execute(
                "UPDATE clusters SET pruned = ? WHERE id = ?", (rng.choice([0, 0, 1, 3]), cluster)
            )
        elif action == "representative":
            member = self.pick("SELECT id FROM items WHERE cluster_id = ?", cluster)
            c.execute("UPDATE clusters SET representative_id = ? WHERE id = ?", (member, cluster))
        self.tidy()
        return action


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_marks_follow_random_hand_run_writes(tmp_path: Path, seed: int) -> None:
    store = Store.open(tmp_path / "agg.db")
    try:
        writer = HandWriter(store, Random(seed))
        done, clusters, largest = [], 0, 0
        for _ in range(400):
            done.append(writer.step())
            try:
                check_counters(store)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, after {done[-5:]}: {exc}") from None
            clusters = max(clusters, store.count("clusters"))
            largest = max(largest, store.conn.execute(
                "SELECT coalesce(max(size), 0) FROM (SELECT count(*) AS size FROM items"
                " WHERE cluster_id IS NOT NULL GROUP BY cluster_id)").fetchone()[0])  # fmt: skip
        # the random walk reached the cases that matter: every write, several stories, big ones
        assert len(set(done)) == 12 and clusters >= 5 and largest >= 8, (clusters, largest)
    finally:
        store.close()


def _copy_rows(source: Path, target: Path) -> None:
    """Feeds (the columns schema 11 has), clusters, items and signatures, in that order."""
    conn = sqlite3.connect(target)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (str(source),))
        for table in ("feeds", "clusters", "items", "signatures"):
            columns = ", ".join(r[1] for r in conn.execute(f"PRAGMA main.table_info({table})"))
            conn.execute(f"INSERT INTO main.{table} ({columns}) SELECT {columns} FROM src.{table}")
        conn.commit()
        conn.execute("DETACH DATABASE src")
    finally:
        conn.close()


def test_a_database_at_schema_11_migrates_with_the_same_counters(tmp_path: Path, feed_server: FeedServer,
                                                                 older_schema) -> None:  # fmt: skip
    db, old = older_schema(11)
    Store.open(db, migrations_dir=old).close()
    # the rows a real fetch stores (the code writes today's schema), copied into the
    # schema-11 file as they are: its 006 triggers mark them as an 011 database had them
    world = World(tmp_path, feed_server, Store.open(tmp_path / "today.db"))
    mixed_feeds(world)
    world.fetch()
    world.store.close()
    _copy_rows(tmp_path / "today.db", db)
    store = Store.open(db, migrations_dir=old)
    world.store = store
    now = utcnow()

    def counters(store: Store) -> tuple:
        """Every `stats` figure but the file sizes, the marks and the feed counters."""
        figures = check_counters(store, now).to_json()
        del figures["database"]
        return (figures, store.conn.execute("SELECT id, duplicate, republished FROM items ORDER BY id").fetchall(),
                store.conn.execute("SELECT * FROM feed_counts ORDER BY feed_id").fetchall())  # fmt: skip

    before = counters(store)
    assert before[0]["duplicates"]["all"] > 5 and any(
        f["republished"] for f in before[0]["per_feed"]
    )
    store.close()

    world.store = store = Store.open(db)
    try:
        applied = [r[0] for r in store.conn.execute("SELECT name FROM schema_version")]
        assert "012_linear_cluster_marks.sql" in applied
        indexes = {
            r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert "items_cluster_seen" in indexes and "items_cluster" not in indexes
        assert counters(store) == before
        # and the new triggers keep them: a late copy joins an existing story
        title, paragraphs = article("bridge")
        world.feed("late", Entry("l1", title, as_html(paragraphs), link("late", "bridge"), ago(1)))
        world.fetch()
        assert check_counters(store).duplicates_all == before[0]["duplicates"]["all"] + 1
    finally:
        store.close()


@pytest.mark.bench_smoke
def test_the_benchmark_runs() -> None:
    """bench/cluster_writes.py --quick (the figures themselves are not asserted)."""
    proc = subprocess.run([sys.executable, "bench/cluster_writes.py", "--quick", "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["runs"]
    assert [r["items"] for r in rows] == [200, 400]
    assert all(r["clusters"] == 1 and r["largest"] == r["items"] for r in rows)
    assert all(r["fetch_s"] > 0 and r["recluster_s"] > 0 and r["store_writes_s"] > 0 for r in rows)
