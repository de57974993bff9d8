"""The dedup stage in the pipeline: puts each new or changed item into a story cluster.

Assignment policy, in order:
0. Own text: the paragraphs of the item that many unrelated items share (the index's
   common_paragraphs) are left out, and an item whose own text differs from its text is
   signed again on what remains (title and the rest; an item left with none is compared
   on its title alone, as a short item).
1. Exact shortcut: an earlier item (inside the window) with the same canonical URL or the
   same content hash decides the cluster (the earliest such item, among the newest
   dedup.BUCKET_CAP sharing the key). Root URLs ("https://site/") are ignored, since
   some feeds link every entry to their home page, and so is a link two entries of one
   feed share, and the content hash of an item with no text of its own. The keys are
   looked up in the in-memory index (see DedupIndex), which first indexes what other
   processes placed since it last looked (aggregator/store/migrations/sqlite/010).
2. Otherwise the LSH index proposes candidates, each is verified (dedup.similarity) and
   checked against the rules of aggregator.dedup.evidence (one feed's entries with different
   titles, titles with different numbers), and the item joins the cluster of its most
   similar verified copy; ties go to the older cluster.
3. Otherwise the item starts a new cluster.
Clusters never merge, so one item that resembles two stories cannot chain them together;
and every join is verified against a real member, never inferred transitively.

Items are processed in id order, and a candidate counts only if it was first seen within
the window before the item, so `recluster` over the same items rebuilds the same clusters.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

from ..config import DedupSettings, StorySettings
from ..dedup.evidence import EntryFacts, own_text, paragraph_keys
from ..dedup.index import DedupIndex
from ..dedup.lsh import Scan, exact_key
from ..dedup.signature import Signature, Signer
from ..dedup.similarity import choose_cluster
from ..dedup.stories import StoryTerms
from ..records import Item
from ..store.clusters import ClusterStore, bump_cluster_generation, bump_index_writes, index_state
from ..store.database import Store, StoredItem
from ..timeutil import from_iso
from .stories import StoryTier

log = logging.getLogger("aggregator.clustering")


@dataclass(frozen=True)
class Placement:
    """One item waiting for its cluster."""

    item_id: int
    feed_id: int
    canonical_url: str | None
    content_hash: str
    published: datetime
    seen: int  # first-seen time, epoch seconds
    signature: Signature  # of the whole title and text
    title: str
    text: str
    shared_link: bool = False  # Item.shared_link
    story_terms: StoryTerms | None = None  # made by the parse workers; else here, when needed


class Decision(NamedTuple):
    """Where one item goes, and what the index and the store keep of it (a tuple: one is
    made per item placed, and a frozen dataclass costs ~1 us more)."""

    cluster: int | None  # None: a new cluster
    similarity: float
    signature: Signature  # of its own text (the one indexed and stored)
    exact: tuple[int, int]
    facts: EntryFacts
    paragraphs: np.ndarray
    key_flags: int  # which exact keys count: 1 the content hash (text of its own left), 2 the link
    band: np.ndarray | None = None  # the band keys of `signature`, when made in a batch


def decide(
    index: DedupIndex, signer: Signer, w: Placement, band: np.ndarray | None = None,
    looked_up: tuple[tuple[int, int], Scan] | None = None,
) -> Decision:  # fmt: skip
    """The cluster an item joins (see the module docstring), from the index as it is.
    `band`: the band keys of w.signature (DedupIndex.band_keys_many), if made;
    `looked_up`: its exact keys and DedupIndex.scan_many's Scan, if made (both as
    for an item with no common paragraphs: one that has some is signed again)."""
    facts = EntryFacts(w.feed_id, w.title)
    sig, own_body = w.signature, bool(w.text)
    paragraphs = paragraph_keys(w.text)
    if len(paragraphs):
        common = index.common_paragraphs(paragraphs, w.seen, facts, w.item_id, len(w.text))
        if common.any():
            own = own_text(w.text, common)
            sig, own_body, band, looked_up = signer.sign(w.title, own), bool(own), None, None
    if looked_up:
        (keys, scan), flags = looked_up, first_flags(w)
    else:
        flags = (KEY_CONTENT if own_body else 0) | (0 if w.shared_link else KEY_LINK)
        keys, scan = exact_keys(w.canonical_url, w.content_hash, flags), None
    same, matches = index.find(sig, w.seen, keys, facts, band, scan)
    if same is not None:
        return Decision(int(index.cluster_ids[same]), 1.0, sig, keys, facts, paragraphs, flags, band)
    choice = choose_cluster(matches, {r: int(index.cluster_ids[r]) for r, _ in matches})
    cluster, sim = choice if choice else (None, 1.0)
    return Decision(cluster, sim, sig, keys, facts, paragraphs, flags, band)


def _useful_url(url: str | None) -> str | None:
    """The URL, unless it is missing or a site's root (its path is "" or "/")."""
    if not url:
        return None
    if url.startswith(("https://", "http://")):  # the usual case, without urlsplit (~2.5 us)
        rest = url[url.index("://") + 3 :]
        slash = rest.find("/")
        if (
            0 <= slash < len(rest) - 1
            and rest[slash + 1] not in "?#\t\r\n"
            and rest.find("?", 0, slash) < 0
            and rest.find("#", 0, slash) < 0
        ):
            return url  # the path goes on after the host's "/"
    try:
        path = urlsplit(url).path
    except ValueError:  # e.g. "http://[bad/": not a root we can tell; still a usable key
        return url
    return url if path not in ("", "/") else None


KEY_CONTENT, KEY_LINK = 1, 2  # Decision.key_flags (stored as signatures.exact_keys)


def first_flags(w: Placement) -> int:
    """The exact keys that count for an item whose text is all its own (no common
    paragraphs): its content hash when it has text, its link unless shared."""
    return (KEY_CONTENT if w.text else 0) | (0 if w.shared_link else KEY_LINK)


def exact_keys(canonical_url: str | None, content_hash: str | None, flags: int = KEY_CONTENT | KEY_LINK) -> tuple[int, int]:
    """The exact-shortcut keys of an item, as the index files them (0: none): its link
    and its content hash, where `flags` lets them count."""
    url = _useful_url(canonical_url) if flags & KEY_LINK else None
    return exact_key(url), exact_key(content_hash if flags & KEY_CONTENT else None)


class Clusterer:
    """Holds the in-memory dedup index; writes memberships through the caller's
    transaction. Rows added during a transaction are dropped again on rollback."""

    def __init__(self, settings: DedupSettings, stories: StorySettings | None = None):
        self.settings = settings
        self.index = DedupIndex(settings)
        stories = stories or StorySettings()
        # None: each cluster is a story of its own
        self.stories = StoryTier(stories, settings.window) if stories.enabled else None
        self._added: list[int] = []
        self._killed: list[int] = []
        self.rebuild_seconds = 0.0
        self.generation = -1  # cluster generation the index was built from
        self.writes = -1  # the store's index_writes count the index is in step with
        self._writes_pending: int | None = None  # the count once this transaction commits
        self._loaded_in_transaction = False

    @functools.cached_property
    def signer(self) -> Signer:
        """Made on first use: the parse workers sign what a poll fetches, and building a
        Signer imports datasketch (~0.6 s)."""
        return Signer(self.settings)

    # ------------------------------------------------------------ start-up

    def load(self, store: Store, now: datetime) -> int:
        """Rebuild the index from stored signatures of items inside the window. Inside
        the caller's write transaction (assign) it reads what that transaction sees;
        otherwise in one read snapshot, so the counters match the rows."""
        if store.conn.in_transaction:
            self._loaded_in_transaction = True
            return self._load(store, now)
        with store.snapshot():
            return self._load(store, now)

    def _load(self, store: Store, now: datetime) -> int:
        started = time.perf_counter()
        self.generation = self.writes = -1  # until the index is complete: a failed load is not in step
        self.index = DedupIndex(self.settings)
        state = index_state(store)
        since = now - timedelta(seconds=self.settings.window)
        loaded = self._index_rows(ClusterStore(store).signatures_since(since), bulk=True)
        if self.stories:
            self.stories.load(ClusterStore(store), now)
        self.generation, self.writes = state
        self.rebuild_seconds = time.perf_counter() - started
        return loaded

    def _index_rows(self, batches: Iterable[list[tuple]], bulk: bool) -> int:
        """Index stored signature rows (ClusterStore.signatures_since's shape); returns how
        many. Bulk rows become queryable at the end."""
        loaded = 0
        skipped = 0
        for batch in batches:
            rows, sigs = [], []
            for r in batch:
                sig = Signature.from_blobs(r[3], r[4], r[5], r[6], r[7])
                if self._fits(sig):
                    rows.append(r)
                    sigs.append(sig)
            skipped += len(batch) - len(rows)
            if not rows:
                continue
            self.index.add_many(
                np.array([r[0] for r in rows], dtype=np.int64),
                np.array([r[1] for r in rows], dtype=np.int64),
                np.array([int(from_iso(r[2]).timestamp()) for r in rows], dtype=np.int64),
                sigs,
                bulk=bulk,
                exact=np.array([exact_keys(r[8], r[9], r[13]) for r in rows], dtype=np.uint64),
                facts=[EntryFacts(r[10], r[11]) for r in rows],
                paragraphs=_stored_paragraphs([r[12] for r in rows]),
            )
            loaded += len(rows)
        if skipped:
            log.warning("%d stored signatures were made with other num_perm settings and are not "
                        "indexed (neither for near copies nor for the same link or text); run "
                        "`aggregator recluster` to re-sign them", skipped)  # fmt: skip
        if bulk:
            self.index.finish_bulk()
        return loaded

    def must_reload(self, store: Store) -> bool:
        """A recluster or prune elsewhere (or no index yet): only a rebuild brings the
        index in step; other processes' placements are caught up with in assign()."""
        return index_state(store)[0] != self.generation

    def in_step(self, store: Store) -> bool:
        """Whether the index matches the store: no recluster or prune, and no clustering
        write by another process (`aggregator fetch` beside the daemon) since it was built
        or last written by us."""
        return index_state(store) == (self.generation, self.writes)

    def _catch_up(self, store: Store, writes: int, now: datetime) -> None:
        """Index what other processes placed since our index last saw the store (new
        items, and edited or moved ones, whose rows here are stale): their rows are
        replaced by the stored ones. Inside the caller's transaction; undone on rollback."""
        clusters = ClusterStore(store)
        batches = list(clusters.placed_since(self.writes))
        placed = [r[0] for batch in batches for r in batch]
        stale = self.index.rows_of_items(placed)
        self.index.kill(stale)
        self._killed.extend(stale)
        since = int((now - timedelta(seconds=self.settings.window)).timestamp())
        fresh = [[r for r in batch if from_iso(r[2]).timestamp() >= since] for batch in batches]
        before = self.index.n
        self._index_rows(fresh, bulk=False)
        self._added.extend(range(before, self.index.n))
        if self.stories:
            self.stories.stale()  # rebuilt from the store, other processes' stories included
        self._writes_pending = writes  # in step with the store, whether or not we write
        # debug: beside a running fetch this happens at every interleaved transaction
        log.debug("indexed %d items other processes placed in clusters", len(placed))

    def _fits(self, sig: Signature) -> bool:
        """A stored signature is usable only with the permutation counts it was made with."""
        if len(sig.full) != self.settings.num_perm:
            return False
        return sig.lede is None or len(sig.lede) == self.settings.lede_num_perm

    # ------------------------------------------------------------ online

    def assign(
        self,
        store: Store,
        new: Sequence[tuple[int, int, Item]],
        changed: Sequence[tuple[int, int, Item, StoredItem]],
        now: datetime,
        signatures: Mapping[str, Signature] | None = None,
        story_terms: Mapping[str, StoryTerms] | None = None,
    ) -> int:
        """Cluster new and changed items (signatures and story terms by item key when the
        parse workers computed them); returns how many clusters were created."""
        if not new and not changed:
            return 0
        generation, writes = index_state(store)
        if generation != self.generation:
            if self.generation >= 0:
                # a recluster or prune elsewhere: cluster ids renumbered, or items deleted
                log.info("clusters were rebuilt or pruned elsewhere; reloading the dedup index")
            self.load(store, now)  # (or the first use of an index not built at start-up)
        elif writes != self.writes:
            self._catch_up(store, writes, now)
        clusters = ClusterStore(store)
        seen = int(now.timestamp())
        retired: set[int] = set()
        for item_id, _, _, old in changed:
            rows = self.index.rows_of_item(item_id)
            self.index.kill(rows)
            self._killed.extend(rows)
            if old.cluster_id is not None:
                retired.add(old.cluster_id)
        placing = [*((*n, None) for n in new), *changed]
        # signatures the parse workers made, the missing ones signed here in one batch
        sigs: list[Signature | None] = [(signatures or {}).get(item.key) for _, _, item, _ in placing]
        missing = [i for i, sig in enumerate(sigs) if sig is None or not self._fits(sig)]
        if missing:
            signed = self.signer.sign_many([(placing[i][2].title, placing[i][2].text) for i in missing])
            for i, sig in zip(missing, signed, strict=True):
                sigs[i] = sig
        # a changed item keeps its first-seen time, as a recluster would see it
        terms = story_terms or {}
        work = [
            Placement(item_id, feed_id, item.canonical_url, item.content_hash, item.published,
                      seen if old is None else int(old.first_seen.timestamp()), sig, item.title, item.text,
                      item.shared_link, terms.get(item.key))
            for (item_id, feed_id, item, old), sig in zip(placing, sigs, strict=True)
        ]  # fmt: skip
        return self._place_batch(clusters, work, now, retired)

    def _place_batch(
        self, clusters: ClusterStore, work: Sequence[Placement], now: datetime, touched: set[int]
    ) -> int:
        """Decide each item's cluster in order (see the module docstring), then write the
        memberships and signatures in bulk and refresh the clusters that gained members."""
        if not work:
            clusters.refresh(touched, now)
            return 0
        created = 0
        assignments = []
        singletons: list[tuple] = []  # written in one go below (ClusterStore.add_singletons)
        next_cluster = clusters.next_cluster_id()
        index, stories = self.index, self.stories
        if stories:
            stories.ensure(clusters, now)
        kept = []  # (item id, signature, paragraph keys, own body) as stored
        bands = index.band_keys_many([w.signature for w in work])
        exact = [exact_keys(w.canonical_url, w.content_hash, first_flags(w)) for w in work]
        scans = index.scan_many([w.signature for w in work], exact, bands)
        for w, band, keys, scan in zip(work, bands, exact, scans, strict=True):
            d = decide(index, self.signer, w, band, (keys, scan))
            if d.cluster is not None:
                cluster = d.cluster
                touched.add(cluster)
                if stories:
                    stories.joined(cluster, w.feed_id, w.title, w.text, w.story_terms)
            else:
                cluster, next_cluster = next_cluster, next_cluster + 1
                if stories:
                    story = stories.place(cluster, w.feed_id, w.published, w.seen, w.title, w.text, w.story_terms)
                    singletons.append((cluster, w.item_id, w.published, story.story_id, story.score,
                                       *story.vector.to_stored()))  # fmt: skip
                else:
                    singletons.append((cluster, w.item_id, w.published, cluster, None, None, None))
                created += 1
            assignments.append((cluster, d.similarity, w.item_id))
            self._added.append(index.add(w.item_id, cluster, w.seen, d.signature, d.exact, d.facts, d.paragraphs,
                                         d.band))
            kept.append((w.item_id, d.signature, d.paragraphs, d.key_flags))
        seq = self._writes_pending = bump_index_writes(clusters.store)
        clusters.add_singletons(singletons, now)
        if stories:
            clusters.move_to_stories(stories.written())
        clusters.save_signatures(kept)
        clusters.set_item_clusters(assignments, seq)
        clusters.refresh(touched, now)
        return created

    def commit(self) -> None:
        """The transaction is over: its rows stay. The dead rows are reclaimed here, when due
        (DedupIndex.compact), because compaction renumbers the rows a transaction lists."""
        if self._writes_pending is not None:
            self.writes = self._writes_pending
        self._writes_pending = None
        self._loaded_in_transaction = False
        self._added.clear()
        self._killed.clear()
        if self.index.compact():
            log.debug("dedup index compacted: %d live rows kept", self.index.n)

    def rollback(self) -> None:
        """The transaction failed: forget rows it added, revive rows it retired. An index
        (re)built inside it saw uncommitted rows: it is dropped, and rebuilt on next use."""
        self._writes_pending = None
        if self.stories:
            self.stories.stale()  # it may hold placements the store does not
        if self._loaded_in_transaction:
            self.index = DedupIndex(self.settings)
            self.generation = self.writes = -1
            self._loaded_in_transaction = False
            self._added.clear()
            self._killed.clear()
            return
        # revive first: a row added in this transaction may also have been retired in it
        if self._killed:
            self.index.revive(self._killed)
        if self._added:
            self.index.kill(self._added)
        self.commit()

    # ------------------------------------------------------------ recluster

    def recluster(self, store: Store, progress: Callable[[int, int], None] | None = None) -> int:
        """Rebuild every cluster from stored items, in id order, with the current
        settings; returns the number of clusters. One transaction: readers see the old
        clusters until it commits."""
        clusters = ClusterStore(store)
        self.index = DedupIndex(self.settings)
        if self.stories:
            self.stories.reset()
        conn = store.conn
        total = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        done = 0
        with store.transaction():
            clusters.reset()
            bump_cluster_generation(store)
            last_id = 0
            while True:
                rows = conn.execute(
                    # a link marked shared when it was fetched stays so (its signature, not
                    # yet replaced: rows are re-placed in id order)
                    """SELECT i.id, i.feed_id, i.title, i.text, i.canonical_url, i.content_hash,
                              i.published_at, i.first_seen_at, coalesce(s.exact_keys, 2) & 2 = 0
                       FROM items i LEFT JOIN signatures s ON s.item_id = i.id
                       WHERE i.id > ? ORDER BY i.id LIMIT 2000""",
                    (last_id,),
                ).fetchall()
                if not rows:
                    break
                work = []
                sigs = self.signer.sign_many([(title, text) for _, _, title, text, *_ in rows])
                for (item_id, feed_id, title, text, canon, digest, published, first_seen, shared), sig in zip(rows, sigs, strict=True):
                    seen_at = from_iso(first_seen)
                    work.append(Placement(item_id, feed_id, canon, digest, from_iso(published),
                                          int(seen_at.timestamp()), sig, title, text, bool(shared)))  # fmt: skip
                self._place_batch(clusters, work, seen_at, set())
                last_id = rows[-1][0]
                done += len(rows)
                if progress:
                    progress(done, total)
            self.commit()
            state = index_state(store)
        self.generation, self.writes = state
        return conn.execute("SELECT count(*) FROM clusters").fetchone()[0]


def _stored_paragraphs(blobs: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    """Stored paragraph keys of many rows as (all keys, count per row), read in one go
    (NULL for items signed before migration 011: none)."""
    counts = np.fromiter((len(b) // 4 if b else 0 for b in blobs), dtype=np.int64, count=len(blobs))
    flat = np.frombuffer(b"".join(b for b in blobs if b), dtype="<u4").astype(np.uint32)
    return flat, counts
