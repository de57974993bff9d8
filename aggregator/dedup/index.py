"""The in-memory dedup index: every indexed entry's signatures, band keys and paragraphs,
queried for the verified copies of a new entry."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..config import DedupSettings
from .evidence import COMMON_CLUSTERS, NO_FACTS, EntryFacts, may_be_one_entry, titles_contained
from .lsh import LEDE_CANDIDATE_RECALL, Banding, Buckets, Scan, concat_ranges, exact_bucket_key
from .shingles import MIX, U32
from .signature import KIND_WORDS, Signature
from .similarity import similarities

_NO_PARAGRAPHS = np.zeros(0, dtype=np.uint32)
# A body this short that one feed carries word for word under two headlines is its chrome
# (a sign-in widget: ~350 characters); a longer one is an article it republished.
CHROME_CHARS = 800
PARAGRAPH_SEEN_BITS = 25  # 4 MB of bits: ~3% false "maybe" at a million distinct paragraphs
_SEEN_MASK = (1 << PARAGRAPH_SEEN_BITS) - 1
MAX_CANDIDATES = 256  # candidates verified per item (the newest)
FEW_ROWS = 16  # up to this many rows found, plain Python filters them faster than numpy
NO_KEY = (0, 0)
# Every content update of an item leaves its old row dead (~3.3 KB of signatures, keys and
# bucket entries): a feed that changes its entries at every poll grew the daemon by
# ~13 MB/min until the daily rebuild. The dead rows are reclaimed once they pass this share
# of the rows, so the index holds at most 1 / (1 - share) times its live rows, and each
# compaction (a pass over the index) is paid for by the updates that made it due.
COMPACT_DEAD_SHARE = 0.25
COMPACT_MIN_DEAD = 1024  # a small index is not compacted every few updates
COMPACT_BLOCK = 8192  # rows moved at once: a copy of the whole signature matrix was ~100 MB at 200k


class _ItemRows:
    """Every row of each item (dead ones too, until compaction), so a changed item's old
    row is found by a binary search instead of a pass over the index (which cost a scan
    of every row per changed item). Item ids and rows live in two arrays sorted by id
    (12 bytes a row; a dict of Python ints takes ~110), plus a dict of the rows added one
    by one since the last merge and the arrays of a bulk add, folded in at the next lookup."""

    MERGE_AT = 8192  # rows in the dict before it is folded into the arrays

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.rows = np.zeros(0, dtype=np.int32)
        self._tail: dict[int, int | list[int]] = {}
        self._tail_rows = 0
        self._bulk: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, item_id: int, row: int) -> None:
        old = self._tail.setdefault(item_id, row)
        if old != row:
            self._tail[item_id] = [*old, row] if isinstance(old, list) else [old, row]
        self._tail_rows += 1
        if self._tail_rows >= self.MERGE_AT:
            self.merge()

    def add_many(self, item_ids: np.ndarray, rows: np.ndarray) -> None:
        """Rows of a bulk add (a start-up load), folded in by merge() or the next lookup."""
        self._bulk.append((np.asarray(item_ids, dtype=np.int64), np.asarray(rows, dtype=np.int32)))

    def merge(self) -> None:
        """Fold the dict and the bulk adds into the sorted arrays."""
        if not self._tail and not self._bulk:
            return
        tail = [(i, r) for i, v in self._tail.items() for r in (v if isinstance(v, list) else (v,))]
        ids = np.concatenate([self.ids, *(i for i, _ in self._bulk), np.array([i for i, _ in tail], dtype=np.int64)])
        rows = np.concatenate([self.rows, *(r for _, r in self._bulk), np.array([r for _, r in tail], dtype=np.int32)])
        self._tail, self._tail_rows, self._bulk = {}, 0, []
        step = np.diff(ids)
        if len(ids) > 1 and not ((step > 0) | ((step == 0) & (np.diff(rows) > 0))).all():
            order = np.lexsort((rows, ids))  # (a load comes in id order, which needs none)
            ids, rows = ids[order], rows[order]
        self.ids, self.rows = ids, rows

    def of(self, item_id: int) -> list[int]:
        """The item's rows, in row order."""
        if self._bulk:
            self.merge()
        lo, hi = np.searchsorted(self.ids, [item_id, item_id + 1]).tolist()
        found = self.rows[lo:hi].tolist()
        tail = self._tail.get(item_id)
        if tail is not None:  # rows added after the arrays' ones
            found += tail if isinstance(tail, list) else [tail]
        return found

    def of_many(self, item_ids: list[int]) -> np.ndarray:
        """The rows of any of the items, in row order."""
        if self._bulk:
            self.merge()
        wanted = np.unique(np.asarray(item_ids, dtype=np.int64))
        lo, hi = np.searchsorted(self.ids, wanted), np.searchsorted(self.ids, wanted + 1)
        tail = [r for i in wanted.tolist() if (v := self._tail.get(i)) is not None
                for r in (v if isinstance(v, list) else (v,))]  # fmt: skip
        return np.sort(np.concatenate([self.rows[concat_ranges(lo, hi)], np.array(tail, dtype=np.int64)]))

    @property
    def nbytes(self) -> int:
        bulk = sum(i.nbytes + r.nbytes for i, r in self._bulk)
        return self.ids.nbytes + self.rows.nbytes + bulk + 110 * self._tail_rows


# the per-row arrays of DedupIndex (the titles and paragraph keys are kept apart)
_ROW_ARRAYS = ("item_ids", "cluster_ids", "seen", "kinds", "alive", "sizes", "lede_sizes", "full", "lede", "exact",
               "feed_ids")  # fmt: skip


class _Carriers(NamedTuple):
    """What common_paragraphs looks up per row found: its cluster and feed; and the entry's
    distinct paragraph keys when its body is short (None otherwise)."""

    cluster: dict[int, int]
    feed: dict[int, int]
    body: set[int] | None


def _move_down(arr: np.ndarray, live: np.ndarray) -> None:
    """arr[: len(live)] = arr[live], in place and block by block: `live` is increasing, so
    every block's rows come from at or after where they go, past the blocks already moved."""
    for start in range(0, len(live), COMPACT_BLOCK):
        block = live[start : start + COMPACT_BLOCK]
        arr[start : start + len(block)] = arr[block]


class DedupIndex:
    """Signatures of the indexed items (those inside the dedup window) and LSH buckets
    over them for two bandings: full text and lede. Rows are appended; a removed item's row
    is marked dead (a moved or changed item is re-added as a new row), and compact()
    reclaims the dead rows once they are COMPACT_DEAD_SHARE of the index.

    The items' exact-match keys (canonical URL, content hash; `exact_key`) are filed in
    the same buckets, so the exact shortcut costs no lookup of its own and needs no
    random-key index on disk (which made every commit rewrite scattered index pages).

    Each row also keeps its entry's feed and title fingerprints (aggregator.dedup.evidence) and
    the keys of its paragraphs, filed in buckets of their own, from which the index tells
    which paragraphs of a new entry are common (common_paragraphs)."""

    def __init__(self, settings: DedupSettings, capacity: int = 1024):
        self.settings = settings
        self.full_bands = Banding(settings.num_perm, settings.threshold, salt=11)
        self.lede_bands = Banding(settings.lede_num_perm, settings.lede_threshold, salt=13,
                                   recall=LEDE_CANDIDATE_RECALL)  # fmt: skip
        self.buckets = Buckets()
        self.paragraph_buckets = Buckets()
        # one bit per paragraph key (its low PARAGRAPH_SEEN_BITS bits) ever filed: most
        # paragraphs are no one else's, and a bit test in Python is ~20x cheaper than a
        # bucket lookup (a set bit only sends the lookup on; killed rows keep their bits
        # until compact())
        self._paragraph_seen = bytearray(1 << (PARAGRAPH_SEEN_BITS - 3))
        self.n = 0
        self.dead = 0  # rows below n that are no longer alive
        self._item_rows = _ItemRows()
        self._key_memo: tuple | None = None
        self._exact_memo: tuple | None = None
        self._plan_keys()
        s = settings
        self.item_ids = np.zeros(capacity, dtype=np.int64)
        self.cluster_ids = np.zeros(capacity, dtype=np.int64)
        self.seen = np.zeros(capacity, dtype=np.int64)  # first-seen, epoch seconds
        self.kinds = np.zeros(capacity, dtype=np.int8)
        self.alive = np.zeros(capacity, dtype=bool)
        self.sizes = np.zeros(capacity, dtype=np.int32)
        self.lede_sizes = np.zeros(capacity, dtype=np.int32)
        self.full = np.zeros((capacity, s.num_perm), dtype=U32)
        self.lede = np.zeros((capacity, s.lede_num_perm), dtype=U32)
        self.exact = np.zeros((capacity, 2), dtype=np.uint64)  # exact keys: URL, content hash
        self.feed_ids = np.full(capacity, -1, dtype=np.int32)
        self.titles: list[str] = []  # per row; compared only for rows of the entry's own feed
        self._title_bytes = 0
        # row r's paragraph keys are paragraph_keys[paragraph_at[r] : paragraph_at[r + 1]]
        self.paragraph_keys = np.zeros(capacity, dtype=np.uint32)
        self.paragraph_at = np.zeros(capacity + 1, dtype=np.int64)

    def _grow(self, needed: int) -> None:
        capacity = len(self.item_ids)
        if needed <= capacity:
            return
        new_cap = max(needed, capacity * 2)
        for name in _ROW_ARRAYS:
            arr = getattr(self, name)
            grown = np.zeros((new_cap, *arr.shape[1:]), dtype=arr.dtype)
            grown[: self.n] = arr[: self.n]
            setattr(self, name, grown)
        self.feed_ids[self.n :] = -1
        at = np.zeros(new_cap + 1, dtype=np.int64)
        at[: self.n + 1] = self.paragraph_at[: self.n + 1]
        self.paragraph_at = at

    def _add_paragraphs(self, keys: np.ndarray) -> None:
        """Append the next row's paragraph keys (the row is self.n, before it is counted)."""
        end = int(self.paragraph_at[self.n])
        if end + len(keys) > len(self.paragraph_keys):
            grown = np.zeros(max(end + len(keys), 2 * len(self.paragraph_keys)), dtype=np.uint32)
            grown[:end] = self.paragraph_keys[:end]
            self.paragraph_keys = grown
        self.paragraph_keys[end : end + len(keys)] = keys
        self.paragraph_at[self.n + 1] = end + len(keys)

    def __len__(self) -> int:
        return self.n - self.dead

    def add_many(
        self,
        item_ids: np.ndarray,
        cluster_ids: np.ndarray,
        seen: np.ndarray,
        sigs: list[Signature],
        bulk: bool = False,
        exact: np.ndarray | None = None,
        facts: list[EntryFacts] | None = None,
        paragraphs: list[np.ndarray] | tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Index signatures (and their items' exact keys, (n, 2) uint64, facts and
        paragraph keys); returns their rows. With bulk (start-up rebuild) they become
        queryable at finish_bulk()."""
        count = len(sigs)
        start = self.n
        self._grow(start + count)
        rows = np.arange(start, start + count)
        self.item_ids[rows] = item_ids
        self.cluster_ids[rows] = cluster_ids
        self.seen[rows] = seen
        self.alive[rows] = True
        if exact is not None:
            self.exact[rows] = exact
        facts = facts or [NO_FACTS] * count
        self.feed_ids[rows] = [f.feed for f in facts]
        self.titles.extend(f.title for f in facts)
        self._title_bytes += sum(len(f.title) for f in facts) + 57 * count  # str objects, roughly
        for i, sig in zip(rows.tolist(), sigs, strict=True):
            self.kinds[i] = sig.kind
            self.sizes[i] = sig.size
            self.full[i] = sig.full
            if sig.lede is not None:
                self.lede[i] = sig.lede
                self.lede_sizes[i] = sig.lede_size
        if isinstance(paragraphs, tuple):  # (all keys in row order, how many each row has)
            self._add_flat_paragraphs(*paragraphs)
        else:
            self._add_many_paragraphs(paragraphs or [_NO_PARAGRAPHS] * count)
        if bulk:
            self._item_rows.add_many(self.item_ids[rows], rows)
        else:
            for item_id, row in zip(self.item_ids[rows].tolist(), rows.tolist(), strict=True):
                self._item_rows.add(item_id, row)
        self.n += count
        self._index_rows(rows, bulk)
        return rows

    def _mark_seen(self, keys) -> None:
        seen_bits = self._paragraph_seen
        for k in keys:
            seen_bits[(k & _SEEN_MASK) >> 3] |= 1 << (k & 7)

    def _add_many_paragraphs(self, paragraphs: list[np.ndarray]) -> None:
        """Append the paragraph keys of rows self.n, self.n + 1, ... (before they are counted)."""
        counts = np.fromiter(map(len, paragraphs), dtype=np.int64, count=len(paragraphs))
        flat = np.concatenate(paragraphs) if int(counts.sum()) else _NO_PARAGRAPHS
        self._add_flat_paragraphs(flat, counts)

    def _add_flat_paragraphs(self, flat: np.ndarray, counts: np.ndarray) -> None:
        """_add_many_paragraphs with the keys already in one array."""
        end = int(self.paragraph_at[self.n])
        total = len(flat)
        if end + total > len(self.paragraph_keys):
            grown = np.zeros(max(end + total, 2 * len(self.paragraph_keys)), dtype=np.uint32)
            grown[:end] = self.paragraph_keys[:end]
            self.paragraph_keys = grown
        self.paragraph_keys[end : end + total] = flat
        self.paragraph_at[self.n + 1 : self.n + 1 + len(counts)] = end + np.cumsum(counts)

    def _index_rows(self, rows: np.ndarray, bulk: bool) -> None:
        keys = self.full_bands.band_keys(self.full[rows], self.kinds[rows])
        words_rows = rows[self.kinds[rows] == KIND_WORDS]
        lede_keys = self.lede_bands.band_keys(self.lede[words_rows]) if len(words_rows) else None
        exact_keys = [
            (np.array([exact_bucket_key(k, column) for k in self.exact[with_key, column].tolist()],
                      dtype=np.uint32).reshape(-1, 1), with_key)
            for column in (0, 1)
            if len(with_key := rows[self.exact[rows, column] != 0])
        ]  # fmt: skip
        starts, ends = self.paragraph_at[rows], self.paragraph_at[rows + 1]
        if bulk:
            # each row's distinct keys, as add_one files them (one sort over all (row, key) pairs)
            pairs = np.unique(np.repeat(rows.astype(np.int64), ends - starts) << 32
                              | self.paragraph_keys[concat_ranges(starts, ends)].astype(np.int64))  # fmt: skip
            filed = (pairs & 0xFFFFFFFF).astype(np.uint32)
            self.paragraph_buckets.add_flat(filed, pairs >> 32)
            bits = (filed & np.uint32(_SEEN_MASK)).astype(np.int64)
            seen_bits = np.frombuffer(self._paragraph_seen, dtype=np.uint8)
            np.bitwise_or.at(seen_bits, bits >> 3, (1 << (bits & 7)).astype(np.uint8))
            self.buckets.add(keys, rows)
            if lede_keys is not None:
                self.buckets.add(lede_keys, words_rows)
            for column_keys, with_key in exact_keys:
                self.buckets.add(column_keys, with_key)
            return
        for key_row, row in zip(keys, rows.tolist(), strict=True):
            self.buckets.add_one(key_row, row)
        if lede_keys is not None:
            for key_row, row in zip(lede_keys, words_rows.tolist(), strict=True):
                self.buckets.add_one(key_row, row)
        for column_keys, with_key in exact_keys:
            for key_row, row in zip(column_keys, with_key.tolist(), strict=True):
                self.buckets.add_one(key_row, row)
        for row, start, end in zip(rows.tolist(), starts.tolist(), ends.tolist(), strict=True):
            if end > start:
                distinct = np.unique(self.paragraph_keys[start:end])
                self.paragraph_buckets.add_one(distinct, row)
                self._mark_seen(distinct.tolist())

    def add(
        self,
        item_id: int,
        cluster_id: int,
        seen: int,
        sig: Signature,
        exact: tuple[int, int] = NO_KEY,
        facts: EntryFacts = NO_FACTS,
        paragraphs: np.ndarray | None = None,
        band: np.ndarray | None = None,
    ) -> int:
        """Index one item (online): its row becomes a candidate for the next query.
        `exact`: its exact keys (URL, content hash; 0 for none); `facts` and `paragraphs`
        (evidence.EntryFacts, evidence.paragraph_keys) for the rules of find() and
        common_paragraphs(); `band` as for find()."""
        row = self.n
        self._grow(row + 1)
        self.item_ids[row], self.cluster_ids[row], self.seen[row] = item_id, cluster_id, seen
        self.alive[row] = True
        self.kinds[row], self.sizes[row], self.full[row] = sig.kind, sig.size, sig.full
        self.feed_ids[row] = facts.feed
        self.titles.append(facts.title)
        self._title_bytes += len(facts.title) + 57
        self._add_paragraphs(paragraphs if paragraphs is not None else _NO_PARAGRAPHS)
        if paragraphs is not None and len(paragraphs):
            listed = paragraphs.tolist()
            distinct = set(listed)
            self.paragraph_buckets.add_one(paragraphs if len(distinct) == len(listed) else np.unique(paragraphs), row)
            self._mark_seen(distinct)
        self._item_rows.add(item_id, row)
        self.n += 1
        if sig.lede is not None:
            self.lede[row], self.lede_sizes[row] = sig.lede, sig.lede_size
        if exact != NO_KEY:
            self.exact[row] = exact
        self.buckets.add_one(self._query_keys(sig, exact, band), row)
        return row

    def finish_bulk(self) -> None:
        self.buckets.merge()
        self.paragraph_buckets.merge()
        self._item_rows.merge()

    def kill(self, rows) -> None:
        """Retire rows (an item removed, moved or changed); rows already dead stay so."""
        rows = np.unique(np.asarray(list(rows), dtype=np.int64))
        self.dead += int(np.count_nonzero(self.alive[rows]))
        self.alive[rows] = False

    def revive(self, rows) -> None:
        """Undo kill() (a rolled-back transaction retired them)."""
        rows = np.unique(np.asarray(list(rows), dtype=np.int64))
        self.dead -= len(rows) - int(np.count_nonzero(self.alive[rows]))
        self.alive[rows] = True

    def rows_of_item(self, item_id: int) -> list[int]:
        """The item's live rows, in row order (found directly, without a pass over the rows)."""
        alive = self.alive
        return [r for r in self._item_rows.of(item_id) if alive[r]]

    def rows_of_items(self, item_ids: list[int]) -> list[int]:
        """The live rows of any of `item_ids`, in row order."""
        rows = self._item_rows.of_many(item_ids)
        return rows[self.alive[rows]].tolist()

    def compact(self, force: bool = False) -> bool:
        """Reclaim the dead rows once they pass COMPACT_DEAD_SHARE of the rows (or now,
        with `force`); returns whether it did. The live rows move down in order and every
        structure keeps only theirs, so queries answer as an index built afresh from them
        would (before, dead rows also took places among a crowded bucket's BUCKET_CAP).
        Row numbers change: call it only where no one holds a row (Clusterer.commit)."""
        if not self.dead or (not force and (self.dead < COMPACT_MIN_DEAD or self.dead < COMPACT_DEAD_SHARE * self.n)):
            return False
        n = self.n
        live = np.flatnonzero(self.alive[:n])
        kept = len(live)
        new_row = np.full(n, -1, dtype=np.int64)
        new_row[live] = np.arange(kept)
        for name in _ROW_ARRAYS:
            arr = getattr(self, name)
            _move_down(arr, live)
            arr[kept:n] = 0  # add() leaves a row's lede and exact keys as it finds them
        self.feed_ids[kept:n] = -1
        self.titles = [self.titles[r] for r in live.tolist()]
        self._title_bytes = sum(map(len, self.titles)) + 57 * kept
        starts, ends = self.paragraph_at[live], self.paragraph_at[live + 1]
        paragraphs = self.paragraph_keys[concat_ranges(starts, ends)]
        self.paragraph_keys[: len(paragraphs)] = paragraphs
        self.paragraph_at[1 : kept + 1] = np.cumsum(ends - starts)
        self.paragraph_at[kept + 1 : n + 1] = 0
        seen_bits = np.frombuffer(self._paragraph_seen, dtype=np.uint8)
        seen_bits[:] = 0  # the dead rows' paragraphs no longer send lookups on
        bits = (paragraphs & np.uint32(_SEEN_MASK)).astype(np.int64)
        np.bitwise_or.at(seen_bits, bits >> 3, (1 << (bits & 7)).astype(np.uint8))
        self.buckets.keep_rows(new_row)
        self.paragraph_buckets.keep_rows(new_row)
        self._item_rows = _ItemRows()
        self._item_rows.add_many(self.item_ids[:kept], np.arange(kept))
        self._item_rows.merge()
        self.n, self.dead = kept, 0
        return True

    def signature(self, row: int) -> Signature:
        kind = int(self.kinds[row])
        return Signature(
            kind,
            int(self.sizes[row]),
            self.full[row],
            int(self.lede_sizes[row]),
            self.lede[row] if kind == KIND_WORDS or self.lede_sizes[row] else None,
        )

    def _plan_keys(self) -> None:
        """Both tables' band keys of one signature in a single gather: the bands of the
        full and lede signatures laid out over one vector (full, lede, a zero slot), so
        an online query costs a handful of numpy calls instead of two band_keys() calls.
        The keys are the ones band_keys() gives (tested)."""
        full, lede = self.full_bands, self.lede_bands
        p, q = self.settings.num_perm, self.settings.lede_num_perm
        width = max(full.r, lede.r)
        gather = np.full((full.b + lede.b, width), p + q, dtype=np.intp)  # p + q: the zero slot
        mult = np.zeros((full.b + lede.b, width), dtype=np.uint64)
        gather[: full.b, : full.r] = np.arange(full.b * full.r).reshape(full.b, full.r)
        gather[full.b :, : lede.r] = p + np.arange(lede.b * lede.r).reshape(lede.b, lede.r)
        mult[: full.b, : full.r] = full._mult
        mult[full.b :, : lede.r] = lede._mult
        self._gather, self._gather_mult = gather, mult
        self._gather_salt = np.concatenate([full._salt, lede._salt])
        self._vector = np.zeros(p + q + 1, dtype=np.uint64)

    def _keys(self, sig: Signature) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Band keys of `sig` (full, lede, and both together), computed once for the query
        and the add that follows it."""
        if self._key_memo is not None and self._key_memo[0] is sig:
            return self._key_memo[1:]
        p, b = self.settings.num_perm, self.full_bands.b
        vector = self._vector
        vector[:p] = sig.full
        banded = sig.lede is not None and sig.kind == KIND_WORDS  # a short item's word sketch is not banded
        vector[p:-1] = sig.lede if banded else 0
        keys = (vector[self._gather] * self._gather_mult).sum(axis=1) + self._gather_salt
        if sig.kind:
            keys[:b] ^= np.uint64(sig.kind) * MIX[2]
        keys = ((keys ^ (keys >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        full, lede = keys[:b], (keys[b:] if banded else None)
        self._key_memo = (sig, full, lede, keys if banded else full)
        return self._key_memo[1:]

    def band_keys_many(self, sigs: list[Signature]) -> list[np.ndarray]:
        """_keys(sig)[2] of many signatures in one vectorised pass (a batch of items to
        place: ~12 numpy calls per item otherwise). The same gather and arithmetic."""
        if not sigs:
            return []
        p, b = self.settings.num_perm, self.full_bands.b
        vectors = np.zeros((len(sigs), len(self._vector)), dtype=np.uint64)
        vectors[:, :p] = np.stack([sig.full for sig in sigs])
        banded = [sig.lede is not None and sig.kind == KIND_WORDS for sig in sigs]
        for i, sig in enumerate(sigs):
            if banded[i]:
                vectors[i, p:-1] = sig.lede
        keys = (vectors[:, self._gather] * self._gather_mult).sum(axis=2) + self._gather_salt
        keys[:, :b] ^= np.array([sig.kind for sig in sigs], dtype=np.uint64)[:, None] * MIX[2]  # kind 0: no change
        keys = ((keys ^ (keys >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        return [keys[i] if banded[i] else keys[i, :b] for i in range(len(sigs))]

    def _query_keys(self, sig: Signature, exact: tuple[int, int], band: np.ndarray | None = None) -> np.ndarray:
        """The bucket keys of an item: its band keys (`band`, when band_keys_many made
        them), then its exact keys."""
        both = self._keys(sig)[2] if band is None else band
        if exact == NO_KEY:
            return both
        if self._exact_memo is not None and self._exact_memo[0] is sig and self._exact_memo[1] == exact:
            return self._exact_memo[2]
        extra = [exact_bucket_key(k, column) for column, k in enumerate(exact) if k]
        keys = np.concatenate([both, np.array(extra, dtype=np.uint32)])
        self._exact_memo = (sig, exact, keys)
        return keys

    def candidates(self, sig: Signature, seen: int) -> list[int]:
        """Live rows that share a band with `sig` and were first seen no more than the
        dedup window before it (so a later recluster sees exactly what we saw online)."""
        return self._live_rows(self.buckets.query(self._keys(sig)[2]), seen)[-MAX_CANDIDATES:].tolist()

    def _live_rows(self, found: set[int], seen: int) -> np.ndarray:
        """The rows of `found` alive and first seen inside the window before `seen`, in order."""
        since = seen - self.settings.window
        if len(found) <= FEW_ROWS:  # the usual query finds none or one: numpy's calls cost more
            alive, first = self.alive, self.seen
            return np.array(sorted(r for r in found if alive[r] and first[r] >= since), dtype=np.int64)
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        keep = self.alive[rows] & (self.seen[rows] >= since)
        return np.sort(rows[keep])

    def scan_many(self, sigs: list[Signature], exact: list[tuple[int, int]], bands: list[np.ndarray]) -> list[Scan]:
        """The sorted part of find()'s lookups for a batch of items about to be placed
        (Buckets.scan_many): pass each one's Scan to find() with the same signature, exact
        keys and band keys."""
        return self.buckets.scan_many(
            [self._query_keys(sig, keys, band) for sig, keys, band in zip(sigs, exact, bands, strict=True)]
        )

    def find(
        self, sig: Signature, seen: int, exact: tuple[int, int] = NO_KEY, facts: EntryFacts = NO_FACTS,
        band: np.ndarray | None = None, scan: Scan | None = None,
    ) -> tuple[int | None, list[tuple[int, float]]]:
        """(row of the earliest item with the same exact key, []) when there is one (the
        exact shortcut), else (None, the verified copies as `matches` gives them, less
        those `facts` rule out: see aggregator.dedup.evidence).

        A link is an exact key only while it names one entry: when two entries of one
        feed share it (the blog's feed URL on every link post, a section page, a
        redirector), it says nothing about any entry that carries it. `band`: the band keys
        of `sig`, when band_keys_many made them; `scan`: scan_many's, made with the same."""
        if scan is not None:
            if exact != NO_KEY:
                self._exact_memo = (sig, exact, scan.keys)  # for the add() that follows
            found = self.buckets.query(scan.keys, scan)
        else:
            found = self.buckets.query(self._query_keys(sig, exact, band))
        if not found:  # the usual case: a story no one else carries
            return None, []
        rows = self._live_rows(found, seen)
        if not len(rows):
            return None, []
        if exact != NO_KEY:
            url, digest = exact
            same = np.zeros(len(rows), dtype=bool)
            if url:
                by_url = self.exact[rows, 0] == url
                if by_url.any() and self._names_one_entry(rows[by_url], facts):
                    same |= by_url
            if digest:
                same |= self.exact[rows, 1] == digest
            if same.any():
                hits = rows[same]
                return int(hits[np.argmin(self.item_ids[hits])]), []
        return None, self._verified(sig, rows[-MAX_CANDIDATES:], facts)

    def _names_one_entry(self, rows: np.ndarray, facts: EntryFacts) -> bool:
        """Whether the rows sharing a link, and the entry of `facts`, are each from a
        different feed (rows of unknown feeds, -1, are not counted)."""
        feeds = self.feed_ids[rows]
        feeds = feeds[feeds >= 0]
        if facts.feed >= 0 and (feeds == facts.feed).any():
            return False
        return len(np.unique(feeds)) == len(feeds)

    def common_paragraphs(
        self, keys: np.ndarray, seen: int, facts: EntryFacts, item_id: int = -1, body_chars: int = 0
    ) -> np.ndarray:
        """Which of an entry's paragraphs (evidence.paragraph_keys) are common, as a mask:
        carried by live rows (inside the window before `seen`, not the entry's own) of
        COMMON_CLUSTERS or more distinct clusters, or by two rows of one feed in different
        clusters, or by a row of the entry's own feed under an unrelated title."""
        common = np.zeros(len(keys), dtype=bool)
        seen_bits = self._paragraph_seen
        for k in keys.tolist():
            if seen_bits[(k & _SEEN_MASK) >> 3] >> (k & 7) & 1:
                break
        else:
            return common  # the usual case: no paragraph of it was ever filed
        if not self.paragraph_buckets.holds_any(keys):
            return common
        wanted = np.unique(keys)
        rows = self._live_rows(self.paragraph_buckets.query(wanted), seen)
        rows = rows[self.item_ids[rows] != item_id]
        if not len(rows):
            return common
        starts, ends = self.paragraph_at[rows], self.paragraph_at[rows + 1]
        carried = self.paragraph_keys[concat_ranges(starts, ends)]
        carrier = np.repeat(rows, ends - starts)
        hit = wanted[np.minimum(np.searchsorted(wanted, carried), len(wanted) - 1)] == carried  # np.isin, cheaper
        # the rows carrying each key, in row order (a row twice if it carries it twice);
        # grouped in plain Python: a few dozen rows, where numpy's calls per key cost more
        by_key: dict[int, list[int]] = {}
        for key, row in zip(carried[hit].tolist(), carrier[hit].tolist(), strict=True):
            carriers = by_key.get(key)
            if carriers is None:
                by_key[key] = [row]
            else:
                carriers.append(row)
        listed = rows.tolist()
        carrying = _Carriers(dict(zip(listed, self.cluster_ids[rows].tolist(), strict=True)),
                             dict(zip(listed, self.feed_ids[rows].tolist(), strict=True)),
                             set(wanted.tolist()) if body_chars <= CHROME_CHARS else None)  # fmt: skip
        verdict = [key for key, by in by_key.items()
                   if len({carrying.cluster[r] for r in by}) >= COMMON_CLUSTERS
                   or self._feed_template(by, facts, carrying)]  # fmt: skip
        if verdict:
            marked = set(verdict)
            common = np.array([k in marked for k in keys.tolist()], dtype=bool)
        return common

    def _feed_template(self, rows: list[int], facts: EntryFacts, carrying: _Carriers) -> bool:
        """Whether these rows' paragraph is a feed's template: one feed carries it in two
        clusters, or the entry's own feed under a title unrelated to the entry's, or, for a
        short body (`carrying.body`: its distinct keys, None for a longer one), under another
        title (not one inside the other) in an entry whose whole body is the same: chrome and
        nothing else. Local outlets' titles share place names ("Northfield"), which makes
        them related; a long body republished word for word under a new headline is the
        same article ("Teen shot and killed in Bluffton")."""
        feed_of, cluster_of = carrying.feed, carrying.cluster
        known = [r for r in rows if feed_of[r] >= 0]
        if facts.feed >= 0:
            mine = [r for r in known if feed_of[r] == facts.feed]
            titles = self.titles
            if mine and not all(may_be_one_entry(titles[r], facts.title) for r in mine):
                return True
            body, at = carrying.body, self.paragraph_at
            for r in mine if body is not None else ():
                same_body = set(self.paragraph_keys[at[r] : at[r + 1]].tolist()) == body
                if same_body and not titles_contained(titles[r], facts.title):
                    return True
        pairs = {feed_of[r] << 32 | cluster_of[r] for r in known}
        return len({pair >> 32 for pair in pairs}) < len(pairs)

    def matches(self, sig: Signature, seen: int) -> list[tuple[int, float]]:
        """(row, similarity) of every verified copy among the candidates."""
        return self._verified(sig, self._live_rows(self.buckets.query(self._keys(sig)[2]), seen)[-MAX_CANDIDATES:])

    def _verified(self, sig: Signature, rows: np.ndarray, facts: EntryFacts = NO_FACTS) -> list[tuple[int, float]]:
        rows = rows[self.kinds[rows] == sig.kind]
        if len(rows) == 0:
            return []
        sims = similarities(sig, self.sizes[rows], self.lede_sizes[rows], self.full[rows],
                            self.lede[rows], self.settings)  # fmt: skip
        keep = ~np.isnan(sims)
        found = list(zip(rows[keep].tolist(), sims[keep].tolist(), strict=True))
        if facts.feed >= 0 and found:  # one feed's entries under unrelated titles are different entries
            # (checked on the few verified copies, not on every candidate)
            feeds = self.feed_ids
            found = [(r, sim) for r, sim in found
                     if feeds[r] != facts.feed or may_be_one_entry(self.titles[r], facts.title)]  # fmt: skip
        return found

    @property
    def nbytes(self) -> int:
        """Memory of the index structures for the rows in use."""
        per_row = (
            self.item_ids.itemsize + self.cluster_ids.itemsize + self.seen.itemsize
            + self.kinds.itemsize + self.alive.itemsize + self.sizes.itemsize
            + self.lede_sizes.itemsize + self.full[0].nbytes + self.lede[0].nbytes + self.exact[0].nbytes
            + self.feed_ids.itemsize + self.paragraph_at.itemsize + 8  # + the titles list's pointer
        )  # fmt: skip
        paragraphs = 4 * int(self.paragraph_at[self.n]) + len(self._paragraph_seen)
        return (per_row * self.n + self._title_bytes + self.buckets.nbytes + paragraphs + self.paragraph_buckets.nbytes
                + self._item_rows.nbytes)  # fmt: skip
