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
(`place_again`), needing `MOVE_FACTOR` times the threshold; a story that others joined
keeps its clusters.

Deterministic in the order clusters arrive, and the index's state (term weights, document
frequencies, what has expired) depends only on the clusters in it, never on the clock: a
`recluster` replays the same decisions, and an index rebuilt from the stored vectors
(`StoryIndex.load`) continues as the one that made them.
"""

from __future__ import annotations

import math
import operator
import re
import sys
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

LEAD_CHARS = 600  # opening characters of the text compared with the headline (~100 words)
TITLE_WEIGHT = 2.0
NAME_WEIGHT = 1.5
CHAIN_GUARD = 0.5  # share of the threshold a joining cluster needs against the story's first
MAX_TERMS = 40  # the heaviest terms of a vector kept (the tail adds cost, not evidence)
COMMON_SHARE = 0.05  # terms in more than this share of the clusters propose no candidates
# Postings hold weights as integers of WEIGHT_SCALE (8 bytes a posting with the cluster id),
# and _best_story's sums count shared terms in units of SHARED_UNIT, far above any score.
WEIGHT_SCALE = 2**30
SHARED_UNIT = float(2**34)
# The IDF is learnt from the last this many clusters, whatever their time: enough text for
# the weights to mean something where feeds are few and slow (a window of 72 h can hold a
# dozen clusters), and a bounded cost where they are many.
IDF_CLUSTERS = 10_000

MIN_SHARED = 3  # terms two clusters must share: a short item's few words match by chance
MIN_SHARED_NAMES = 1  # names they must share: reports of one event name its place or people
CALENDAR = frozenset(
    ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"]
)
MOVE_FACTOR = 2.0  # a joined cluster moves only on a score this many times the threshold: its
# first placement already weighed it, and a new headline is a second chance to match by chance
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
    tf: tuple[float, ...]  # sublinear: 1 + log(weighted count)
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
    tf = tuple(1.0 + math.log(c) if c != 1.0 else 1.0 for c in counts.values())
    return StoryTerms(tuple(counts), tf, names)


_LOG = [0.0, *(math.log(n) for n in range(1, IDF_CLUSTERS + 3))]  # log(df + 1), looked up


class StoryVector(NamedTuple):
    """A cluster's unit vector as indexed and stored: terms and their TF-IDF weights (as
    single-precision floats, stored so, so that a reloaded index scores exactly as the one
    that placed), and its names (StoryTerms.names among the terms kept)."""

    terms: tuple[str, ...]
    weights: array  # array("f")
    names: frozenset[str] = frozenset()

    def to_stored(self) -> tuple[str, bytes]:
        """(clusters.story_terms, clusters.story_weights): the terms one per line, a name's
        marked with a leading `*`; the weights as little-endian float32."""
        names = self.names
        text = "\n".join(f"*{t}" if t in names else t for t in self.terms)
        weights = self.weights if sys.byteorder == "little" else _swapped(self.weights)
        return text, weights.tobytes()

    @classmethod
    def from_stored(cls, text: str | None, blob: bytes | None) -> StoryVector:
        weights = array("f", blob or b"")
        if sys.byteorder != "little":
            weights.byteswap()
        lines = text.split("\n") if text else []
        names = frozenset(t[1:] for t in lines if t.startswith("*"))
        terms = tuple(t[1:] if t.startswith("*") else t for t in lines)
        if len(terms) != len(weights):
            return cls((), array("f"))  # damaged: the cluster is a candidate for nothing
        return cls(terms, weights, names)


def _swapped(weights: array) -> array:
    out = array("f", weights)
    out.byteswap()
    return out


class StoryPlacement(NamedTuple):
    """Where a cluster goes: its story, the score it joined with (None: it started the
    story), and its vector, to store."""

    story_id: int
    score: float | None
    vector: StoryVector


class _Cluster:
    """What the index keeps of a cluster besides its postings (slots: ~200 bytes)."""

    __slots__ = ("story", "time", "feed", "title", "names", "bucket")

    def __init__(self, story: int, time: float, feed: int, title: int, names: tuple[str, ...], bucket: int):
        self.story, self.time, self.feed, self.title, self.names, self.bucket = story, time, feed, title, names, bucket


class StoryIndex:
    """The clusters of the last `retention` of story time (the candidates), their postings
    by term in buckets of `window` of story time, and the document frequencies of the last
    `idf_clusters` clusters; `window` and `threshold` as in the module docstring.

    A new cluster's candidates are read from its own bucket and the two beside it, so a
    cluster of any date finds the clusters near it in time, whenever they arrived (a feed's
    backlog); buckets older than `retention` before the newest story time are dropped
    whole. Expiry follows the newest story time seen and the arrival order, never the
    clock, so it is the same on a replay."""

    def __init__(self, window: float, threshold: float, retention: float | None = None,
                 idf_clusters: int = IDF_CLUSTERS):  # fmt: skip
        if not 0 < idf_clusters <= IDF_CLUSTERS:
            raise ValueError(f"idf_clusters must be 1..{IDF_CLUSTERS}")
        self.window, self.threshold = window, threshold
        self.retention = max(retention or 0.0, window)
        self.idf_clusters = idf_clusters
        self.newest = -math.inf
        self._clusters: dict[int, _Cluster] = {}
        # bucket -> term -> cluster id, weight, cluster id, weight, ... (one array("i"), the
        # weights as integers of WEIGHT_SCALE: cluster ids up to 2**31); and bucket -> its
        # clusters, to expire
        self._buckets: dict[int, dict[str, array]] = {}
        self._bucket_clusters: dict[int, list[int]] = {}
        # story -> its clusters in the index: the cluster itself while it is alone (most
        # stories: no set to hold), else a set
        self._members: dict[int, int | set[int]] = {}
        self._df: dict[str, int] = {}
        self._df_terms: deque[tuple[str, ...]] = deque()  # of the last idf_clusters clusters

    def __len__(self) -> int:
        return len(self._clusters)

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
        c = self._clusters.get(cluster_id)
        if c is None or c.feed == feed_id or c.title == title:
            return False
        return not isinstance(self._members[c.story], set)

    def place_again(self, cluster_id: int, feed_id: int, terms: StoryTerms) -> StoryPlacement | None:
        """A cluster that may_move: the story the new item's terms match, if any (the
        cluster moves there and keeps its own vector). None: it stays."""
        c = self._clusters[cluster_id]
        vector = self.vector(terms)
        story, score = self._best_story(vector, feed_id, c.time, exclude=cluster_id)
        if story is None or score is None or score < self.threshold * MOVE_FACTOR:
            return None
        self.move(cluster_id, story)
        return StoryPlacement(story, score, vector)

    def vector(self, terms: StoryTerms) -> StoryVector:
        """TF-IDF unit vector, the IDF from the last idf_clusters clusters (sublinear TF)."""
        log_n = math.log(len(self._df_terms) + 2)
        df, log = self._df.get, _LOG
        kept = terms.terms
        weights = list(map(operator.mul, terms.tf, [log_n - log[df(t, 0) + 1] for t in kept]))
        if len(weights) > MAX_TERMS:  # the heaviest, ties in the terms' order
            order = sorted(range(len(weights)), key=weights.__getitem__, reverse=True)[:MAX_TERMS]
            kept, weights = tuple(map(kept.__getitem__, order)), list(map(weights.__getitem__, order))
        norm = math.hypot(*weights) or 1.0
        return StoryVector(kept, array("f", [w / norm for w in weights]), terms.names.intersection(kept))

    def _best_story(self, vector: StoryVector, feed_id: int, time: float, exclude: int = -1) -> tuple[int | None, float | None]:
        """The story of the best candidate that passes the rule, and its score."""
        # each shared term adds its product and SHARED_UNIT: the count rides along with the score
        scores: dict[int, float] = {}
        get = scores.get
        common = max(COMMON_SHARE * len(self._df_terms), 5)
        df = self._df
        home = int(time // self.window)
        for b in (home - 1, home, home + 1):
            bucket = self._buckets.get(b)
            if bucket is None:
                continue
            for term, weight in zip(vector.terms, vector.weights, strict=True):
                found = bucket.get(term)
                if found is None or df.get(term, 0) > common:
                    continue
                for cid, w in zip(found[::2], found[1::2], strict=True):
                    scores[cid] = get(cid, 0.0) + weight * w + SHARED_UNIT
        best: tuple[float, int, int] | None = None  # (score, -story, cluster)
        threshold, window, clusters = self.threshold, self.window, self._clusters
        threshold *= WEIGHT_SCALE  # the sums are in those units
        need = MIN_SHARED * SHARED_UNIT + threshold
        names = vector.names
        for cid, total in scores.items():
            if total < need or cid == exclude:
                continue
            shared = int(total // SHARED_UNIT)
            score = total - shared * SHARED_UNIT
            c = clusters.get(cid)
            if score < threshold or c is None or c.feed == feed_id or abs(c.time - time) > window:
                continue
            if MIN_SHARED_NAMES and sum(n in names for n in c.names) < MIN_SHARED_NAMES:
                continue
            first_id = c.story
            if first_id != cid and first_id in clusters:
                guard = SAME_FEED_GUARD if feed_id in self._story_feeds(c.story) else CHAIN_GUARD
                first_total = scores.get(first_id, 0.0)
                if first_total - (first_total // SHARED_UNIT) * SHARED_UNIT < threshold * guard:
                    continue
            key = (score, -c.story, cid)
            if best is None or key > best:
                best = key
        if best is None:
            return None, None
        return -best[1], best[0] / WEIGHT_SCALE

    # ------------------------------------------------------------ state

    def add(self, cluster_id: int, story_id: int, feed_id: int, time: float, vector: StoryVector, title: int = 0) -> None:
        """Index a cluster as placed (also how a stored one is loaded back)."""
        self._advance(time)
        if cluster_id in self._clusters:
            self.drop(cluster_id)
        terms = tuple(map(sys.intern, vector.terms))  # one string per term, shared by every vector
        self._count(terms)
        if time < self.newest - self.retention:
            return  # too old to be anyone's candidate: it counts for the IDF only
        b = int(time // self.window)
        self._clusters[cluster_id] = _Cluster(story_id, time, feed_id, title, tuple(vector.names), b)
        self._join(story_id, cluster_id)
        bucket = self._buckets.get(b)
        if bucket is None:
            bucket = self._buckets[b] = {}
            self._bucket_clusters[b] = []
        self._bucket_clusters[b].append(cluster_id)
        for term, weight in zip(terms, vector.weights, strict=True):
            found = bucket.get(term)
            if found is None:
                bucket[term] = array("i", (cluster_id, round(weight * WEIGHT_SCALE)))
            else:
                found.append(cluster_id)
                found.append(round(weight * WEIGHT_SCALE))

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
        c = self._clusters[cluster_id]
        self._leave(c.story, cluster_id)
        c.story = story_id
        self._join(story_id, cluster_id)

    def story_of(self, cluster_id: int) -> int | None:
        c = self._clusters.get(cluster_id)
        return c.story if c is not None else None

    def drop(self, cluster_id: int) -> None:
        """No longer a candidate (retired, or expired); its terms still count for the IDF
        until idf_clusters newer ones have come. Its postings stay until its bucket goes."""
        c = self._clusters.pop(cluster_id, None)
        if c is not None:
            self._leave(c.story, cluster_id)

    def _leave(self, story: int, cluster_id: int) -> None:
        members = self._members[story]
        if not isinstance(members, set):
            del self._members[story]
            return
        members.discard(cluster_id)
        if len(members) == 1:
            self._members[story] = next(iter(members))

    def _story_feeds(self, story: int) -> set[int]:
        members = self._members.get(story)
        if members is None:
            return set()
        return {self._clusters[c].feed for c in (members if isinstance(members, set) else (members,))}

    def _join(self, story: int, cluster_id: int) -> None:
        members = self._members.get(story)
        if members is None:
            self._members[story] = cluster_id
        elif isinstance(members, set):
            members.add(cluster_id)
        else:
            self._members[story] = {members, cluster_id}

    def _advance(self, time: float) -> None:
        """Drop the buckets that the newest story time leaves `retention` behind."""
        if time <= self.newest:
            return
        self.newest = time
        oldest = int((time - self.retention) // self.window) - 1  # a bucket wholly older goes
        for b in [b for b in self._bucket_clusters if b < oldest]:
            for cid in self._bucket_clusters.pop(b):
                c = self._clusters.get(cid)
                if c is not None and c.bucket == b:
                    self.drop(cid)
            del self._buckets[b]

    def clusters(self) -> Iterable[int]:
        return iter(self._clusters)
