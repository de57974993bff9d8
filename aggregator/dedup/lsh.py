"""Locality-sensitive hashing: how signatures are cut into bands, and the sorted-array bucket
store that proposes candidate pairs."""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import numpy as np

from .shingles import MIX

# ---------------------------------------------------------------- LSH index


# Share of pairs at exactly the threshold that must become candidates. Missing a copy
# costs more than verifying a false candidate (a 128-value comparison), so the banding is
# chosen for recall rather than by datasketch's balanced false-positive/negative weights,
# which at threshold 0.5 and 128 permutations surface only ~55% of such pairs.
CANDIDATE_RECALL = 0.95
# The lede table asks less. Ledes of real copies are near-identical (the same first
# sentences), far above its threshold, while unrelated ledes that share one stock sentence
# sit at J ~0.1-0.2: with its 64 values, 2-row bands (95%) made ~5 false candidates per
# item from those, 3-row bands (93% at the threshold itself) make ~4x fewer.
LEDE_CANDIDATE_RECALL = 0.93


def bands_for(threshold: float, num_perm: int, recall: float = CANDIDATE_RECALL) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) whose banding still
    proposes `recall` of the pairs with Jaccard == threshold."""
    for r in range(num_perm, 0, -1):
        p = threshold**r
        if p >= 1:
            return 1, r
        if p * num_perm < 1 - recall:  # hopeless at this r: even one band per row falls short
            continue
        b = math.ceil(math.log(1 - recall) / math.log1p(-p))
        if b * r <= num_perm:
            return b, r
    return num_perm, 1


BUCKET_CAP = 64  # rows taken from one LSH bucket (its newest)


def concat_ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Indices starts[0]..ends[0]-1, starts[1]..ends[1]-1, ... in one array."""
    lengths = ends - starts
    if not lengths.sum():
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))


def exact_key(value: str | None) -> int:
    """A 64-bit key for an exact-match value (canonical URL, content hash); 0 for none."""
    if not value:
        return 0
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little") or 1


def exact_bucket_key(key: int, column: int) -> int:
    """The 32-bit bucket key under which an exact key is filed (salted per column)."""
    mixed = (key * int(MIX[column]) + _EXACT_SALT[column]) % 2**64
    return (mixed ^ (mixed >> 32)) & 0xFFFFFFFF


_EXACT_SALT = (0x5851F42D4C957F2D, 0x14057B7EF767814F)


class Banding:
    """How one signature is cut into LSH bands: b bands of r rows, each hashed to a key."""

    def __init__(self, num_perm: int, threshold: float, salt: int, recall: float = CANDIDATE_RECALL):
        self.b, self.r = bands_for(threshold, num_perm, recall)
        rng = np.random.RandomState(salt)
        self._mult = rng.randint(1, 2**62, size=(self.b, self.r), dtype=np.uint64) | np.uint64(1)
        self._salt = rng.randint(1, 2**62, size=self.b, dtype=np.uint64)

    def band_keys(self, sigs: np.ndarray, kind: np.ndarray | int = 0) -> np.ndarray:
        """uint32 keys, one per band, for a (n, num_perm) matrix of signatures."""
        bands = sigs[:, : self.b * self.r].reshape(len(sigs), self.b, self.r).astype(np.uint64)
        keys = (bands * self._mult[None]).sum(axis=2) + self._salt[None]  # wraps mod 2**64
        keys = keys ^ (np.asarray(kind, dtype=np.uint64).reshape(-1, 1) * MIX[2])
        # 32-bit keys halve the memory; a chance collision only adds a candidate to verify
        return ((keys ^ (keys >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


class Scan(NamedTuple):
    """Buckets.scan_many's answer for one query: what the sorted arrays hold for `keys`
    as of merge number `merges`: the rows the short scans found, and the keys under a
    long run, left to the binary search (None: none)."""

    keys: np.ndarray
    merges: int
    rows: list[int]
    long_keys: np.ndarray | None


class Buckets:
    """The LSH buckets of both bandings (full text and lede: their keys are salted apart,
    and a chance collision only adds a candidate to verify), so a query is one lookup.
    Keys live in a sorted numpy array plus a small tail, merged in when it grows.

    A directory over the sorted keys (where the keys starting with each high-bit prefix
    begin, ~4 keys per prefix, ~1 byte per key) turns a lookup into two reads and a short
    scan: a binary search over millions of keys missed the CPU caches at every step
    (a query at 100k items cost 58 instead of 21 us at 10k)."""

    MERGE_AT = 8192
    KEYS_PER_PREFIX = 8  # directory size: one entry per 4-8 keys
    SCAN = 16  # keys compared per lookup; a longer run under one prefix is binary-searched
    assert SCAN <= BUCKET_CAP  # a run short enough to scan is never over the cap

    def __init__(self):
        self.keys = np.zeros(0, dtype=np.uint32)
        self.rows = np.zeros(0, dtype=np.int32)
        self._tail_keys: list[np.ndarray] = []
        self._tail_rows: list[np.ndarray] = []
        self._tail: dict[int, int | list[int]] = {}
        self._online_keys: list[np.ndarray] = []
        self._online_rows: list[int] = []
        self._online_counts: list[int] = []
        self._tail_count = 0
        self._shift = 32
        self._starts = np.zeros(2, dtype=np.int64)
        self._scan = np.arange(self.SCAN)
        self.merges = 0  # counts merge()s: a Scan is valid until the next one

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Bulk add (start-up): keys (n, bands), rows (n,); queryable after merge()."""
        self._tail_keys.append(keys.reshape(-1))
        self._tail_rows.append(np.repeat(rows.astype(np.int32), keys.shape[1]))

    def holds_any(self, keys: np.ndarray) -> bool:
        """Whether any of `keys` has a row (cheaper than query when most keys have none)."""
        if self._tail and not self._tail.keys().isdisjoint(keys.tolist()):
            return True
        if not len(self.keys):
            return False
        at = np.searchsorted(self.keys, keys)
        return bool((self.keys[np.minimum(at, len(self.keys) - 1)] == keys).any())

    def add_flat(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Bulk add of (key, row) pairs, any number of keys per row; queryable after merge()."""
        self._tail_keys.append(keys.astype(np.uint32))
        self._tail_rows.append(rows.astype(np.int32))

    def add_one(self, keys: np.ndarray, row: int) -> None:
        """Online add of one row: queryable at once through the tail dict, which maps a
        key to its row, or to a list of rows once several share it. Set operations on
        the dict's keys keep the common case (no shared key) free of a Python loop."""
        tail = self._tail
        new = dict.fromkeys(keys.tolist(), row)
        for k in tail.keys() & new.keys():
            old = tail[k]
            if isinstance(old, list):
                old.append(row)  # in place: a copy made 20,000 copies of one story quadratic
                new[k] = old
            else:
                new[k] = [old, row]
        tail.update(new)
        self._online_keys.append(keys)  # merge() reads these instead of walking the dict
        self._online_rows.append(row)
        self._online_counts.append(len(keys))
        self._tail_count += 1
        if self._tail_count >= self.MERGE_AT:
            self.merge()

    def merge(self) -> None:
        """Fold everything added into the sorted arrays."""
        if self._online_keys:
            self._tail_keys.append(np.concatenate(self._online_keys))
            self._tail_rows.append(np.repeat(np.asarray(self._online_rows, dtype=np.int32), self._online_counts))
        if not self._tail_keys:
            return
        self.merges += 1
        keys = np.concatenate([self.keys, *self._tail_keys])
        rows = np.concatenate([self.rows, *self._tail_rows])
        order = np.argsort(keys, kind="stable")
        self.keys, self.rows = keys[order], rows[order]
        del keys, rows, order  # before the directory is built: they are ~3x the arrays kept
        self._index_prefixes()
        self._tail_keys, self._tail_rows, self._tail = [], [], {}
        self._online_keys, self._online_rows, self._online_counts = [], [], []
        self._tail_count = 0

    def keep_rows(self, new_row: np.ndarray) -> None:
        """Drop the rows whose new_row[row] is -1 and renumber the others. The map keeps
        the rows' order, so each bucket still lists its rows oldest first, as a fresh
        build from the kept rows would."""
        self.merge()
        renumbered = new_row[self.rows]
        kept = renumbered >= 0
        self.keys, self.rows = self.keys[kept], renumbered[kept].astype(np.int32)
        self._index_prefixes()

    def scan_many(self, queries: list[np.ndarray]) -> list[Scan]:
        """The sorted arrays' part of query() for many key vectors at once (a batch of
        items to place): one set of numpy calls for the batch instead of ~10 per query,
        which on vectors of ~40 keys cost more than the lookups themselves. Each Scan is
        valid until the next merge(), and only for a query whose tail finds no crowded
        bucket (query() checks both, and otherwise looks up as before)."""
        if not queries:
            return []
        if not len(self.keys):
            return [Scan(q, self.merges, [], None) for q in queries]
        flat = np.concatenate(queries)
        prefix = flat >> self._shift
        lo, hi = self._starts[prefix], self._starts[prefix + 1]
        at = lo[:, None] + self._scan
        hit = at < hi[:, None]
        np.minimum(at, len(self.keys) - 1, out=at)
        hit &= self.keys[at] == flat[:, None]
        long_run = hi - lo > self.SCAN
        hit &= ~long_run[:, None]
        per_key = hit.sum(axis=1)
        rows = self.rows[at[hit]].tolist()
        sizes = [len(q) for q in queries]
        ends = np.cumsum(sizes)
        row_ends = np.concatenate([[0], np.cumsum(per_key)])[ends].tolist()
        out, start, first_key = [], 0, 0
        for q, end, key_end in zip(queries, row_ends, ends.tolist(), strict=True):
            longs = long_run[first_key:key_end]
            out.append(Scan(q, self.merges, rows[start:end], q[longs] if longs.any() else None))
            start, first_key = end, key_end
        return out

    def query(self, keys: np.ndarray, scan: Scan | None = None) -> set[int]:
        """Rows sharing at least one band key with `keys`; from a crowded
        bucket only its newest BUCKET_CAP rows, so templated feeds (thousands of
        near-identical short entries) cannot make every query scan thousands of rows.
        (The tail holds the newest rows; a bucket's rows are taken from it first, then
        from the sorted arrays, so where the last merge fell does not change the answer.)
        `scan`: scan_many's result for these keys, used when still valid."""
        found: set[int] = set()
        from_tail: dict[int, int] = {}  # bucket -> rows the tail gave
        crowded: list[int] = []  # buckets whose sorted rows the scan might take too many of
        tail = self._tail
        if tail:
            for k in tail.keys() & keys.tolist():
                rows = tail[k]
                if isinstance(rows, list):
                    found.update(rows[-BUCKET_CAP:])
                    from_tail[k] = min(len(rows), BUCKET_CAP)
                    if len(rows) > BUCKET_CAP - self.SCAN:
                        crowded.append(k)
                else:
                    found.add(rows)
                    from_tail[k] = 1
        if scan is not None and not crowded and scan.merges == self.merges and len(self.keys):
            found.update(scan.rows)
            if scan.long_keys is not None:  # rare: a crowded prefix, or a bucket of many rows
                found.update(self._query_sorted(scan.long_keys, from_tail))
        elif len(self.keys):
            prefix = keys >> self._shift
            lo, hi = self._starts[prefix], self._starts[prefix + 1]
            at = lo[:, None] + self._scan  # the first SCAN keys under each key's prefix
            hit = at < hi[:, None]
            np.minimum(at, len(self.keys) - 1, out=at)
            hit &= self.keys[at] == keys[:, None]
            long_run = hi - lo > self.SCAN
            if crowded:
                long_run |= np.isin(keys, np.array(crowded, dtype=np.uint32))
            if long_run.any():  # rare: a crowded prefix, or a bucket of many rows
                hit &= ~long_run[:, None]
                found.update(self._query_sorted(keys[long_run], from_tail))
            found.update(self.rows[at[hit]].tolist())
        return found

    def _query_sorted(self, keys: np.ndarray, from_tail: dict[int, int] | None = None) -> set[int]:
        """The lookup by binary search: each bucket's newest rows, BUCKET_CAP in all with
        the ones the tail gave (`from_tail`)."""
        found: set[int] = set()
        lo = np.searchsorted(self.keys, keys, "left")
        present = self.keys[np.minimum(lo, len(self.keys) - 1)] == keys
        hi = np.searchsorted(self.keys, keys[present], "right")
        taken = from_tail or {}
        for key, start, end in zip(keys[present].tolist(), lo[present].tolist(), hi.tolist(), strict=True):
            cap = BUCKET_CAP - taken.get(key, 0)
            if cap > 0:
                found.update(self.rows[max(start, end - cap) : end].tolist())
        return found

    def _index_prefixes(self) -> None:
        """Rebuild the directory: _starts[p] is where keys with high bits p begin (found
        by binary search of each prefix's first key: faster than counting, and with no
        temporary the size of the keys)."""
        n = len(self.keys)
        bits = min(31, max(1, (n // self.KEYS_PER_PREFIX).bit_length()))
        self._shift = 32 - bits
        self._starts = np.empty((1 << bits) + 1, dtype=np.int32 if n < 2**31 else np.int64)
        self._starts[:-1] = np.searchsorted(self.keys, np.arange(1 << bits, dtype=np.uint32) << np.uint32(self._shift))
        self._starts[-1] = n

    @property
    def entries(self) -> int:
        """(key, row) pairs filed, merged or not: what the buckets hold, dead rows' too."""
        return len(self.keys) + sum(map(len, self._tail_keys)) + sum(map(len, self._online_keys))

    @property
    def nbytes(self) -> int:
        tail = sum(k.nbytes + r.nbytes for k, r in zip(self._tail_keys, self._tail_rows, strict=True))
        online = sum(k.nbytes + 112 for k in self._online_keys) + 8 * len(self._online_rows)
        directory = self._starts.nbytes
        return self.keys.nbytes + self.rows.nbytes + directory + tail + online + 120 * len(self._tail)
