"""What besides similar text makes two entries one story, and which of an entry's text is
its own. Pure functions of titles and texts; the dedup index (aggregator.dedup) applies
them to the rows it holds.

- **Titles within one feed.** Two entries of one feed whose titles are unrelated are
  different entries, however alike their texts: podcast episodes that carry the show's
  description, status reports or analyst notes from one template. Titles are related when
  one's words are all in the other ("UPDATED: ..." over a re-post) or they share the first
  RELATED_WORD_CHARS letters of a word that long (a follow-up under a new headline: "Teen
  shot and killed in Chelsea" / "15-year-old identified in fatal Chelsea shooting";
  "4 injured" / "injures 4"; "Teens" / "Teen"). Words are
  compared through 128-bit Bloom filters (3 bits a word): a related pair is never called
  unrelated; an unrelated one passes for related ~1% of the time. A template word that
  titles share ("Interview with ...") makes them related: then their numbers and their
  own text decide.
- **Numbers in titles, within one feed.** Titles that both carry numbers, neither set
  (with repeats) inside the other, are different entries: episode 837 / 838, "week of
  June 5" / "June 12", "Part 1 of 2" / "Part 2 of 2"; "CBS 58 - ..." / "CBS 58 - ... at
  37th St" are not. Across feeds, headlines are written apart ("3-year-old" / "toddler",
  a station's "News 5"), and the text decides.
- **Paragraphs everyone has.** A paragraph is common when the rows that carry it (inside
  the dedup window) belong to COMMON_CLUSTERS or more distinct clusters, or when one
  feed carries it in two different clusters, or the entry's own feed carries it under
  an unrelated title (a feed's template: a sign-in widget, a cookie notice, a show's
  description). An entry is compared on the rest of its text: its own text.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+")

# Distinct clusters whose members carry a paragraph before it stops being evidence: a
# wire story's paragraphs sit in one cluster however many outlets carry it.
COMMON_CLUSTERS = 3


RELATED_WORD_CHARS = 4


@dataclass(frozen=True)
class EntryFacts:
    """An entry's feed and title fingerprints (title_fingerprint); the index keeps feed,
    title and numbers per row. Feed -1 when unknown (then no rule that needs it applies)."""

    feed: int = -1
    title: tuple[int, int] = (0, 0)  # Bloom filter of the title's words, two 64-bit halves
    numbers: int = 0  # Bloom filter of the title's numbers (with repeats); 0: none
    stems: tuple[int, int] = (0, 0)  # Bloom filter of its longer words' first letters
    words: tuple[tuple[int, int], ...] = ()  # the bits of each of those stems


NO_FACTS = EntryFacts()


def _key(text: str) -> int:
    """A stable 32-bit key (paragraph keys are stored)."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


# Title filters live only in the memory of the process that built them (the index is
# rebuilt from titles at start-up), so Python's own string hash serves: it is cached on the
# string and ~20x cheaper than encoding and hashing each word.
_HALF = (1 << 64) - 1
_DIGIT = re.compile(r"\d")


def _halves(bits: int) -> tuple[int, int]:
    return bits & _HALF, bits >> 64


def title_fingerprint(title: str) -> tuple[tuple[int, int], int]:
    """(Bloom filter of the title's lower-cased words, Bloom filter of its numbers with
    repeats, 0 for none): titles that differ only in case and punctuation have equal ones."""
    facts = entry_facts(-1, title)
    return facts.title, facts.numbers


def entry_facts(feed: int, title: str) -> EntryFacts:
    """The facts the index keeps about an entry of `feed` titled `title`."""
    folded = title.casefold()
    bloom = stem_union = 0
    stems: dict[str, int] = {}
    for word in _WORD.findall(folded):  # 3 of 128 bits a word, and a stem
        h = hash(word)
        bloom |= 1 << (h & 127) | 1 << (h >> 7 & 127) | 1 << (h >> 14 & 127)
        if len(word) >= RELATED_WORD_CHARS and not word.isdigit():
            stem = word[:RELATED_WORD_CHARS]
            if stem not in stems:
                h = hash(stem)
                stems[stem] = bits = 1 << (h & 127) | 1 << (h >> 7 & 127) | 1 << (h >> 14 & 127)
                stem_union |= bits
    numbers = 0
    if _DIGIT.search(folded):
        seen: dict[int, int] = {}
        for n in _NUMBER.findall(folded):
            value = int(n[:18])
            seen[value] = seen.get(value, 0) + 1
            h = hash((value, seen[value]))
            numbers |= 1 << (h & 63) | 1 << (h >> 6 & 63) | 1 << (h >> 12 & 63)
    words = tuple(_halves(stems[s]) for s in sorted(stems))
    return EntryFacts(feed, _halves(bloom), numbers, _halves(stem_union), words)


def related_titles(
    a: np.ndarray, b: np.ndarray, words: tuple[tuple[int, int], ...] = (), b_stems: np.ndarray | None = None
) -> np.ndarray:
    """Row-wise, for (n, 2) uint64 Bloom filters (either may be one row, broadcast):
    whether title a's words are all in title b's or the other way round, or b's stems
    (EntryFacts.stems) hold one of `words` (the bits of a's stems, EntryFacts.words)."""
    related = ((a & ~b) == 0).all(axis=-1) | ((b & ~a) == 0).all(axis=-1)
    if b_stems is not None:
        for word in words:
            mask = np.array(word, dtype=np.uint64)
            related = related | ((b_stems & mask) == mask).all(axis=-1)
    return related


def numbers_conflict(a: np.ndarray | int, b: int) -> np.ndarray:
    """Whether two titles' numbers (title_fingerprint's filters) are both there and
    neither set is inside the other."""
    a = np.asarray(a, dtype=np.uint64)
    b_ = np.uint64(b)
    if not b:
        return np.zeros(a.shape, dtype=bool)
    return (a != 0) & ((a & ~b_) != 0) & ((b_ & ~a) != 0)


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a normalised text (html_to_text puts one per line)."""
    return [p for p in text.split("\n") if p] if text else []


def paragraph_keys(text: str) -> np.ndarray:
    """uint32 key of each paragraph (its exact text: a site's chrome is word for word the
    same in every entry), in text order."""
    parts = paragraphs(text)
    return np.fromiter((_key(p) for p in parts), dtype=np.uint32, count=len(parts))


def own_text(text: str, common: np.ndarray) -> str:
    """The text without the paragraphs marked common (a mask over paragraph_keys(text))."""
    return "\n".join(p for p, c in zip(paragraphs(text), common.tolist(), strict=True) if not c)
