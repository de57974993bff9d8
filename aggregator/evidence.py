"""What besides similar text makes two entries one story, and which of an entry's text is
its own. Pure functions of titles and texts; the dedup index (aggregator.dedup) applies
them to the rows it holds.

- **Titles within one feed.** Two entries of one feed whose titles are unrelated (neither
  title's words all in the other) are different entries, however alike their texts:
  podcast episodes that carry the show's description, incident reports or analyst notes
  from one template. A feed that republishes its own post under a new guid keeps its
  title, or adds to it ("UPDATED: ..."). The words are compared as 128-bit Bloom filters
  (3 bits a word): no related pair is ever called unrelated; an unrelated pair that differs
  in one word of a ten-word title passes for related ~1% of the time.
- **Numbers in titles.** Titles that both carry numbers and not the same ones (episode
  837 / 838, June 23 / June 24, "3 dead" / "4 dead") are different items, in any feeds.
- **Paragraphs everyone has.** A paragraph is common when the rows that carry it (inside
  the dedup window) belong to COMMON_CLUSTERS or more distinct clusters, or when one
  feed carries it under two unrelated titles (its template: a sign-in widget, a cookie
  notice). An entry is compared on the rest of its text: its own text.
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


@dataclass(frozen=True)
class EntryFacts:
    """An entry's feed and title fingerprints (title_fingerprint), as the index keeps them
    per row; feed -1 when unknown (then no rule that needs it applies)."""

    feed: int = -1
    title: tuple[int, int] = (0, 0)  # Bloom filter of the title's words, two 64-bit halves
    numbers: int = 0  # 0: no numbers in the title


NO_FACTS = EntryFacts()


def _key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def title_fingerprint(title: str) -> tuple[tuple[int, int], int]:
    """(Bloom filter of the title's lower-cased words, key of the set of numbers it
    carries or 0): titles that differ only in case and punctuation have equal ones."""
    folded = title.casefold()
    bloom = 0
    for word in set(_WORD.findall(folded)):
        h = _key(word)
        bloom |= 1 << (h & 127) | 1 << (h >> 7 & 127) | 1 << (h >> 14 & 127)
    numbers = sorted({int(n) for n in _NUMBER.findall(folded) if len(n) <= 18})
    numbers_key = (_key(" ".join(map(str, numbers))) or 1) if numbers else 0
    return (bloom & _HALF, bloom >> 64), numbers_key


_HALF = (1 << 64) - 1


def entry_facts(feed: int, title: str) -> EntryFacts:
    """The facts the index keeps about an entry of `feed` titled `title`."""
    bloom, numbers_key = title_fingerprint(title)
    return EntryFacts(feed, bloom, numbers_key)


def related_titles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise: whether title a's words are all in title b's or the other way round,
    for (n, 2) uint64 Bloom filters (either may be one row, broadcast)."""
    a_in_b = ((a & ~b) == 0).all(axis=-1)
    b_in_a = ((b & ~a) == 0).all(axis=-1)
    return a_in_b | b_in_a


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a normalised text (html_to_text puts one per line)."""
    return [p for p in text.split("\n") if p] if text else []


def paragraph_keys(text: str) -> np.ndarray:
    """uint32 key of each paragraph (its lower-cased text), in text order."""
    parts = paragraphs(text)
    return np.fromiter((_key(p.casefold()) for p in parts), dtype=np.uint32, count=len(parts))


def own_text(text: str, common: np.ndarray) -> str:
    """The text without the paragraphs marked common (a mask over paragraph_keys(text))."""
    return "\n".join(p for p, c in zip(paragraphs(text), common.tolist(), strict=True) if not c)
