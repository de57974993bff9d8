"""The dedup stage in the pipeline: puts each new or changed item into a story cluster.

Assignment policy, in order:
1. Exact shortcut: an earlier item (inside the window) with the same canonical URL or the
   same content hash decides the cluster. Root URLs ("https://site/") are ignored, since
   some feeds link every entry to their home page.
2. Otherwise the LSH index proposes candidates, each is verified (dedup.similarity), and
   the item joins the cluster of its most similar verified copy; ties go to the older
   cluster.
3. Otherwise the item starts a new cluster.
Clusters never merge, so one item that resembles two stories cannot chain them together;
and every join is verified against a real member, never inferred transitively.

Items are processed in id order, and a candidate counts only if it was first seen within
the window before the item, so `recluster` over the same items rebuilds the same clusters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import numpy as np

from .config import DedupSettings
from .dedup import DedupIndex, Signature, Signer, choose_cluster
from .records import Item
from .store import ClusterStore, Store, StoredItem
from .timeutil import from_iso

log = logging.getLogger("aggregator.clustering")


def _useful_url(url: str | None) -> str | None:
    if not url:
        return None
    path = urlsplit(url).path
    return url if path not in ("", "/") else None


class Clusterer:
    """Holds the in-memory dedup index; writes memberships through the caller's
    transaction. Rows added during a transaction are dropped again on rollback."""

    def __init__(self, settings: DedupSettings):
        self.settings = settings
        self.signer = Signer(settings)
        self.index = DedupIndex(settings)
        self._added: list[int] = []
        self._killed: list[int] = []
        self.rebuild_seconds = 0.0

    # ------------------------------------------------------------ start-up

    def load(self, store: Store, now: datetime) -> int:
        """Rebuild the index from stored signatures of items inside the window."""
        started = time.perf_counter()
        clusters = ClusterStore(store)
        since = now - timedelta(seconds=self.settings.window)
        loaded = 0
        for batch in clusters.signatures_since(since):
            sigs = [Signature.from_blobs(r[3], r[4], r[5], r[6], r[7]) for r in batch]
            sigs = [s for s in sigs if len(s.full) == self.settings.num_perm]
            if len(sigs) != len(batch):  # num_perm changed: those items need re-signing
                continue
            self.index.add_many(
                np.array([r[0] for r in batch], dtype=np.int64),
                np.array([r[1] for r in batch], dtype=np.int64),
                np.array([int(from_iso(r[2]).timestamp()) for r in batch], dtype=np.int64),
                sigs,
                bulk=True,
            )
            loaded += len(batch)
        self.index.finish_bulk()
        self.rebuild_seconds = time.perf_counter() - started
        return loaded

    # ------------------------------------------------------------ online

    def assign(
        self,
        store: Store,
        new: Sequence[tuple[int, int, Item]],
        changed: Sequence[tuple[int, int, Item, StoredItem]],
        now: datetime,
    ) -> int:
        """Cluster new and changed items; returns how many clusters were created."""
        clusters = ClusterStore(store)
        touched: set[int] = set()
        created = 0
        seen = int(now.timestamp())
        for item_id, _, _, old in changed:
            rows = self.index.rows_of_item(item_id)
            self.index.kill(rows)
            self._killed.extend(rows)
            if old.cluster_id is not None:
                touched.add(old.cluster_id)
        work = [(i, item) for i, _, item in new] + [(i, item) for i, _, item, _ in changed]
        for item_id, item in work:
            sig = self.signer.sign(item.title, item.text)
            cluster, sim, fresh = self._place(clusters, item_id, item, sig, seen, now)
            created += fresh
            touched.add(cluster)
        clusters.refresh(touched, now)
        return created

    def _place(self, clusters: ClusterStore, item_id: int, item: Item, sig: Signature,
               seen: int, now: datetime) -> tuple[int, float, bool]:  # fmt: skip
        full, lede = sig.to_blobs()
        clusters.save_signature(item_id, sig.kind, sig.size, sig.lede_size, full, lede)
        since = datetime.fromtimestamp(seen - self.settings.window, tz=now.tzinfo)
        cluster = clusters.exact_match(item_id, _useful_url(item.canonical_url), item.content_hash, since)
        sim, fresh = 1.0, False
        if cluster is None:
            matches = self.index.matches(sig, seen)
            choice = choose_cluster(matches, {r: int(self.index.cluster_ids[r]) for r, _ in matches})
            if choice:
                cluster, sim = choice
        if cluster is None:
            cluster, fresh = clusters.new_cluster(now), True
        clusters.set_item_cluster(item_id, cluster, sim)
        self._added.append(self.index.add(item_id, cluster, seen, sig))
        return cluster, sim, fresh

    def commit(self) -> None:
        self._added.clear()
        self._killed.clear()

    def rollback(self) -> None:
        """The transaction failed: forget rows it added, revive rows it retired."""
        if self._added:
            self.index.kill(self._added)
        if self._killed:
            self.index.alive[np.asarray(self._killed, dtype=np.int64)] = True
        self.commit()

    # ------------------------------------------------------------ recluster

    def recluster(self, store: Store, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild every cluster from stored items, in id order, with the current
        settings; returns the number of clusters. One transaction: readers see the old
        clusters until it commits."""
        clusters = ClusterStore(store)
        self.index = DedupIndex(self.settings)
        conn = store.conn
        total = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        done = 0
        with store.transaction():
            clusters.reset()
            last_id = 0
            while True:
                rows = conn.execute(
                    """SELECT id, title, text, canonical_url, content_hash, first_seen_at
                       FROM items WHERE id > ? ORDER BY id LIMIT 2000""",
                    (last_id,),
                ).fetchall()
                if not rows:
                    break
                touched: set[int] = set()
                for item_id, title, text, canon, digest, first_seen in rows:
                    seen_at = from_iso(first_seen)
                    item = Item(key="", url=None, canonical_url=canon, title=title, text=text,
                                author=None, published=seen_at, updated=None,
                                content_hash=digest)  # fmt: skip
                    sig = self.signer.sign(title, text)
                    cluster, _, _ = self._place(
                        clusters, item_id, item, sig, int(seen_at.timestamp()), seen_at
                    )
                    touched.add(cluster)
                clusters.refresh(touched, seen_at)
                last_id = rows[-1][0]
                done += len(rows)
                if progress:
                    progress(done, total)
            self.commit()
        return conn.execute("SELECT count(*) FROM clusters").fetchone()[0]
