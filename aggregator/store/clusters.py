"""What the clusterer reads and writes: stored signatures, cluster rows, item assignments,
and the counters that keep every process's in-memory index in step with the store."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from ..timeutil import iso
from .database import Store

# What the dedup index keeps of an item (ClusterStore.signatures_since); for a row signed
# before migration 011 the link is a key, and the content hash where there is any text.
REFRESH_CHUNK = 500  # clusters refreshed per statement (a recluster's batch touches up to 2,000)

_INDEXED_COLUMNS = """i.id, i.cluster_id, i.first_seen_at, s.kind, s.size, s.lede_size, s.full, s.lede,
    i.canonical_url, i.content_hash, i.feed_id, i.title, s.paragraphs,
    coalesce(s.exact_keys, CASE WHEN length(i.text) > 0 THEN 3 ELSE 2 END)"""


class ClusterStore:
    """Cluster bookkeeping on top of Store: signatures, memberships, cluster stats."""

    def __init__(self, store: Store):
        self.store = store
        self.conn = store.conn

    def signatures_since(self, since: datetime, batch: int = 20_000) -> Iterator[list[tuple]]:
        """(item id, cluster id, first seen, kind, size, lede size, full, lede, canonical URL,
        content hash, feed id, title, paragraph keys, own body) of clustered items first seen
        since `since`, in item order, in batches."""
        cur = self.conn.execute(
            f"""SELECT {_INDEXED_COLUMNS}
               FROM items i JOIN signatures s ON s.item_id = i.id
               WHERE i.first_seen_at >= ? AND i.cluster_id IS NOT NULL ORDER BY i.id""",
            (iso(since),),
        )
        while rows := cur.fetchmany(batch):
            yield rows

    def next_cluster_id(self) -> int:
        """The id the next new cluster gets (inside the caller's write transaction)."""
        return self.conn.execute("SELECT coalesce(max(id), 0) + 1 FROM clusters").fetchone()[0]

    def add_singletons(
        self, singletons: Iterable[tuple[int, int, datetime, int, float | None, str | None, bytes | None]],
        now: datetime,
    ) -> None:  # fmt: skip
        """(cluster id, item id, published, story id, story score, story terms, story
        weights) of clusters whose only member is the item, their stats already known;
        ids from next_cluster_id() onwards."""
        stamp = iso(now)
        self.conn.executemany(
            """INSERT INTO clusters (id, representative_id, size, feed_count, first_seen,
                                     last_seen, updated_at, created_at, story_id, story_score, story_terms,
                                     story_weights)
               VALUES (?, ?, 1, 1, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [(cid, item_id, iso(published), iso(published), stamp, stamp, story, score, terms, weights)
             for cid, item_id, published, story, score, terms, weights in singletons],
        )  # fmt: skip

    def move_to_stories(self, moves: Iterable[tuple[int, int, float]]) -> None:
        """(cluster id, story id, score) of clusters that moved to another story."""
        self.conn.executemany(
            "UPDATE clusters SET story_id = ?, story_score = ? WHERE id = ?",
            [(story, score, cid) for cid, story, score in moves],
        )

    def story_rows(self, after_id: int, created_since: datetime) -> Iterator[tuple]:
        """(cluster id, story id, story terms and weights, and of the item that started it: feed id,
        published, first seen, title) of the clusters after `after_id` or created since
        `created_since`, in id order: what a story index is rebuilt from."""
        yield from self.conn.execute(
            """SELECT c.id, coalesce(c.story_id, c.id), c.story_terms, c.story_weights, i.feed_id, i.published_at,
                      i.first_seen_at, i.title
               FROM clusters c JOIN items i ON i.id = (SELECT min(m.id) FROM items m WHERE m.cluster_id = c.id)
               WHERE c.id > ? OR c.created_at >= ? ORDER BY c.id""",
            (after_id, iso(created_since)),
        )

    def save_signatures(self, signatures: Iterable[tuple[int, Any, Any, int]]) -> None:
        """(item id, dedup.Signature, paragraph keys (uint32 array), exact-key flags) tuples."""
        rows = []
        for item_id, sig, paragraphs, flags in signatures:
            full, lede = sig.to_blobs()
            blob = paragraphs.astype("<u4").tobytes() if len(paragraphs) else None
            rows.append((item_id, sig.kind, sig.size, sig.lede_size, full, lede, blob, flags))
        self.conn.executemany(
            """INSERT INTO signatures (item_id, kind, size, lede_size, "full", lede, paragraphs, exact_keys)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (item_id) DO UPDATE SET kind = excluded.kind, size = excluded.size,
                 lede_size = excluded.lede_size, "full" = excluded."full", lede = excluded.lede,
                 paragraphs = excluded.paragraphs, exact_keys = excluded.exact_keys""",
            rows,
        )

    def set_item_clusters(self, assignments: Iterable[tuple[int, float, int]], placed_seq: int) -> None:
        """(cluster id, similarity, item id) triples, placed by write `placed_seq`
        (bump_index_writes)."""
        self.conn.executemany(
            "UPDATE items SET cluster_id = ?, similarity = ?, placed_seq = ? WHERE id = ?",
            [(cluster, sim, placed_seq, item_id) for cluster, sim, item_id in assignments],
        )

    def placed_since(self, seq: int, batch: int = 20_000) -> Iterator[list[tuple]]:
        """signatures_since's rows for the items placed by writes after `seq` (whatever
        their first-seen time), in item order, in batches."""
        cur = self.conn.execute(
            f"""SELECT {_INDEXED_COLUMNS}
               FROM items i JOIN signatures s ON s.item_id = i.id
               WHERE i.placed_seq > ? AND i.cluster_id IS NOT NULL
               ORDER BY +i.id""",  # "+": sort the few rows found, instead of a scan in id order
            (seq,),
        )
        while rows := cur.fetchmany(batch):
            yield rows

    def refresh(self, cluster_ids: Iterable[int], now: datetime) -> None:
        """Recompute size, distinct feeds, first/last seen and representative (earliest
        member) of each cluster from its members (plus any pruned ones); delete clusters
        left empty. The members are read for REFRESH_CHUNK clusters at a time: two
        statements per cluster were ~40% of a poll's cluster writes."""
        greatest, least = self.store.dialect.greatest, self.store.dialect.least
        ids = sorted(set(cluster_ids))
        stamp = iso(now)
        for start in range(0, len(ids), REFRESH_CHUNK):
            chunk = ids[start : start + REFRESH_CHUNK]
            marks = ",".join("?" * len(chunk))
            stats = {row[0]: row[1:] for row in self.conn.execute(
                f"""SELECT cluster_id, count(*), count(DISTINCT feed_id), min(published_at), max(published_at)
                    FROM items WHERE cluster_id IN ({marks}) GROUP BY cluster_id""",
                chunk,
            )}  # fmt: skip
            first: dict[int, int] = {}  # cluster -> its earliest member
            for cid, item_id in self.conn.execute(
                f"SELECT cluster_id, id FROM items WHERE cluster_id IN ({marks}) ORDER BY cluster_id, published_at, id",
                chunk,
            ):
                first.setdefault(cid, item_id)
            gone = [(cid,) for cid in chunk if cid not in stats]
            if gone:
                self.conn.executemany("DELETE FROM clusters WHERE id = ?", gone)
            # after pruning, counts and first-seen remember the members that are gone
            self.conn.executemany(
                f"""UPDATE clusters SET
                       size = ? + pruned,
                       feed_count = CASE WHEN pruned > 0 THEN {greatest}(feed_count, ?) ELSE ? END,
                       first_seen = CASE WHEN pruned > 0 THEN {least}(first_seen, ?) ELSE ? END,
                       last_seen = ?, representative_id = ?, updated_at = ? WHERE id = ?""",
                [(count, feeds, feeds, low, low, high, first[cid], stamp, cid)
                 for cid, (count, feeds, low, high) in stats.items()],
            )  # fmt: skip

    def reset(self) -> None:
        """Forget every cluster (for a full recluster; inside its transaction). Clusters go
        first, foreign keys checked at commit: unmarking their members then costs one
        statement per cluster, not a re-mark of the cluster per item (aggregator/store/migrations/sqlite/006)."""
        self.conn.execute(self.store.dialect.defer_foreign_keys)  # until this transaction ends
        self.conn.execute("DELETE FROM clusters")
        self.conn.execute("UPDATE items SET cluster_id = NULL, similarity = NULL")


def index_state(store: Store) -> tuple[int, int]:
    """(cluster generation, index writes): what an in-memory dedup index must match
    (aggregator/store/migrations/sqlite/010 says how)."""
    values = dict(
        store.conn.execute("SELECT key, value FROM meta WHERE key IN ('cluster_generation', 'index_writes')")
    )
    return int(values.get("cluster_generation", 0)), int(values.get("index_writes", 0))


def bump_index_writes(store: Store) -> int:
    """Count a write of clustered items (inside the caller's transaction); returns the
    new count."""
    row = store.conn.execute(
        """INSERT INTO meta (key, value) VALUES ('index_writes', '1')
           ON CONFLICT (key) DO UPDATE SET value = CAST(meta.value AS INTEGER) + 1 RETURNING value"""
    ).fetchone()
    return int(row[0])


def cluster_generation(store: Store) -> int:
    """Bumped by every recluster and prune, so a running daemon knows to reload its index."""
    row = store.conn.execute("SELECT value FROM meta WHERE key = 'cluster_generation'").fetchone()
    return int(row[0]) if row else 0


def bump_cluster_generation(store: Store) -> None:
    """After a recluster or a prune: every process rebuilds its dedup index."""
    store.conn.execute(
        """INSERT INTO meta (key, value) VALUES ('cluster_generation', '1')
           ON CONFLICT (key) DO UPDATE SET value = CAST(meta.value AS INTEGER) + 1"""
    )
