"""Near-duplicate detection: shingles -> MinHash signatures -> LSH candidates -> verify.

Pure and in-memory: no database here (aggregator.clustering connects it to the store).

Choices, each measured with bench/dedup_quality.py and bench/dedup_speed.py:
- Shingles are word 3-grams of the lower-cased words of title + body. Character n-grams
  score reworded headlines and template pieces (market wraps, scores) as more alike,
  because most characters of a changed number or name survive; word 3-grams break on
  every changed fact, which is what separates "same story" from "same template".
- Items with fewer than `short_words` words (title-only feeds, one-line summaries) have
  too few word 3-grams for MinHash; they use character 5-grams instead, are compared only
  with other short items, and need a higher threshold.
- Truncated copies (a 40-word summary of a 600-word article) have a low Jaccard with the
  article; they are found through a second signature of the *lede* (the first
  `lede_words` words of the body, which copies keep) and accepted when the containment of
  the shorter text in the longer one is high.
- Signing is vectorised with numpy over datasketch's own "affine32" permutations (the
  same values `MinHash.update_batch` gives, checked in tests), so one call signs a
  document instead of one Python call per shingle.
- The LSH index keeps band keys in sorted numpy arrays (~8 bytes per band per item)
  instead of MinHashLSH's dict-of-sets (~8-10 KB per item), which is what lets 200k
  indexed items fit in well under a gigabyte.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import DedupSettings
from .evidence import COMMON_CLUSTERS, NO_FACTS, EntryFacts, may_be_one_entry, titles_contained

WORD = re.compile(r"\w+")
KIND_WORDS = 0
KIND_CHARS = 1
SEED = 1  # fixed: stored signatures must stay comparable across runs and versions

_U32 = np.uint32
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


@dataclass(frozen=True)
class Signature:
    """MinHash sketches of one item: full text, and for word items the lede."""

    kind: int  # KIND_WORDS or KIND_CHARS
    size: int  # distinct shingles in the full text
    full: np.ndarray  # uint32[num_perm]
    lede_size: int = 0
    lede: np.ndarray | None = None  # uint32[lede_num_perm]; None for short items

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


def _uint32s(blob: bytes) -> np.ndarray:
    values = np.frombuffer(blob, dtype="<u4")
    return values if values.dtype.isnative else values.astype(_U32)


def words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


# Words are hashed all at once: numpy lays them out as fixed-width UTF-32 rows (longer words
# are cut at TOKEN_CHARS, which only lets two very long words that share a prefix collide)
# and a polynomial over the code points gives one 64-bit value per word. One call per
# document instead of one Python call per word.
TOKEN_CHARS = 24
HASH_BLOCK = 8192  # words hashed per numpy call
_POSITION = np.random.RandomState(7).randint(1, 2**62, size=TOKEN_CHARS, dtype=np.uint64) | np.uint64(1)


def hash_words(tokens: list[str]) -> np.ndarray:
    """One uint64 hash per word, stable across processes and runs."""
    out = np.zeros(len(tokens), dtype=np.uint64)
    # in blocks: a 5 MB entry's 700k words would otherwise need ~130 MB of temporaries
    for start in range(0, len(tokens), HASH_BLOCK):
        block = tokens[start : start + HASH_BLOCK]
        codes = np.array(block, dtype=f"<U{TOKEN_CHARS}").view(np.uint32)
        codes = codes.reshape(len(block), TOKEN_CHARS).astype(np.uint64)
        with np.errstate(over="ignore"):
            codes *= _POSITION
            h = codes.sum(axis=1)
            out[start : start + len(block)] = h ^ (h >> np.uint64(29))
    return out


# The same hashes straight from the text, without building a list of words: the text's
# code points are classified as word characters with a table (the characters re's \w
# matches: alphanumerics and "_"), words are the runs of them, and the polynomial above is
# summed per run with np.add.reduceat. Equal to hash_words(words(text)) (tested over the
# whole Basic Multilingual Plane); texts with characters beyond it take that slower path.
_BMP = 0x10000


def _word_char_table() -> np.ndarray:
    table = np.fromiter((chr(c).isalnum() for c in range(_BMP)), dtype=bool, count=_BMP)
    table[ord("_")] = True
    return table


_WORD_CHAR: np.ndarray | None = None
# Longer texts (a 5 MB entry) take the block-wise path, whose memory stays bounded.
DIRECT_MAX_CHARS = 200_000
_CUT = TOKEN_CHARS  # characters at offset >= TOKEN_CHARS weigh 0
_WEIGHT = np.append(_POSITION, np.uint64(0))


def word_hashes(text: str) -> np.ndarray:
    """hash_words(words(text)), computed per document in a few numpy calls."""
    return _folded_word_hashes(text.casefold(), 0)[0]


def _folded_word_hashes(folded: str, split: int) -> tuple[np.ndarray, int]:
    """Hashes of the words of casefolded text, and how many of them start before
    character `split` (how a title + body string is cut back into title and body)."""
    global _WORD_CHAR
    if _WORD_CHAR is None:
        _WORD_CHAR = _word_char_table()
    if len(folded) > DIRECT_MAX_CHARS:  # ~60 bytes of temporaries per character here
        return hash_words(WORD.findall(folded)), len(WORD.findall(folded[:split]))
    codes = np.frombuffer(folded.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    if len(codes) == 0:
        return np.zeros(0, dtype=np.uint64), 0
    if int(codes.max()) >= _BMP:
        return hash_words(WORD.findall(folded)), len(WORD.findall(folded[:split]))
    at = np.flatnonzero(_WORD_CHAR[codes])  # positions of word characters
    if len(at) == 0:
        return np.zeros(0, dtype=np.uint64), 0
    index = np.arange(len(at))
    # where each word starts (a gap before it), then each character's offset in its word
    word_start = np.zeros(len(at), dtype=np.int64)
    word_start[1:] = np.where(at[1:] != at[:-1] + 1, index[1:], 0)
    offset = index - np.maximum.accumulate(word_start)
    np.minimum(offset, _CUT, out=offset)
    starts = np.flatnonzero(offset == 0)
    with np.errstate(over="ignore"):
        h = np.add.reduceat(codes[at].astype(np.uint64) * _WEIGHT[offset], starts)
    before = int(np.searchsorted(at[starts], split)) if split else 0
    return h ^ (h >> np.uint64(29)), before


def distinct(values: np.ndarray) -> int:
    """Number of distinct values (np.unique without building the array it returns)."""
    if len(values) == 0:
        return 0
    ordered = np.sort(values)
    return 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))


def shingle_sequence(hashes: np.ndarray, n: int) -> np.ndarray:
    """32-bit hashes of the word n-grams in text order, repeats kept (the whole text is one
    shingle when shorter than n); `hashes` are hash_words() values."""
    if len(hashes) == 0:
        return np.zeros(0, dtype=_U32)
    n = min(n, len(hashes))
    combined = np.zeros(len(hashes) - n + 1, dtype=np.uint64)
    for i in range(n):
        combined = combined * _MIX[i % 3] + hashes[i : len(hashes) - n + 1 + i]
    return ((combined ^ (combined >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(_U32)


def word_shingles(tokens: list[str] | np.ndarray, n: int) -> np.ndarray:
    """Distinct 32-bit hashes of the word n-grams (the whole text if shorter than n);
    `tokens` are words or their hash_words() values."""
    h = tokens if isinstance(tokens, np.ndarray) else hash_words(tokens)
    return np.unique(shingle_sequence(h, n))


def char_shingles(text: str, n: int) -> np.ndarray:
    """Distinct 32-bit hashes of the character n-grams of the normalised words."""
    s = " ".join(words(text))
    if not s:
        return np.zeros(0, dtype=_U32)
    grams = [s] if len(s) <= n else [s[i:i + n] for i in range(len(s) - n + 1)]
    return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=_U32, count=len(grams)))


MINHASH_BLOCK = 4096  # shingles hashed at once: bounds memory at 4096 x 128 x 4 bytes

# Signer.sign_many signs a batch of items with numpy calls over all of them: sign() pays
# ~1 us of fixed cost per numpy call, ~40 calls per item, more than its arithmetic. The
# batch is cut into runs of at most BATCH_CHARS characters (~16 items of 300 words): the
# temporaries (~40 bytes a character) and the 2 MB hash matrix then stay under malloc's
# trim threshold (4 MB once a 2 MB block was freed); with 64k characters each run gave
# its memory back and faulted it in again, +30 us an item. A longer item is signed alone.
BATCH_CHARS = 32_768


def _word_chars() -> np.ndarray:
    """The word-character table of _folded_word_hashes, built on first use."""
    global _WORD_CHAR
    if _WORD_CHAR is None:
        _WORD_CHAR = _word_char_table()
    return _WORD_CHAR


# str.casefold maps each character on its own, so a table does it in one numpy call
# (Python's casefold costs ~5 ns a character, a tenth of batch signing); characters that
# fold to several (ß -> ss, ligatures) map to _SEVERAL, and their text takes casefold.
_FOLD: np.ndarray | None = None
_SEVERAL = _BMP


def _fold_table() -> np.ndarray:
    """uint32[BMP]: the BMP character each one casefolds to, else _SEVERAL."""
    global _FOLD
    if _FOLD is None:
        folded = (chr(c).casefold() for c in range(_BMP))
        codes = (ord(f) if len(f) == 1 and ord(f) < _BMP else _SEVERAL for f in folded)
        _FOLD = np.fromiter(codes, dtype=np.uint32, count=_BMP)
    return _FOLD


def _runs(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """starts[0] .. starts[0] + counts[0] - 1, then starts[1] .., in one array (counts >= 1):
    a cumulative sum of steps of 1 and a jump at each run (np.repeat is ~10x slower)."""
    ends = np.cumsum(counts)
    step = np.ones(int(ends[-1]), dtype=np.int64)
    step[0] = starts[0]
    step[ends[:-1]] = starts[1:] - starts[:-1] - counts[:-1] + 1
    return np.cumsum(step, out=step)


def _batch_word_hashes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """_folded_word_hashes' hash of every word in `codes` (BMP code points of several
    texts), and the position where each word starts. Each word's polynomial is a
    difference of prefix sums, which wrap-around keeps exact."""
    at = np.flatnonzero(_word_chars().take(codes))
    if len(at) == 0:
        return np.zeros(0, dtype=np.uint64), at
    gap = np.empty(len(at), dtype=bool)
    gap[0] = True
    np.not_equal(np.diff(at), 1, out=gap[1:])
    starts = np.flatnonzero(gap)
    offset = _runs(np.zeros(len(starts), dtype=np.int64), np.diff(starts, append=len(at)))
    np.minimum(offset, _CUT, out=offset)
    with np.errstate(over="ignore"):
        v = codes.take(at).astype(np.uint64)
        v *= _WEIGHT.take(offset)
        np.cumsum(v, out=v)
        h = np.diff(v.take(np.append(starts[1:] - 1, len(v) - 1)), prepend=np.uint64(0))
    return h ^ (h >> np.uint64(29)), at.take(starts)


def _distinct_rows(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """distinct(values[s : s + c]) for each (s, c) with c >= 1: one sort of a matrix whose
    rows are the runs, padded with their last value (which adds no new value)."""
    at = np.minimum(np.arange(int(counts.max())), counts[:, None] - 1)
    at += starts[:, None]
    table = values.take(at)
    table.sort(axis=1)
    return 1 + np.count_nonzero(table[:, 1:] != table[:, :-1], axis=1)


class Signer:
    """Signs items with datasketch's affine32 MinHash permutations, vectorised."""

    def __init__(self, settings: DedupSettings):
        # datasketch pulls in scipy (~0.6 s): imported only where signing happens, so
        # read-only CLI commands start fast
        from datasketch import MinHash
        from datasketch.minhash import _fmix

        self._fmix = _fmix
        self.settings = settings
        # The lede uses the first lede_num_perm of the full text's permutations: its
        # shingles are a run of the full text's, so one hash matrix serves both.
        self._full = MinHash(num_perm=settings.num_perm, seed=SEED, scheme="affine32").permutations
        self._shared = settings.lede_num_perm <= settings.num_perm
        self._lede = (
            self._full[:, : settings.lede_num_perm]
            if self._shared
            else MinHash(num_perm=settings.lede_num_perm, seed=SEED, scheme="affine32").permutations
        )

    def _minhash(self, shingles: np.ndarray, permutations: np.ndarray) -> np.ndarray:
        a, b = permutations
        if len(shingles) == 0:
            return np.full(len(a), np.iinfo(_U32).max, dtype=_U32)
        hv = self._fmix(shingles.astype(_U32), 32)
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
        hv = self._fmix(sequence, 32)
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
        hashed, n_title = _folded_word_hashes(folded_title + " " + text.casefold(), len(folded_title))
        n_all = len(hashed)
        n_body = n_all - n_title
        if n_all < s.short_words:
            shingles = char_shingles(title + " " + text, s.short_chars)
            # and the words themselves, exactly (the lede's slot is free: short items have
            # no lede): short items must share the words that tell them apart
            # (SHORT_WORDS_CONTAINED), not only most of their characters
            word_set = np.unique(((hashed ^ (hashed >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(_U32))
            full = self._minhash(shingles, self._full)
            if not len(word_set) or len(word_set) > s.lede_num_perm:  # (no words: nothing to agree on)
                return Signature(KIND_CHARS, len(shingles), full)
            padded = np.full(s.lede_num_perm, _WORD_PAD, dtype=_U32)
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
            buffer = np.empty(len(self._full[0]) * MINHASH_BLOCK, dtype=_U32)  # reused
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
        with the minima taken per item (and per lede) by reduceat."""
        s, n = self.settings, self.settings.shingle_words
        pieces = [piece for i in run for piece in pairs[i]]  # title, text, title, text ...
        codes = np.frombuffer(" ".join(pieces).encode("utf-32-le", "surrogatepass"), np.uint32)
        wide = np.flatnonzero(codes >= _BMP)  # their items go to sign()
        codes = _fold_table().take(np.minimum(codes, _BMP - 1) if len(wide) else codes)
        if int(codes.max()) >= _SEVERAL:
            pieces = [piece.casefold() for piece in pieces]
            codes = np.frombuffer(" ".join(pieces).encode("utf-32-le", "surrogatepass"), np.uint32)
            wide = np.flatnonzero(codes >= _BMP)
            if len(wide):
                codes = np.minimum(codes, _BMP - 1)
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
        piece_at = np.zeros(len(pieces), dtype=np.int64)
        np.cumsum(lengths[:-1] + 1, out=piece_at[1:])
        hashed, word_at = _batch_word_hashes(codes)

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
            combined = combined * _MIX[i % 3] + hashed[i : m + i]
        rows, lede_rows = seq_len[items], lede_rows[items]
        row_end = np.cumsum(rows)
        row_start = row_end - rows
        combined = combined.take(_runs(first[items], rows))
        sequence = ((combined ^ (combined >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(_U32)
        lede_start = row_start + start[items]
        lede_end = lede_start + lede_rows

        hv = self._fmix(sequence, 32)
        a, b = self._full
        e = len(items)
        full = np.empty((e, len(a)), dtype=_U32)
        lede = np.empty((e, s.lede_num_perm), dtype=_U32)
        sizes = np.empty(2 * e, dtype=np.int64)  # distinct shingles: full texts, then ledes
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
            # reduceat over (start, end) pairs: the even columns are the ledes (an end
            # index equal to the row count is left out, the last run goes to the end)
            ends = np.stack([lede_start[i:j], lede_end[i:j]], axis=1).ravel() - r0
            if ends[-1] == r1 - r0:
                ends = ends[:-1]
            lede[i:j] = np.minimum.reduceat(phv[: s.lede_num_perm], ends, axis=1)[:, ::2].T
            sizes[i:j] = _distinct_rows(sequence, row_start[i:j], rows[i:j])
            sizes[e + i : e + j] = _distinct_rows(sequence, lede_start[i:j], lede_rows[i:j])
            i = j
        size = sizes.tolist()
        for x, item in enumerate(items.tolist()):
            out[run[item]] = Signature(KIND_WORDS, size[x], full[x], size[e + x], lede[x])


# ---------------------------------------------------------------- verification


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of two MinHash signatures."""
    return float(np.count_nonzero(a == b)) / len(a)


def containment(j: float, size_a: int, size_b: int) -> float:
    """Estimated share of the smaller set inside the larger, from Jaccard and set sizes:
    |A∩B| = J(|A|+|B|)/(1+J)."""
    smaller = min(size_a, size_b)
    if smaller == 0:
        return 0.0
    return min(1.0, j * (size_a + size_b) / ((1 + j) * smaller))


def similarity(a: Signature, b: Signature, settings: DedupSettings) -> float | None:
    """How alike two items are if they count as copies of one story, else None.

    Word items: full-text Jaccard >= threshold; or, for truncated copies, ledes alike
    (Jaccard >= lede_threshold) and the shorter text mostly contained in the longer
    (containment >= containment). Short items: Jaccard >= short_threshold, and only
    with each other. See `match_rank` for how the two kinds of evidence compare.
    """
    if a.kind != b.kind:
        return None
    lede = b.lede if b.lede is not None else np.zeros_like(a.full[:1])
    sims = similarities(
        a, np.array([b.size]), np.array([b.lede_size]), b.full[None], lede[None], settings
    )
    return None if np.isnan(sims[0]) else float(sims[0])


def similarities(
    sig: Signature,
    sizes: np.ndarray,
    lede_sizes: np.ndarray,
    full: np.ndarray,
    lede: np.ndarray,
    settings: DedupSettings,
) -> np.ndarray:
    """`similarity` of `sig` against many signatures of the same kind at once (rows of
    `full`/`lede`); NaN where they are not copies."""
    j = np.count_nonzero(full == sig.full, axis=1) / full.shape[1]
    out = np.full(len(j), np.nan)
    if sig.kind == KIND_CHARS:
        keep = j >= settings.short_threshold
        if sig.lede is not None and keep.any():  # rows signed before the word sets have none
            shared = np.isin(lede[keep], sig.lede[: sig.lede_size]).sum(axis=1)
            words_in = shared / np.maximum(np.minimum(lede_sizes[keep], sig.lede_size), 1)
            keep[keep] = (lede_sizes[keep] == 0) | (words_in >= SHORT_WORDS_CONTAINED)
        out[keep] = j[keep]
        return out
    strong = j >= settings.threshold
    out[strong] = j[strong]
    weak = ~strong
    if sig.lede is None or not weak.any():
        return out
    jl = np.count_nonzero(lede[weak] == sig.lede, axis=1) / lede.shape[1]
    if not (jl >= settings.lede_threshold).any():  # the usual false candidate stops here
        return out
    size, lsize = sizes[weak], lede_sizes[weak]
    smaller = np.maximum(np.minimum(size, sig.size), 1)
    full_c = np.minimum(1.0, j[weak] * (size + sig.size) / ((1 + j[weak]) * smaller))
    lede_smaller = np.maximum(np.minimum(lsize, sig.lede_size), 1)
    lede_c = np.minimum(1.0, jl * (lsize + sig.lede_size) / ((1 + jl) * lede_smaller))
    # the lede stands for the whole text only when the shorter text is about a lede long
    lede_counts = np.minimum(size, sig.size) <= 1.2 * np.maximum(lsize, sig.lede_size)
    c = np.maximum(full_c, np.where(lede_counts, lede_c, 0.0))
    ok = (jl >= settings.lede_threshold) & (c >= settings.containment)
    weak_out = np.full(len(c), np.nan)
    weak_out[ok] = -c[ok]
    out[weak] = weak_out
    return out


# Short items (a title, a line) are one story only when (nearly) all words of the shorter
# are in the other: "Surgical Management of Adult Sleep Apnea" and "Assessment of Adult
# Sleep Apnea" share most of their characters (char 5-gram Jaccard >= 0.6) but not the
# word that matters (4 of 5 words: 0.8). 0.9 lets one word in ten differ ("three-day" /
# "3-Day"). Exact: a short item's distinct word hashes are kept in its lede slot, padded
# with _WORD_PAD (an item with more distinct words than lede_num_perm keeps none).
SHORT_WORDS_CONTAINED = 0.9
_WORD_PAD = np.uint32(0xFFFFFFFF)


def match_rank(sim: float) -> tuple[bool, float]:
    """Sort key of a verified match. `similarity` returns containment matches as negative
    numbers: a copy matched on its whole text (Jaccard) outranks one matched only by
    containment, because a short summary is contained in every longer version of the
    story, including ones that belong to another cluster."""
    return (sim >= 0, abs(sim))


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
_NO_PARAGRAPHS = np.zeros(0, dtype=np.uint32)
# A body this short that one feed carries word for word under two headlines is its chrome
# (a sign-in widget: ~350 characters); a longer one is an article it republished.
CHROME_CHARS = 800
PARAGRAPH_SEEN_BITS = 25  # 4 MB of bits: ~3% false "maybe" at a million distinct paragraphs
_SEEN_MASK = (1 << PARAGRAPH_SEEN_BITS) - 1


def _ranges(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Indices starts[0]..ends[0]-1, starts[1]..ends[1]-1, ... in one array."""
    lengths = ends - starts
    if not lengths.sum():
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
MAX_CANDIDATES = 256  # candidates verified per item (the newest)
NO_KEY = (0, 0)
# Every content update of an item leaves its old row dead (~3.3 KB of signatures, keys and
# bucket entries): a feed that changes its entries at every poll grew the daemon by
# ~13 MB/min until the daily rebuild. The dead rows are reclaimed once they pass this share
# of the rows, so the index holds at most 1 / (1 - share) times its live rows, and each
# compaction (a pass over the index) is paid for by the updates that made it due.
COMPACT_DEAD_SHARE = 0.25
COMPACT_MIN_DEAD = 1024  # a small index is not compacted every few updates
COMPACT_BLOCK = 8192  # rows moved at once: a copy of the whole signature matrix was ~100 MB at 200k


def exact_key(value: str | None) -> int:
    """A 64-bit key for an exact-match value (canonical URL, content hash); 0 for none."""
    if not value:
        return 0
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little") or 1


def _exact_bucket_key(key: int, column: int) -> int:
    """The 32-bit bucket key under which an exact key is filed (salted per column)."""
    mixed = (key * int(_MIX[column]) + _EXACT_SALT[column]) % 2**64
    return (mixed ^ (mixed >> 32)) & 0xFFFFFFFF


_EXACT_SALT = (0x5851F42D4C957F2D, 0x14057B7EF767814F)


class _Banding:
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
        keys = keys ^ (np.asarray(kind, dtype=np.uint64).reshape(-1, 1) * _MIX[2])
        # 32-bit keys halve the memory; a chance collision only adds a candidate to verify
        return ((keys ^ (keys >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


class _Buckets:
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

    def query(self, keys: np.ndarray) -> set[int]:
        """Rows sharing at least one band key with `keys`; from a crowded
        bucket only its newest BUCKET_CAP rows, so templated feeds (thousands of
        near-identical short entries) cannot make every query scan thousands of rows.
        (The tail holds the newest rows; a bucket's rows are taken from it first, then
        from the sorted arrays, so where the last merge fell does not change the answer.)"""
        found: set[int] = set()
        from_tail: dict[int, int] = {}  # bucket -> rows the tail gave
        crowded: list[int] = []  # buckets whose sorted rows the scan might take too many of
        tail = self._tail
        if tail:
            for k in tail.keys() & set(keys.tolist()):
                rows = tail[k]
                if isinstance(rows, list):
                    found.update(rows[-BUCKET_CAP:])
                    from_tail[k] = min(len(rows), BUCKET_CAP)
                    if len(rows) > BUCKET_CAP - self.SCAN:
                        crowded.append(k)
                else:
                    found.add(rows)
                    from_tail[k] = 1
        if len(self.keys):
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
        return np.sort(np.concatenate([self.rows[_ranges(lo, hi)], np.array(tail, dtype=np.int64)]))

    @property
    def nbytes(self) -> int:
        bulk = sum(i.nbytes + r.nbytes for i, r in self._bulk)
        return self.ids.nbytes + self.rows.nbytes + bulk + 110 * self._tail_rows


# the per-row arrays of DedupIndex (the titles and paragraph keys are kept apart)
_ROW_ARRAYS = ("item_ids", "cluster_ids", "seen", "kinds", "alive", "sizes", "lede_sizes", "full", "lede", "exact",
               "feed_ids")  # fmt: skip


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

    Each row also keeps its entry's feed and title fingerprints (aggregator.evidence) and
    the keys of its paragraphs, filed in buckets of their own, from which the index tells
    which paragraphs of a new entry are common (common_paragraphs)."""

    def __init__(self, settings: DedupSettings, capacity: int = 1024):
        self.settings = settings
        self.full_bands = _Banding(settings.num_perm, settings.threshold, salt=11)
        self.lede_bands = _Banding(settings.lede_num_perm, settings.lede_threshold, salt=13,
                                   recall=LEDE_CANDIDATE_RECALL)  # fmt: skip
        self.buckets = _Buckets()
        self.paragraph_buckets = _Buckets()
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
        self.full = np.zeros((capacity, s.num_perm), dtype=_U32)
        self.lede = np.zeros((capacity, s.lede_num_perm), dtype=_U32)
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
            (np.array([_exact_bucket_key(k, column) for k in self.exact[with_key, column].tolist()],
                      dtype=np.uint32).reshape(-1, 1), with_key)
            for column in (0, 1)
            if len(with_key := rows[self.exact[rows, column] != 0])
        ]  # fmt: skip
        starts, ends = self.paragraph_at[rows], self.paragraph_at[rows + 1]
        if bulk:
            # each row's distinct keys, as add_one files them (one sort over all (row, key) pairs)
            pairs = np.unique(np.repeat(rows.astype(np.int64), ends - starts) << 32
                              | self.paragraph_keys[_ranges(starts, ends)].astype(np.int64))  # fmt: skip
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
    ) -> int:
        """Index one item (online): its row becomes a candidate for the next query.
        `exact`: its exact keys (URL, content hash; 0 for none); `facts` and `paragraphs`
        (evidence.EntryFacts, evidence.paragraph_keys) for the rules of find() and
        common_paragraphs()."""
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
        self.buckets.add_one(self._query_keys(sig, exact), row)
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
        paragraphs = self.paragraph_keys[_ranges(starts, ends)]
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
            keys[:b] ^= np.uint64(sig.kind) * _MIX[2]
        keys = ((keys ^ (keys >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        full, lede = keys[:b], (keys[b:] if banded else None)
        self._key_memo = (sig, full, lede, keys if banded else full)
        return self._key_memo[1:]

    def _query_keys(self, sig: Signature, exact: tuple[int, int]) -> np.ndarray:
        """The bucket keys of an item: its band keys, then its exact keys."""
        both = self._keys(sig)[2]
        if exact == NO_KEY:
            return both
        if self._exact_memo is not None and self._exact_memo[0] is sig and self._exact_memo[1] == exact:
            return self._exact_memo[2]
        extra = [_exact_bucket_key(k, column) for column, k in enumerate(exact) if k]
        keys = np.concatenate([both, np.array(extra, dtype=np.uint32)])
        self._exact_memo = (sig, exact, keys)
        return keys

    def candidates(self, sig: Signature, seen: int) -> list[int]:
        """Live rows that share a band with `sig` and were first seen no more than the
        dedup window before it (so a later recluster sees exactly what we saw online)."""
        return self._live_rows(self.buckets.query(self._keys(sig)[2]), seen)[-MAX_CANDIDATES:].tolist()

    def _live_rows(self, found: set[int], seen: int) -> np.ndarray:
        rows = np.fromiter(found, dtype=np.int64, count=len(found))
        keep = self.alive[rows] & (self.seen[rows] >= seen - self.settings.window)
        return np.sort(rows[keep])

    def find(
        self, sig: Signature, seen: int, exact: tuple[int, int] = NO_KEY, facts: EntryFacts = NO_FACTS
    ) -> tuple[int | None, list[tuple[int, float]]]:
        """(row of the earliest item with the same exact key, []) when there is one (the
        exact shortcut), else (None, the verified copies as `matches` gives them, less
        those `facts` rule out: see aggregator.evidence).

        A link is an exact key only while it names one entry: when two entries of one
        feed share it (the blog's feed URL on every link post, a section page, a
        redirector), it says nothing about any entry that carries it."""
        rows = self._live_rows(self.buckets.query(self._query_keys(sig, exact)), seen)
        if exact != NO_KEY and len(rows):
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
        if not any(seen_bits[(k & _SEEN_MASK) >> 3] >> (k & 7) & 1 for k in keys.tolist()):
            return common  # the usual case: no paragraph of it was ever filed
        if not self.paragraph_buckets.holds_any(keys):
            return common
        wanted = np.unique(keys)
        rows = self._live_rows(self.paragraph_buckets.query(wanted), seen)
        rows = rows[self.item_ids[rows] != item_id]
        if not len(rows):
            return common
        starts, ends = self.paragraph_at[rows], self.paragraph_at[rows + 1]
        carried = self.paragraph_keys[_ranges(starts, ends)]
        carrier = np.repeat(rows, ends - starts)
        hit = np.isin(carried, wanted)
        carried, carrier = carried[hit], carrier[hit]
        verdict: list[int] = []
        for key in np.unique(carried).tolist():
            by = carrier[carried == key]
            if (len(np.unique(self.cluster_ids[by])) >= COMMON_CLUSTERS
                    or self._feed_template(by, facts, wanted if body_chars <= CHROME_CHARS else None)):  # fmt: skip
                verdict.append(key)
        if verdict:
            common = np.isin(keys, np.array(verdict, dtype=np.uint32))
        return common

    def _feed_template(self, rows: np.ndarray, facts: EntryFacts, body: np.ndarray | None) -> bool:
        """Whether these rows' paragraph is a feed's template: one feed carries it in two
        clusters, or the entry's own feed under a title unrelated to the entry's, or, for a
        short body (`body`: its distinct keys, None for a longer one), under another title
        (not one inside the other) in an entry whose whole body is the same: chrome and
        nothing else. Local outlets' titles share place names ("Northfield"), which makes
        them related; a long body republished word for word under a new headline is the
        same article ("Teen shot and killed in Bluffton")."""
        feeds = self.feed_ids[rows]
        known = feeds >= 0
        feeds, rows = feeds[known], rows[known]
        if facts.feed >= 0:
            mine = rows[feeds == facts.feed]
            if len(mine) and not self._related(mine, facts).all():
                return True
            for r in mine.tolist() if body is not None else ():
                same_body = np.array_equal(np.unique(self.paragraph_keys[self.paragraph_at[r] : self.paragraph_at[r + 1]]), body)
                if same_body and not titles_contained(self.titles[r], facts.title):
                    return True
        pairs = np.unique(feeds.astype(np.int64) << 32 | self.cluster_ids[rows])
        return len(np.unique(pairs >> 32)) < len(pairs)

    def _related(self, rows: np.ndarray, facts: EntryFacts) -> np.ndarray:
        """Whether each row's title may name the same entry as the entry's
        (evidence.may_be_one_entry): for rows of the entry's own feed."""
        return np.array([may_be_one_entry(self.titles[r], facts.title) for r in rows.tolist()], dtype=bool)

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


def choose_cluster(matches: list[tuple[int, float]], clusters: dict[int, int]) -> tuple[int, float] | None:
    """The cluster an item joins: the one holding its most similar verified copy (ties go
    to the older cluster). Returns (cluster id, similarity) or None for a new story.

    Clusters never merge: an item that resembles two clusters joins one, so a single
    bridging item cannot chain two different stories together."""
    best: tuple[int, float] | None = None
    for row, sim in matches:
        cluster = clusters[row]
        if (
            best is None
            or match_rank(sim) > match_rank(best[1])
            or (match_rank(sim) == match_rank(best[1]) and cluster < best[0])
        ):
            best = (cluster, sim)
    return None if best is None else (best[0], abs(best[1]))
