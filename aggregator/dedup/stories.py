"""The story tier: copy clusters that report one event, each in its own words, share a story.

Pure and in memory, like the copy tier's index; the clusterer (service/clustering.py) feeds
it each new cluster in cluster-id order and stores what it decides (clusters.story_id).

What a cluster is compared on: the terms of the headline and the opening words of the
item that started it (`story_terms`), weighted by TF-IDF, the IDF learnt from the clusters
inside the index (not a fixed list): the rare words of a report (names, places, numbers of
victims) weigh, the topic's common vocabulary ("police", "shooting") hardly does. Names
(capitalised words inside a sentence) count `NAME_WEIGHT` times, headline words
`TITLE_WEIGHT` times. The score is the cosine of the two weighted vectors.

The placement rule, for a new cluster (bench/story_quality.py measured each part):
- its candidates are the indexed clusters whose story time is within `window` of its own
  (the story time: the first item's published time, capped at when it was first seen, so a
  feed's backlog arriving at once keeps its own dates);
- a candidate started by the same feed does not count: one outlet's posts that share names
  are a series (the same court case, the same team), not one event reported by several;
- the best-scoring candidate at or above `threshold` decides the story, provided the new
  cluster also scores at least `threshold * CHAIN_GUARD` against that story's first
  cluster: a story grows around its first report and cannot drift, link by link, to
  another event;
- otherwise the cluster starts a story of its own (story id = its cluster id).
A cluster alone in its story may still move once it is joined: when an item from another
feed, under another headline, joins its copies, that item's terms are tried as above
(`place_again`); a story that others joined keeps its clusters.

Deterministic in the order clusters arrive, and the index's state (term weights, document
frequencies, what has expired) depends only on the clusters in it, never on the clock: a
`recluster` replays the same decisions, and an index rebuilt from the stored vectors
(`StoryIndex.load`) continues as the one that made them.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

LEAD_CHARS = 600  # opening characters of the text compared with the headline (~100 words)
TITLE_WEIGHT = 2.0
NAME_WEIGHT = 1.5
CHAIN_GUARD = 0.5  # share of the threshold a joining cluster needs against the story's first
MAX_TERMS = 40  # the heaviest terms of a vector kept (the tail adds cost, not evidence)
COMMON_SHARE = 0.2  # terms in more than this share of the clusters propose no candidates
# The IDF is learnt from the last this many clusters, whatever their time: enough text for
# the weights to mean something where feeds are few and slow (a window of 72 h can hold a
# dozen clusters), and a bounded cost where they are many.
IDF_CLUSTERS = 10_000

MIN_SHARED = 3  # terms two clusters must share: a short item's few words match by chance
MIN_SHARED_NAMES = 1  # names they must share: reports of one event name its place or people
CALENDAR = frozenset(
    ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"]
)
SAME_FEED_GUARD = 1.0  # share of the threshold needed against the story's first cluster
# when the story already holds a cluster of the joining cluster's feed (a series, often)

_WORD = re.compile(r"\w+")
# Function words: they carry no event, and skipping them keeps the postings short. The
# weights of everything else come from the window (IDF), not from this list.
STOPWORDS = frozenset(
    ["a", "about", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own", "said", "same", "says", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "mr", "mrs", "ms", "new", "one", "two"]
)


@dataclass(frozen=True)
class StoryTerms:
    """A cluster's weighted terms before IDF: each distinct term and its weighted count, and
    which of them are names."""

    terms: tuple[str, ...]
    counts: tuple[float, ...]
    names: frozenset[str] = frozenset()


def story_terms(title: str, text: str, lead_chars: int = LEAD_CHARS) -> StoryTerms:
    """The terms a story is recognised by: the headline's and the opening words'. A word
    written with a capital in the text counts as a name (sentence starts too: the common
    ones are function words, and the IDF makes little of the rest)."""
    counts: dict[str, float] = {}
    get = counts.get
    for term in _WORD.findall(title.lower()):
        if term not in STOPWORDS:
            counts[term] = get(term, 0.0) + TITLE_WEIGHT
    capitalised, lower = set(), set()
    for word in _WORD.findall(text, 0, lead_chars):
        term = word.lower()
        if term not in STOPWORDS:
            if word[0].isupper():
                counts[term] = get(term, 0.0) + NAME_WEIGHT
                capitalised.add(term)
            else:
                counts[term] = get(term, 0.0) + 1.0
                lower.add(term)
    names = frozenset(capitalised - lower - CALENDAR)  # "Police" at a sentence start, "police" later: no name
    return StoryTerms(tuple(counts), tuple(counts.values()), names)


_LOG = [0.0, *(math.log(n) for n in range(1, IDF_CLUSTERS + 3))]  # log(df + 1), looked up


class StoryVector(NamedTuple):
    """A cluster's unit vector as indexed and stored: terms and their TF-IDF weights, and
    its names (StoryTerms.names among the terms kept)."""

    terms: tuple[str, ...]
    weights: tuple[float, ...]
    names: frozenset[str] = frozenset()

    def to_text(self) -> str:
        """The stored form (clusters.story_terms): `term weight` pairs, one per line, a
        name's term marked with a leading `*`."""
        names = self.names
        return "\n".join(f"{'*' if t in names else ''}{t} {w:.6g}"
                         for t, w in zip(self.terms, self.weights, strict=True))  # fmt: skip

    @classmethod
    def from_text(cls, text: str | None) -> StoryVector:
        terms, weights, names = [], [], set()
        for line in (text or "").splitlines():
            term, _, weight = line.rpartition(" ")
            if term.startswith("*"):
                term = term[1:]
                names.add(term)
            if term:
                terms.append(term)
                weights.append(float(weight))
        return cls(tuple(terms), tuple(weights), frozenset(names))


class StoryPlacement(NamedTuple):
    """Where a cluster goes: its story, the score it joined with (None: it started the
    story), and its vector, to store."""

    story_id: int
    score: float | None
    vector: StoryVector


@dataclass
class StoryIndex:
    """The clusters of the last `window` of story time (the candidates), with their
    vectors and postings by term, and the document frequencies of the last `idf_clusters`
    clusters; `window` and `threshold` as in the module docstring. Expiry follows the newest
    story time seen and the arrival order, so it is the same on a replay."""

    window: float
    threshold: float
    idf_clusters: int = IDF_CLUSTERS
    _slot_of: dict[int, int] = field(default_factory=dict)  # cluster id -> slot
    _cluster: list[int] = field(default_factory=list)
    _story: list[int] = field(default_factory=list)
    _time: list[float] = field(default_factory=list)
    _feed: list[int] = field(default_factory=list)
    _title: list[int] = field(default_factory=list)  # hash of the starting item's headline
    _terms: list[frozenset[str]] = field(default_factory=list)
    _names: list[frozenset[str]] = field(default_factory=list)
    _alive: list[bool] = field(default_factory=list)
    _postings: dict[str, tuple[list[int], list[float]]] = field(default_factory=dict)
    _df: dict[str, int] = field(default_factory=dict)
    _df_terms: deque[tuple[str, ...]] = field(default_factory=deque)  # of the last idf_clusters clusters
    _members: dict[int, set[int]] = field(default_factory=dict)  # story -> its live slots
    _expiry: list[tuple[float, int]] = field(default_factory=list)
    _live = 0
    newest = -math.inf

    def __post_init__(self) -> None:
        if not 0 < self.idf_clusters <= IDF_CLUSTERS:
            raise ValueError(f"idf_clusters must be 1..{IDF_CLUSTERS}")

    def __len__(self) -> int:
        return self._live

    # ------------------------------------------------------------ placing

    def place(self, cluster_id: int, feed_id: int, time: float, terms: StoryTerms, title: int = 0) -> StoryPlacement:
        """Place a new cluster (see the module docstring) and index it; `title`: a hash of
        its headline (for may_move)."""
        self._advance(time)
        vector = self.vector(terms)
        story, score = self._best_story(vector, feed_id, time)
        self.add(cluster_id, story if story is not None else cluster_id, feed_id, time, vector, title)
        return StoryPlacement(story if story is not None else cluster_id, score, vector)

    def may_move(self, cluster_id: int, feed_id: int, title: int) -> bool:
        """Whether an item of `feed_id` under headline hash `title` joining the cluster's
        copies gets a say in its story: from another feed, under another headline, and the
        cluster still alone in its story."""
        slot = self._slot_of.get(cluster_id)
        if slot is None or self._feed[slot] == feed_id or self._title[slot] == title:
            return False
        return len(self._members[self._story[slot]]) == 1

    def place_again(self, cluster_id: int, feed_id: int, terms: StoryTerms) -> StoryPlacement | None:
        """A cluster that may_move: the story the new item's terms match, if any (the
        cluster moves there and keeps its own vector). None: it stays."""
        slot = self._slot_of[cluster_id]
        vector = self.vector(terms)
        story, score = self._best_story(vector, feed_id, self._time[slot], exclude=slot)
        if story is None:
            return None
        self.move(cluster_id, story)
        return StoryPlacement(story, score, vector)

    def vector(self, terms: StoryTerms) -> StoryVector:
        """TF-IDF unit vector, the IDF from the clusters indexed now (sublinear TF)."""
        log_n = math.log(len(self._df_terms) + 2)
        df, log = self._df.get, _LOG
        pairs = [
            (term, (1.0 + math.log(count) if count != 1.0 else 1.0) * (log_n - log[df(term, 0) + 1]))
            for term, count in zip(terms.terms, terms.counts, strict=True)
        ]
        if len(pairs) > MAX_TERMS:
            pairs = sorted(pairs, key=lambda p: -p[1])[:MAX_TERMS]
        norm = math.sqrt(sum(w * w for _, w in pairs)) or 1.0
        kept = tuple(t for t, _ in pairs)
        return StoryVector(kept, tuple(w / norm for _, w in pairs), terms.names.intersection(kept))

    def _best_story(self, vector: StoryVector, feed_id: int, time: float, exclude: int = -1) -> tuple[int | None, float | None]:
        scores: dict[int, float] = {}
        common = max(COMMON_SHARE * len(self._df_terms), 5)
        postings, df = self._postings, self._df
        for term, weight in zip(vector.terms, vector.weights, strict=True):
            if df.get(term, 0) > common:
                continue
            found = postings.get(term)
            if found is None:
                continue
            for slot, w in zip(*found, strict=True):
                scores[slot] = scores.get(slot, 0.0) + weight * w
        best: tuple[float, int] | None = None
        threshold, window = self.threshold, self.window
        for slot, score in scores.items():
            if score < threshold or slot == exclude or not self._alive[slot]:
                continue
            if self._feed[slot] == feed_id or abs(self._time[slot] - time) > window:
                continue
            if len(self._terms[slot].intersection(vector.terms)) < MIN_SHARED:
                continue
            if MIN_SHARED_NAMES and len(self._names[slot].intersection(vector.names)) < MIN_SHARED_NAMES:
                continue
            story = self._story[slot]
            first = self._slot_of.get(story)
            if first is not None and first != slot and self._alive[first]:
                guard = SAME_FEED_GUARD if feed_id in self._story_feeds(story) else CHAIN_GUARD
                if scores.get(first, 0.0) < threshold * guard:
                    continue
            if best is None or score > best[0] or (score == best[0] and story < self._story[best[1]]):
                best = (score, slot)
        if best is None:
            return None, None
        return self._story[best[1]], best[0]

    # ------------------------------------------------------------ state

    def add(self, cluster_id: int, story_id: int, feed_id: int, time: float, vector: StoryVector, title: int = 0) -> None:
        """Index a cluster as placed (also how a stored one is loaded back)."""
        self._advance(time)
        if cluster_id in self._slot_of:
            self.drop(cluster_id)
        self._count(vector.terms)
        if time < self.newest - self.window:
            return  # too old to be anyone's candidate: it counts for the IDF only
        slot = len(self._cluster)
        self._slot_of[cluster_id] = slot
        self._cluster.append(cluster_id)
        self._story.append(story_id)
        self._time.append(time)
        self._feed.append(feed_id)
        self._title.append(title)
        self._terms.append(frozenset(vector.terms))
        self._names.append(vector.names)
        self._alive.append(True)
        self._live += 1
        self._members.setdefault(story_id, set()).add(slot)
        postings = self._postings
        for term, weight in zip(vector.terms, vector.weights, strict=True):
            found = postings.get(term)
            if found is None:
                postings[term] = ([slot], [weight])
            else:
                found[0].append(slot)
                found[1].append(weight)
        heapq.heappush(self._expiry, (time, slot))

    def _count(self, terms: tuple[str, ...]) -> None:
        """Count a cluster's terms for the IDF, forgetting the oldest beyond idf_clusters."""
        df = self._df
        for term in terms:
            df[term] = df.get(term, 0) + 1
        self._df_terms.append(terms)
        if len(self._df_terms) > self.idf_clusters:
            for term in self._df_terms.popleft():
                left = df[term] - 1
                if left:
                    df[term] = left
                else:
                    del df[term]

    def move(self, cluster_id: int, story_id: int) -> None:
        slot = self._slot_of[cluster_id]
        old = self._story[slot]
        self._leave(old, slot)
        self._story[slot] = story_id
        self._members.setdefault(story_id, set()).add(slot)

    def _leave(self, story: int, slot: int) -> None:
        members = self._members[story]
        members.discard(slot)
        if not members:
            del self._members[story]

    def _story_feeds(self, story: int) -> set[int]:
        return {self._feed[s] for s in self._members.get(story, ())}

    def story_of(self, cluster_id: int) -> int | None:
        slot = self._slot_of.get(cluster_id)
        return self._story[slot] if slot is not None and self._alive[slot] else None

    def drop(self, cluster_id: int) -> None:
        """No longer a candidate (retired, or expired); its terms still count for the IDF
        until idf_clusters newer ones have come."""
        slot = self._slot_of.pop(cluster_id, None)
        if slot is None or not self._alive[slot]:
            return
        self._alive[slot] = False
        self._live -= 1
        self._terms[slot] = self._names[slot] = frozenset()
        story = self._story[slot]
        self._leave(story, slot)

    def _advance(self, time: float) -> None:
        """Expire what the newest story time leaves behind; reclaim postings when half dead."""
        if time <= self.newest:
            return
        self.newest = time
        horizon = time - self.window
        expiry = self._expiry
        while expiry and expiry[0][0] < horizon:
            _, slot = heapq.heappop(expiry)
            if self._alive[slot]:
                self.drop(self._cluster[slot])
        dead = len(self._cluster) - self._live
        if dead >= 256 and dead >= self._live:  # amortised: each compaction at least halves the slots
            self._compact()

    def _compact(self) -> None:
        """Renumber the live slots from 0 and drop the dead ones' postings (no decision
        depends on slot numbers: ties go by story id)."""
        alive = self._alive
        renumber = {}
        for slot, live in enumerate(alive):
            if live:
                renumber[slot] = len(renumber)
        keep = list(renumber)
        for name in ("_cluster", "_story", "_time", "_feed", "_title", "_terms", "_names", "_alive"):
            old = getattr(self, name)
            setattr(self, name, [old[s] for s in keep])
        self._slot_of = {c: renumber[s] for c, s in self._slot_of.items()}
        self._members = {story: {renumber[s] for s in slots} for story, slots in self._members.items()}
        for term in list(self._postings):
            slots, weights = self._postings[term]
            kept = [(renumber[s], w) for s, w in zip(slots, weights, strict=True) if alive[s]]
            if kept:
                self._postings[term] = ([s for s, _ in kept], [w for _, w in kept])
            else:
                del self._postings[term]
        self._expiry = [(t, renumber[s]) for t, s in self._expiry if s in renumber]
        heapq.heapify(self._expiry)

    def clusters(self) -> Iterable[int]:
        return (c for c, s in self._slot_of.items() if self._alive[s])
