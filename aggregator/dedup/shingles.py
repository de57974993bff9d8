"""Shingles: the words and character n-grams of a text, hashed to 32-bit values
(vectorised with numpy, so one call handles a document or a batch)."""

from __future__ import annotations

import re
import zlib

import numpy as np

WORD = re.compile(r"\w+")

U32 = np.uint32
MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


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
BMP = 0x10000


def _word_char_table() -> np.ndarray:
    table = np.fromiter((chr(c).isalnum() for c in range(BMP)), dtype=bool, count=BMP)
    table[ord("_")] = True
    return table


_WORD_CHAR: np.ndarray | None = None
# Longer texts (a 5 MB entry) take the block-wise path, whose memory stays bounded.
DIRECT_MAX_CHARS = 200_000
_CUT = TOKEN_CHARS  # characters at offset >= TOKEN_CHARS weigh 0
_WEIGHT = np.append(_POSITION, np.uint64(0))


def word_hashes(text: str) -> np.ndarray:
    """hash_words(words(text)), computed per document in a few numpy calls."""
    return folded_word_hashes(text.casefold(), 0)[0]


def folded_word_hashes(folded: str, split: int) -> tuple[np.ndarray, int]:
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
    if int(codes.max()) >= BMP:
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
        return np.zeros(0, dtype=U32)
    n = min(n, len(hashes))
    combined = np.zeros(len(hashes) - n + 1, dtype=np.uint64)
    for i in range(n):
        combined = combined * MIX[i % 3] + hashes[i : len(hashes) - n + 1 + i]
    return ((combined ^ (combined >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(U32)


def word_shingles(tokens: list[str] | np.ndarray, n: int) -> np.ndarray:
    """Distinct 32-bit hashes of the word n-grams (the whole text if shorter than n);
    `tokens` are words or their hash_words() values."""
    h = tokens if isinstance(tokens, np.ndarray) else hash_words(tokens)
    return np.unique(shingle_sequence(h, n))


def char_shingles(text: str, n: int) -> np.ndarray:
    """Distinct 32-bit hashes of the character n-grams of the normalised words."""
    s = " ".join(words(text))
    if not s:
        return np.zeros(0, dtype=U32)
    grams = [s] if len(s) <= n else [s[i:i + n] for i in range(len(s) - n + 1)]
    return np.unique(np.fromiter((zlib.crc32(g.encode()) for g in grams), dtype=U32, count=len(grams)))



def _word_chars() -> np.ndarray:
    """The word-character table of folded_word_hashes, built on first use."""
    global _WORD_CHAR
    if _WORD_CHAR is None:
        _WORD_CHAR = _word_char_table()
    return _WORD_CHAR


# str.casefold maps each character on its own, so a table does it in one numpy call
# (Python's casefold costs ~5 ns a character, a tenth of batch signing); characters that
# fold to several (ß -> ss, ligatures) map to SEVERAL, and their text takes casefold.
_FOLD: np.ndarray | None = None
SEVERAL = BMP


def fold_table() -> np.ndarray:
    """uint32[BMP]: the BMP character each one casefolds to, else SEVERAL."""
    global _FOLD
    if _FOLD is None:
        folded = (chr(c).casefold() for c in range(BMP))
        codes = (ord(f) if len(f) == 1 and ord(f) < BMP else SEVERAL for f in folded)
        _FOLD = np.fromiter(codes, dtype=np.uint32, count=BMP)
    return _FOLD


def concat_runs(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """starts[0] .. starts[0] + counts[0] - 1, then starts[1] .., in one array (counts >= 1):
    a cumulative sum of steps of 1 and a jump at each run (np.repeat is ~10x slower)."""
    ends = np.cumsum(counts)
    step = np.ones(int(ends[-1]), dtype=np.int64)
    step[0] = starts[0]
    step[ends[:-1]] = starts[1:] - starts[:-1] - counts[:-1] + 1
    return np.cumsum(step, out=step)


def batch_word_hashes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """folded_word_hashes' hash of every word in `codes` (BMP code points of several
    texts), and the position where each word starts. Each word's polynomial is a
    difference of prefix sums, which wrap-around keeps exact."""
    at = np.flatnonzero(_word_chars().take(codes))
    if len(at) == 0:
        return np.zeros(0, dtype=np.uint64), at
    gap = np.empty(len(at), dtype=bool)
    gap[0] = True
    np.not_equal(np.diff(at), 1, out=gap[1:])
    starts = np.flatnonzero(gap)
    offset = concat_runs(np.zeros(len(starts), dtype=np.int64), np.diff(starts, append=len(at)))
    np.minimum(offset, _CUT, out=offset)
    with np.errstate(over="ignore"):
        v = codes.take(at).astype(np.uint64)
        v *= _WEIGHT.take(offset)
        np.cumsum(v, out=v)
        h = np.diff(v.take(np.append(starts[1:] - 1, len(v) - 1)), prepend=np.uint64(0))
    return h ^ (h >> np.uint64(29)), at.take(starts)


def distinct_rows(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """distinct(values[s : s + c]) for each (s, c) with c >= 1: one sort of a matrix whose
    rows are the runs, padded with their last value (which adds no new value)."""
    at = np.minimum(np.arange(int(counts.max())), counts[:, None] - 1)
    at += starts[:, None]
    table = values.take(at)
    table.sort(axis=1)
    return 1 + np.count_nonzero(table[:, 1:] != table[:, :-1], axis=1)
