"""Feeds that change every entry at every poll must not grow the daemon's memory (issue #12).

Each content update of an item retires its row in the in-memory dedup index and adds a new
one. The dead rows used to stay until the daily rebuild (~3.3 KB each: 30 such feeds grew
the daemon by ~13 MB/min, bench/soak.py --updates), and finding a changed item's old row
scanned every row. The index now reclaims dead rows once they are a share of it
(DedupIndex.compact, at the end of a transaction) and finds an item's rows by a binary
search over its item ids.

Everything is counted, not timed or read from RSS: rows, bucket entries, paragraph keys,
bytes allocated by a lookup. A compacted index must answer exactly as one built afresh
from its live rows (the daily rebuild), so compaction never changes which items join.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from random import Random

import numpy as np
import pytest
from daemon_util import FeedFarm, write_config
from feedserver import FeedServer
from test_index_sync import T0, item, store_feed  # one feed's transaction, as the poller writes it

from aggregator.config import DedupSettings, load_config
from aggregator.dedup.evidence import EntryFacts, paragraph_keys
from aggregator.dedup.index import COMPACT_DEAD_SHARE, COMPACT_MIN_DEAD, DedupIndex
from aggregator.dedup.signature import KIND_WORDS, Signature, Signer
from aggregator.ingest.normalize import content_hash
from aggregator.records import Item
from aggregator.service.app import Pipeline
from aggregator.service.clustering import Clusterer, Placement, decide, exact_keys
from aggregator.store.database import Store
from aggregator.timeutil import utcnow

DATA = Path(__file__).resolve().parents[1] / "data" / "dedup"
SETTINGS = DedupSettings()
ROUNDS = 14  # x ~200 entries: past the compaction threshold twice


def dead_allowed(live: int) -> int:
    """The most dead rows the index may hold after a transaction: below COMPACT_MIN_DEAD,
    or below COMPACT_DEAD_SHARE of all rows."""
    return max(COMPACT_MIN_DEAD, int(live * COMPACT_DEAD_SHARE / (1 - COMPACT_DEAD_SHARE)) + 1)


def keys_per_row(index: DedupIndex) -> int:
    """Bucket entries one row files at most: its bands, its lede's bands, two exact keys."""
    return index.full_bands.b + index.lede_bands.b + 2


# ---------------------------------------------------------------- through the poller


def update_every_entry(farm: FeedFarm, round_no: int, rng: Random) -> None:
    """Every entry of every feed gets a new last line (a live counter, different per
    entry, so it is no feed-wide template), and every feed is served anew."""
    for feed in farm.feeds:
        for entry in feed.entries:
            if round_no > 1:
                entry.paragraphs.pop()
            entry.paragraphs.append(
                f"Updated in round {round_no}: {rng.randint(100, 999_999)} readers so far."
            )
        farm.publish(feed)


@pytest.fixture
def churning(tmp_path: Path) -> Iterator[tuple[FeedFarm, Pipeline, Store]]:
    """Six local feeds of 30-40 entries (stories shared between feeds) and the daemon's
    pipeline over a real database file."""
    with FeedServer() as server:
        farm = FeedFarm(server, Random(12), count=6, low=30, high=40, pool=60)
        cfg = tmp_path / "feeds.yaml"
        write_config(cfg, farm.urls(), parse_workers=0)
        store = Store.open(tmp_path / "churn.db")
        pipeline = Pipeline.start(load_config(cfg), store)
        try:
            yield farm, pipeline, store
        finally:
            pipeline.close()
            store.close()


def test_entries_that_change_at_every_poll_keep_the_index_bounded(churning) -> None:
    farm, pipeline, store = churning
    rng = Random(5)
    entries = sum(len(f.entries) for f in farm.feeds)
    asyncio.run(pipeline.poll())
    rows_seen = []
    for round_no in range(1, ROUNDS + 1):
        update_every_entry(farm, round_no, rng)
        report = asyncio.run(pipeline.poll())
        assert report.updated_items == entries, (
            f"round {round_no}: the churn did not reach the index"
        )
        index = pipeline.clusterer.index
        live = len(index)
        assert live == entries
        # (a) the rows the index holds follow its live rows, not the updates so far
        assert index.n - live <= dead_allowed(live), (
            f"round {round_no}: {index.n} rows for {live} items"
        )
        rows_seen.append(index.n)
    assert any(later < earlier for earlier, later in pairwise(rows_seen))  # it compacted
    assert ROUNDS * entries > 2 * COMPACT_MIN_DEAD  # (and the churn was long enough to need it)
    # and so do the structures of each row: bucket entries, paragraph keys, titles
    index = pipeline.clusterer.index
    assert index.buckets.entries <= keys_per_row(index) * index.n
    assert index.paragraph_buckets.entries <= int(index.paragraph_at[index.n])
    assert len(index.titles) == index.n

    # (b) every stored item has exactly its one live row, found directly
    stored = store.conn.execute("SELECT id, cluster_id FROM items").fetchall()
    for item_id, cluster_id in stored:
        rows = index.rows_of_item(item_id)
        assert (
            len(rows) == 1
            and index.alive[rows[0]]
            and int(index.cluster_ids[rows[0]]) == cluster_id
        )
    assert index.rows_of_items([i for i, _ in stored]) == sorted(
        r for i, _ in stored for r in index.rows_of_item(i)
    )

    # (c) the daemon's index answers as the daily rebuild's does (built from the live rows)
    fresh = Clusterer(SETTINGS)
    fresh.load(store, utcnow())
    now = int(utcnow().timestamp())
    signer = pipeline.clusterer.signer
    probes = [probe(signer, story.title, story.paragraphs, now) for story in farm.stories[:40]]
    for w in probes:
        mine, theirs = decide(index, signer, w), decide(fresh.index, signer, w)
        assert (mine.cluster, mine.similarity) == (theirs.cluster, theirs.similarity), w.title
    for row in np.flatnonzero(index.alive[: index.n]).tolist():
        sig, seen = index.signature(row), int(index.seen[row])
        assert items_of(index, index.matches(sig, seen)) == items_of(
            fresh.index, fresh.index.matches(sig, seen)
        )


def probe(signer: Signer, title: str, paragraphs: list[str], now: int) -> Placement:
    """A new entry (not stored) carrying a copy of a story, from a feed of its own."""
    text = "\n".join(paragraphs)
    sig = signer.sign(title, text)
    return Placement(
        -1,
        999,
        None,
        content_hash(title, text),
        datetime.fromtimestamp(now, UTC),
        now,
        sig,
        title,
        text,
    )


def items_of(index: DedupIndex, matches: list[tuple[int, float]]) -> list[tuple[int, float]]:
    return sorted((int(index.item_ids[r]), sim) for r, sim in matches)


# ---------------------------------------------------------------- direct lookups


def test_an_items_rows_are_found_without_a_pass_over_the_index() -> None:
    """A changed item's old row: found by a binary search, not by comparing every row's
    item id (which allocated two booleans per row for each of a poll's changed items)."""
    rows = 60_000
    rng = np.random.RandomState(4)
    index = DedupIndex(SETTINGS, capacity=rows + 16)
    full = rng.randint(0, 2**32, size=(rows, SETTINGS.num_perm), dtype=np.uint64).astype(np.uint32)
    lede = rng.randint(0, 2**32, size=(rows, SETTINGS.lede_num_perm), dtype=np.uint64).astype(
        np.uint32
    )
    sigs = [Signature(KIND_WORDS, 300, full[i], 40, lede[i]) for i in range(rows)]
    ids = np.arange(1, rows + 1) * 3
    index.add_many(ids, ids, np.zeros(rows, dtype=np.int64), sigs, bulk=True)
    index.finish_bulk()
    wanted = rng.choice(ids, size=200, replace=False).tolist()
    found, peaks = [], []

    def measured(lookup):
        """lookup(), and the most memory it had allocated at once (bytes)."""
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = lookup()
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
        return result

    tracemalloc.start()
    try:
        for i in wanted:
            found.append(measured(lambda i=i: index.rows_of_item(i)))
        many = measured(lambda: index.rows_of_items(wanted[:20]))  # (a catch-up's items)
        measured(lambda: index.kill(index.rows_of_item(wanted[0])))
        gone = measured(lambda: index.rows_of_item(wanted[0]))
    finally:
        tracemalloc.stop()
    assert found == [[i // 3 - 1] for i in wanted] and many == sorted(
        i // 3 - 1 for i in wanted[:20]
    )
    assert gone == []
    # a pass over the rows allocates a byte or more per row (60 KB); a direct lookup a few
    # hundred bytes per item asked for
    assert max(peaks) < rows // 8, (
        f"a lookup among {rows} rows allocated {max(peaks)} bytes: a pass over them"
    )

    # half the items updated away: compaction moves the rest down (block by block) and
    # each is found at its new row, with its own signature
    index.kill(range(0, rows, 2))
    killed = set(range(0, rows, 2)) | {wanted[0] // 3 - 1}
    moved_to = {old: new for new, old in enumerate(sorted(set(range(rows)) - killed))}
    assert index.compact() and index.n == len(index) == len(moved_to)
    for i in rng.choice(rows, size=300, replace=False).tolist():
        found = index.rows_of_item(int(ids[i]))
        if i in killed:
            assert found == []
        else:
            assert found == [moved_to[i]] and np.array_equal(index.full[moved_to[i]], full[i])
            assert moved_to[i] in index.candidates(sigs[i], 0)


# ---------------------------------------------------------------- compaction keeps the answers


def article(name: str) -> tuple[str, str]:
    headline, _, body = (DATA / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    return headline.strip(), "\n".join(p.strip() for p in body.split("\n\n") if p.strip())


@dataclass(frozen=True)
class Row:
    """What the test itself knows of an item's current version."""

    item_id: int
    cluster_id: int
    seen: int
    sig: Signature
    exact: tuple[int, int]
    facts: EntryFacts
    paragraphs: np.ndarray


FOOTER = "Sign up for our daily newsletter to get the top stories in your inbox every morning."


def test_a_compacted_index_answers_as_one_built_from_its_live_rows() -> None:
    """Eight stories, two syndicated copies of one (with a common footer), and a live copy
    of it updated until the index compacts: its ~1,000 dead rows took places among the
    newest BUCKET_CAP of the story's buckets. After compaction every query, exact lookup
    and common-paragraph test answers as a fresh index of the live rows, and the
    structures hold what that index holds."""
    signer = Signer(SETTINGS)
    seen = 1_000_000
    index = DedupIndex(SETTINGS, capacity=4)
    current: dict[int, Row] = {}

    def place(item_id: int, cluster_id: int, feed: int, title: str, text: str, url: str) -> None:
        row = Row(item_id, cluster_id, seen, signer.sign(title, text),
                  exact_keys(url, content_hash(title, text)), EntryFacts(feed, title), paragraph_keys(text))  # fmt: skip
        index.kill(index.rows_of_item(item_id))
        index.add(
            row.item_id, row.cluster_id, row.seen, row.sig, row.exact, row.facts, row.paragraphs
        )
        current.pop(item_id, None)
        current[item_id] = row  # in the order of their rows

    names = ["bridge", "rail_strike", "library_fire", "library_fire_other", "market_wrap_1",
             "market_wrap_2", "match_1", "match_2"]  # fmt: skip
    for i, name in enumerate(names, start=1):
        place(i, 100 + i, i, *article(name), f"https://site{i}.example/news/{name}")
    title, body = article("bridge")
    place(20, 101, 20, f"{title} | Wire", f"{body}\n{FOOTER}", "https://wire.example/bridge")
    place(21, 101, 21, title, f"{body}\n{FOOTER}", "https://daily.example/bridge")
    compactions = 0
    for update in range(3 * COMPACT_MIN_DEAD):
        live_text = f"{body}\nUpdated: {update * 37 + 1000} readers so far."
        place(30, 101, 30, title, live_text, "https://live.example/bridge")
        if index.compact():  # as Clusterer.commit does after each transaction
            compactions += 1
            break
    assert compactions == 1 and index.n == len(current) == len(index)

    fresh = DedupIndex(SETTINGS)
    rows = list(current.values())
    fresh.add_many(np.array([r.item_id for r in rows]), np.array([r.cluster_id for r in rows]),
                   np.array([r.seen for r in rows]), [r.sig for r in rows], bulk=True,
                   exact=np.array([r.exact for r in rows], dtype=np.uint64), facts=[r.facts for r in rows],
                   paragraphs=[r.paragraphs for r in rows])  # fmt: skip
    fresh.finish_bulk()

    # the same rows, in the same order, and what each structure holds of them
    per_row = ("item_ids", "cluster_ids", "seen", "kinds", "sizes", "lede_sizes", "full", "lede",
               "exact", "feed_ids")  # fmt: skip
    for name in per_row:
        assert np.array_equal(getattr(index, name)[: index.n], getattr(fresh, name)[: fresh.n]), (
            name
        )
    assert index.titles == fresh.titles
    assert np.array_equal(index.paragraph_at[: index.n + 1], fresh.paragraph_at[: fresh.n + 1])
    assert np.array_equal(
        index.paragraph_keys[: index.paragraph_at[index.n]],
        fresh.paragraph_keys[: fresh.paragraph_at[fresh.n]],
    )
    assert index._paragraph_seen == fresh._paragraph_seen
    for mine, theirs in (
        (index.buckets, fresh.buckets),
        (index.paragraph_buckets, fresh.paragraph_buckets),
    ):
        mine.merge()
        assert pairs(mine) == pairs(theirs)

    # and the same answers
    copy_title, copy_body = "Harbour bridge to close for repairs", f"{body}\n{FOOTER}"
    copy = signer.sign(copy_title, copy_body)
    summary = signer.sign("Bridge closing", " ".join(body.split()[:45]))
    probes = [signer.sign(*article(name)) for name in names] + [copy, summary]
    for sig in probes:
        assert index.candidates(sig, seen) == fresh.candidates(sig, seen)
        assert index.matches(sig, seen) == fresh.matches(sig, seen)
        for exact in (
            exact_keys("https://wire.example/bridge", None),
            exact_keys(None, content_hash(copy_title, copy_body)),
        ):
            assert index.find(sig, seen, exact, EntryFacts(40, copy_title)) == fresh.find(
                sig, seen, exact, EntryFacts(40, copy_title)
            )
    keys = paragraph_keys(copy_body)
    common = index.common_paragraphs(keys, seen, EntryFacts(40, copy_title), -1, len(copy_body))
    assert np.array_equal(
        common, fresh.common_paragraphs(keys, seen, EntryFacts(40, copy_title), -1, len(copy_body))
    )
    # the summary matches on its lede alone, whose buckets the live copy's dead rows had
    # filled (after 100 updates its only candidate was the live copy): all copies again
    assert {int(index.item_ids[r]) for r, _ in index.matches(summary, seen)} == {1, 20, 21, 30}


def pairs(buckets) -> list[tuple[int, int]]:
    """The (key, row) pairs of merged buckets, in their order."""
    return list(zip(buckets.keys.tolist(), buckets.rows.tolist(), strict=True))


# ---------------------------------------------------------------- a failed transaction after compaction


def test_a_rolled_back_update_after_compaction_keeps_the_items_rows(tmp_path: Path) -> None:
    """Compaction renumbers rows, so it waits for a transaction's end. After one, a rolled
    back update leaves each item its old row (revived), and the next update replaces it."""
    store = Store.open(tmp_path / "rollback.db")
    try:
        clusterer = Clusterer(SETTINGS)
        with store.transaction():
            store.conn.execute("INSERT INTO feeds (url, name, created_at) VALUES "
                               "('https://live.example/feed', 'live', '2026-01-01T00:00:00Z')")  # fmt: skip
        feed_id = store.conn.execute("SELECT id FROM feeds").fetchone()[0]
        names = ["bridge", "rail_strike", "library_fire", "market_wrap_1", "match_1"]
        compacted = False
        for update in range(COMPACT_MIN_DEAD // len(names) + 10):
            now = T0 + timedelta(minutes=update)
            store_feed(store, clusterer, feed_id, [live_item(n, update) for n in names], now)
            compacted = compacted or (update > 0 and clusterer.index.n == len(names))
        assert compacted and clusterer.index.n - len(clusterer.index) <= dead_allowed(len(names))
        before = {n: clusterer.index.rows_of_item(item_id_of(store, n)) for n in names}
        store_feed(store, clusterer, feed_id, [live_item(n, 10_000) for n in names], now, fail=True)
        assert {n: clusterer.index.rows_of_item(item_id_of(store, n)) for n in names} == before
        store_feed(store, clusterer, feed_id, [live_item(n, 10_001) for n in names], now)
        for n in names:
            rows = clusterer.index.rows_of_item(item_id_of(store, n))
            assert len(rows) == 1 and rows[0] not in before[n]
        fresh = Clusterer(SETTINGS)
        fresh.load(store, now)
        for n in names:
            sig = clusterer.index.signature(clusterer.index.rows_of_item(item_id_of(store, n))[0])
            when = int(now.timestamp())
            assert items_of(clusterer.index, clusterer.index.matches(sig, when)) == items_of(
                fresh.index, fresh.index.matches(sig, when)
            )
    finally:
        store.close()


def live_item(name: str, update: int) -> Item:
    """A live blog's entry: the article and a line that changes at every update."""
    return item(
        name,
        name,
        f"https://live.example/{name}",
        extra=f" Updated: {update * 13 + 500} readers so far.",
    )


def item_id_of(store: Store, key: str) -> int:
    return store.conn.execute("SELECT id FROM items WHERE key = ?", (key,)).fetchone()[0]
