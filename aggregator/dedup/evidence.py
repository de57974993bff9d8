"""What besides similar text makes two entries one story, and which of an entry's text is
its own. Pure functions of titles and texts; the dedup index (aggregator.dedup) applies
them to the rows it holds.

- **Titles within one feed.** Two entries of one feed whose titles are unrelated are
  different entries, however alike their texts: podcast episodes that carry the show's
  description, status reports or analyst notes from one template. Titles are related when
  one's words are all in the other ("UPDATED: ..." over a re-post) or they share the first
  RELATED_WORD_CHARS letters of a word that long (a follow-up under a new headline: "Teen
  shot and killed in Chelsea" / "15-year-old identified in fatal Chelsea shooting";
  "4 injured" / "injures 4"; "Teens" / "Teen"). A template word that titles share
  ("Interview with ...") makes them related: then their numbers and their own text decide.
  The index keeps each row's title and compares titles only for the rows of the entry's
  own feed among its candidates, so the common case costs nothing.
- **Numbers in titles, within one feed.** Titles that both carry numbers, neither set
  (with repeats) inside the other, are different entries: episode 837 / 838, "week of
  June 5" / "June 12", "Part 1 of 2" / "Part 2 of 2"; "CBS 58 - ..." / "CBS 58 - ... at
  37th St" are not. Across feeds, headlines are written apart ("3-year-old" / "toddler",
  a station's "News 5"), and the text decides.
- **Paragraphs everyone has.** A paragraph is common when the rows that carry it (inside
  the dedup window) belong to COMMON_CLUSTERS or more distinct clusters, or when one
  feed carries it in two different clusters, or the entry's own feed carries it under
  an unrelated title (a feed's template: a sign-in widget, a cookie notice, a show's
  description), or, in a short body (dedup.CHROME_CHARS), under another title in an entry
  whose whole body is the same paragraphs (chrome and nothing else). An entry is compared on the rest of its text: its
  own text.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from zlib import crc32

import numpy as np

_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+")

# Distinct clusters whose members carry a paragraph before it stops being evidence: a
# wire story's paragraphs sit in one cluster however many outlets carry it.
COMMON_CLUSTERS = 3


RELATED_WORD_CHARS = 4


@dataclass(frozen=True)
class EntryFacts:
    """The entry's feed (-1 when unknown: then no rule that needs it applies) and title,
    as the index keeps them per row."""

    feed: int = -1
    title: str = ""


NO_FACTS = EntryFacts()


@dataclass(frozen=True)
class TitleFacts:
    """What the rules compare of a title: its lower-cased words, their stems (the first
    RELATED_WORD_CHARS letters of the longer ones) and its numbers with their counts."""

    words: frozenset[str]
    stems: frozenset[str]
    numbers: tuple[tuple[int, int], ...]  # (value, how often), sorted


@functools.lru_cache(maxsize=65_536)
def title_facts(title: str) -> TitleFacts:
    """The TitleFacts of a title (cached: one feed's titles are compared again and again)."""
    folded = title.casefold()
    words = frozenset(_WORD.findall(folded))
    stems = frozenset(w[:RELATED_WORD_CHARS] for w in words if len(w) >= RELATED_WORD_CHARS and not w.isdigit())
    numbers = tuple(sorted(Counter(int(n[:18]) for n in _NUMBER.findall(folded)).items()))
    return TitleFacts(words, stems, numbers)


def related_titles(a: TitleFacts, b: TitleFacts) -> bool:
    """One title's words all in the other's, or a shared stem."""
    return a.words <= b.words or b.words <= a.words or not a.stems.isdisjoint(b.stems)


def titles_contained(a: str, b: str) -> bool:
    """One title's words all in the other's (a re-post, "UPDATED: ...")."""
    fa, fb = title_facts(a), title_facts(b)
    return fa.words <= fb.words or fb.words <= fa.words


def numbers_conflict(a: TitleFacts, b: TitleFacts) -> bool:
    """Both titles carry numbers and neither's (with repeats) are all in the other's."""
    if not a.numbers or not b.numbers:
        return False
    x, y = Counter(dict(a.numbers)), Counter(dict(b.numbers))
    return not (x <= y or y <= x)


def may_be_one_entry(a: str, b: str) -> bool:
    """Whether two titles of one feed may name one entry (related, numbers agreeing)."""
    fa, fb = title_facts(a), title_facts(b)
    return related_titles(fa, fb) and not numbers_conflict(fa, fb)


def paragraphs(text: str) -> list[str]:
    """The paragraphs of a normalised text (html_to_text puts one per line)."""
    return [p for p in text.split("\n") if p] if text else []


def paragraph_keys(text: str) -> np.ndarray:
    """uint32 key of each paragraph (its exact text: a site's chrome is word for word the
    same in every entry), in text order: its CRC-32, stable since the keys are stored
    (the split is paragraphs(), inlined: this runs for every item placed)."""
    if not text:
        return np.zeros(0, dtype=np.uint32)
    return np.array([crc32(p.encode("utf-8", "surrogatepass")) for p in text.split("\n") if p], dtype=np.uint32)


def own_text(text: str, common: np.ndarray) -> str:
    """The text without the paragraphs marked common (a mask over paragraph_keys(text))."""
    return "\n".join(p for p, c in zip(paragraphs(text), common.tolist(), strict=True) if not c)
