"""MinHash signatures of an entry's text (and of its lede), made with datasketch's affine32
permutations; the Signature record travels from the signing workers to the index and the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import DedupSettings
from .shingles import (
    BMP,
    MIX,
    SEVERAL,
    U32,
    batch_word_hashes,
    char_shingles,
    concat_runs,
    distinct,
    distinct_rows,
    fold_table,
    folded_word_hashes,
    shingle_sequence,
    word_shingles,
    words,
)

KIND_WORDS = 0
KIND_CHARS = 1
SEED = 1  # fixed: stored signatures must stay comparable across runs and versions


@dataclass(frozen=True)
class Signature:
    """MinHash sketches of one item: full text, and for word items the lede."""

    kind: int  # KIND_WORDS or KIND_CHARS
    size: int  # distinct shingles in the full text
    full: np.ndarray  # uint32[num_perm]
    lede_size: int = 0
    lede: np.ndarray | None = None  # uint32[lede_num_perm]; None for short items

    def __reduce__(self):
        """Pickled as bytes (parse workers send every signature back to the poller): an
        array's own pickle costs several times more, twice an item."""
        full, lede = self.to_blobs()
        return _unpickle, (self.kind, self.size, self.lede_size, full, lede)

    def to_blobs(self) -> tuple[bytes, bytes | None]:
        return self.full.astype("<u4").tobytes(), (
            self.lede.astype("<u4").tobytes() if self.lede is not None else None
        )

    @classmethod
    def from_blobs(cls, kind: int, size: int, lede_size: int, full: bytes, lede: bytes | None):
        """Read-only views of the stored bytes (copied only on a big-endian machine)."""
        return cls(
            kind=kind,
            size=size,
            full=_uint32s(full),
            lede_size=lede_size,
            lede=_uint32s(lede) if lede else None,
        )


def _unpickle(kind: int, size: int, lede_size: int, full: bytes, lede: bytes | None) -> Signature:
    return Signature(kind, size, _uint32s(full), lede_size, _uint32s(lede) if lede is not None else None)


def _uint32s(blob: bytes) -> np.ndarray:
    values = np.frombuffer(blob, dtype="<u4")
    return values if values.dtype.isnative else values.astype(U32)


# Signer.sign_many signs a batch of items with numpy calls over all of them: sign() pays
# ~1 us of fixed cost per numpy call, ~40 calls per item, more than its arithmetic. The
# batch is cut into runs of at most BATCH_CHARS characters (~16 items of 300 words): the
# temporaries (~40 bytes a character) and the 2 MB hash matrix then stay under malloc's
# trim threshold (4 MB once a 2 MB block was freed); with 64k characters each run gave
# its memory back and faulted it in again, +30 us an item. A longer item is signed alone.
BATCH_CHARS = 32_768

# A short item's distinct word hashes fill its lede slot, padded with this value
# (dedup/similarity.py: SHORT_WORDS_CONTAINED compares them).
WORD_PAD = np.uint32(0xFFFFFFFF)
MINHASH_BLOCK = 4096  # shingles hashed at once: bounds memory at 4096 x 128 x 4 bytes


# datasketch 2.0's MinHash(num_perm, seed, scheme="affine32").permutations and its _fmix
# (murmur3's finalizer), computed here: importing datasketch pulls in scipy, ~0.4 s of CPU in
# every process that signs (each parse worker). tests/test_sign_speedups.py checks both
# against datasketch, so stored signatures stay datasketch's.
def affine32_permutations(num_perm: int, seed: int) -> np.ndarray:
    """uint32[2, num_perm]: the a (odd) and b of h -> a * h + b mod 2**32."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=U32) * U32(2) + U32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=U32)
    return np.array([a, b])


def fmix32(hv: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finalizer on uint32 values, element-wise (wraps mod 2**32)."""
    hv = hv ^ (hv >> U32(16))
    hv = hv * U32(0x85EBCA6B)
    hv = hv ^ (hv >> U32(13))
    hv = hv * U32(0xC2B2AE35)
    return hv ^ (hv >> U32(16))


class Signer:
    """Signs items with datasketch's affine32 MinHash permutations, vectorised."""

    def __init__(self, settings: DedupSettings):
        self.settings = settings
        # The lede uses the first lede_num_perm of the full text's permutations: its
        # shingles are a run of the full text's, so one hash matrix serves both.
        self._full = affine32_permutations(settings.num_perm, SEED)
        self._shared = settings.lede_num_perm <= settings.num_perm
        self._lede = (
            self._full[:, : settings.lede_num_perm]
            if self._shared
            else affine32_permutations(settings.lede_num_perm, SEED)
        )

    def _minhash(self, shingles: np.ndarray, permutations: np.ndarray) -> np.ndarray:
        a, b = permutations
        if len(shingles) == 0:
            return np.full(len(a), np.iinfo(U32).max, dtype=U32)
        hv = fmix32(shingles.astype(U32))
        out = None
        # in blocks of rows, so a 5 MB entry does not need a (shingles x 128) matrix
        for start in range(0, len(hv), MINHASH_BLOCK):
            with np.errstate(over="ignore"):
                phv = np.multiply.outer(hv[start : start + MINHASH_BLOCK], a)  # wraps mod 2**32
                phv += b
            block = phv.min(axis=0)
            out = block if out is None else np.minimum(out, block)
        return out

    def _sign_with_lede(self, sequence: np.ndarray, start: int, rows: int) -> Signature:
        """Both signatures from one hash matrix: the lede's shingles are rows
        start..start+rows of the full text's (MinHash ignores repeats)."""
        a, b = self._full
        hv = fmix32(sequence)
        with np.errstate(over="ignore"):
            phv = np.multiply.outer(hv, a)
            phv += b
        lede_perm = self.settings.lede_num_perm
        return Signature(
            KIND_WORDS,
            distinct(sequence),
            phv.min(axis=0),
            distinct(sequence[start : start + rows]),
            phv[start : start + rows, :lede_perm].min(axis=0),
        )

    def sign(self, title: str, text: str) -> Signature:
        """Signature of an item's normalised title and text."""
        s = self.settings
        # one pass over "title body"; a separator character keeps their words apart
        folded_title = title.casefold()
        hashed, n_title = folded_word_hashes(folded_title + " " + text.casefold(), len(folded_title))
        n_all = len(hashed)
        n_body = n_all - n_title
        if n_all < s.short_words:
            shingles = char_shingles(title + " " + text, s.short_chars)
            # and the words themselves, exactly (the lede's slot is free: short items have
            # no lede): short items must share the words that tell them apart
            # (SHORT_WORDS_CONTAINED), not only most of their characters
            word_set = np.unique(((hashed ^ (hashed >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(U32))
            full = self._minhash(shingles, self._full)
            if not len(word_set) or len(word_set) > s.lede_num_perm:  # (no words: nothing to agree on)
                return Signature(KIND_CHARS, len(shingles), full)
            padded = np.full(s.lede_num_perm, WORD_PAD, dtype=U32)
            padded[: len(word_set)] = word_set
            return Signature(KIND_CHARS, len(shingles), full, len(word_set), padded)
        if s.shingles == "chars":  # the measured alternative (bench/dedup_quality.py --set)
            body = words(text)
            all_words = words(title) + body
            lede_words = body[: s.lede_words] or all_words[: s.lede_words]
            full = char_shingles(" ".join(all_words), s.short_chars)
            lede = char_shingles(" ".join(lede_words), s.short_chars)
        else:
            lede_len = min(s.lede_words, n_body or n_all)
            start = n_all - n_body if n_body else 0
            n = s.shingle_words
            sequence = shingle_sequence(hashed, n)
            lede_rows = lede_len - n + 1
            if (
                self._shared
                and lede_rows >= 1
                and start + lede_rows <= len(sequence) <= MINHASH_BLOCK
            ):
                return self._sign_with_lede(sequence, start, lede_rows)
            full = np.unique(sequence)
            lede = word_shingles(hashed[start : start + lede_len], n)
        return Signature(
            KIND_WORDS,
            len(full),
            self._minhash(full, self._full),
            len(lede),
            self._minhash(lede, self._lede),
        )

    def sign_many(self, pairs: Sequence[tuple[str, str]]) -> list[Signature]:
        """[self.sign(title, text) for title, text in pairs], with each numpy call made
        once per run of items instead of once per item (half the time for 300-word
        items). Items off sign()'s common path are signed by sign() itself."""
        out: list[Signature | None] = [None] * len(pairs)
        s = self.settings
        if s.shingles != "chars" and self._shared and s.shingle_words >= 1:
            buffer = np.empty(len(self._full[0]) * MINHASH_BLOCK, dtype=U32)  # reused
            run: list[int] = []
            chars = 0
            for i, (title, text) in enumerate(pairs):
                length = len(title) + 1 + len(text)
                if length > BATCH_CHARS:
                    continue
                if chars + length > BATCH_CHARS:
                    self._sign_run(pairs, run, out, buffer)
                    run, chars = [], 0
                run.append(i)
                chars += length + 1
            if run:
                self._sign_run(pairs, run, out, buffer)
        return [
            sig if sig is not None else self.sign(title, text)
            for sig, (title, text) in zip(out, pairs, strict=True)
        ]

    def _sign_run(
        self,
        pairs: Sequence[tuple[str, str]],
        run: list[int],
        out: list[Signature | None],
        buffer: np.ndarray,
    ) -> None:
        """Sets out[i] for the items pairs[i] of `run` that sign() would sign with
        _sign_with_lede, the same way: word hashes of all the texts joined, the word
        n-grams that lie inside one item, then one hash matrix per MINHASH_BLOCK rows
        with the minima taken per item by reduceat, and a small one of the ledes' rows."""
        s, n = self.settings, self.settings.shingle_words
        pieces = [piece for i in run for piece in pairs[i]]  # title, text, title, text ...
        codes = np.frombuffer(" ".join(pieces).encode("utf-32-le", "surrogatepass"), np.uint32)
        wide = np.flatnonzero(codes >= BMP)  # their items go to sign()
        codes = fold_table().take(np.minimum(codes, BMP - 1) if len(wide) else codes)
        if int(codes.max()) >= SEVERAL:
            pieces = [piece.casefold() for piece in pieces]
            codes = np.frombuffer(" ".join(pieces).encode("utf-32-le", "surrogatepass"), np.uint32)
            wide = np.flatnonzero(codes >= BMP)
            if len(wide):
                codes = np.minimum(codes, BMP - 1)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        piece_at = np.zeros(len(pieces), dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=piece_at[1:])
        hashed, word_at = batch_word_hashes(codes)

        # per item, what sign() computes: word counts, lede, shingle rows
        k = len(run)
        title_at = piece_at[0::2]
        bounds = np.searchsorted(word_at, np.concatenate([title_at, title_at + lengths[0::2]]))
        first = bounds[:k]
        n_all = np.append(first[1:], len(hashed)) - first
        n_title = bounds[k:] - first
        n_body = n_all - n_title
        lede_len = np.minimum(s.lede_words, np.where(n_body > 0, n_body, n_all))
        start = np.where(n_body > 0, n_title, 0)
        seq_len = np.where(n_all > 0, n_all - np.minimum(n, n_all) + 1, 0)
        lede_rows = lede_len - n + 1
        ok = (n_all >= s.short_words) & (n_all >= n) & (lede_rows >= 1)
        ok &= (start + lede_rows <= seq_len) & (seq_len <= MINHASH_BLOCK)
        if len(wide):
            ok[np.searchsorted(title_at, wide, "right") - 1] = False
        items = np.flatnonzero(ok)
        if len(items) == 0:
            return

        # shingle_sequence over all the words, keeping the n-grams inside one item
        m = len(hashed) - n + 1
        combined = np.zeros(m, dtype=np.uint64)
        for i in range(n):
            combined = combined * MIX[i % 3] + hashed[i : m + i]
        rows, lede_rows = seq_len[items], lede_rows[items]
        row_end = np.cumsum(rows)
        row_start = row_end - rows
        combined = combined.take(concat_runs(first[items], rows))
        sequence = ((combined ^ (combined >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(U32)
        lede_start = row_start + start[items]

        hv = fmix32(sequence)
        a, b = self._full
        e = len(items)
        full = np.empty((e, len(a)), dtype=U32)
        cut = np.append(row_start, row_end[-1])
        i = 0
        while i < e:  # items i..j-1: whole items, at most MINHASH_BLOCK rows
            j = int(np.searchsorted(cut, cut[i] + MINHASH_BLOCK, "right")) - 1
            r0, r1 = int(cut[i]), int(cut[j])
            phv = buffer[: len(a) * (r1 - r0)].reshape(len(a), r1 - r0)  # permutation x row
            with np.errstate(over="ignore"):
                np.multiply.outer(a, hv[r0:r1], out=phv)
                phv += b[:, None]
            full[i:j] = np.minimum.reduceat(phv, row_start[i:j] - r0, axis=1).T
            i = j
        # the ledes' rows gathered: a matrix of a fifth of the rows and half the permutations
        at = concat_runs(lede_start, lede_rows)
        lede_perm = s.lede_num_perm
        with np.errstate(over="ignore"):
            phl = np.multiply.outer(a[:lede_perm], hv.take(at))
            phl += b[:lede_perm, None]
        lede = np.minimum.reduceat(phl, np.cumsum(lede_rows) - lede_rows, axis=1).T.copy()
        # distinct shingles: full texts, then ledes
        sizes = [distinct_rows(sequence, row_start, rows), distinct_rows(sequence, lede_start, lede_rows)]
        size = np.concatenate(sizes).tolist()
        for x, item in enumerate(items.tolist()):
            out[run[item]] = Signature(KIND_WORDS, size[x], full[x], size[e + x], lede[x])
