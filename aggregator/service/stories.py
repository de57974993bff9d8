"""The story step of the dedup stage: places each new copy cluster in a story
(aggregator/dedup/stories.py says how) and keeps the story index in step with the store.

The index lives beside the clusterer's and follows its transactions: rebuilt from the
stored vectors at start-up, after a recluster or prune, after a rolled-back transaction
(which may have left it ahead of the store), and when another process (`aggregator fetch`
beside the daemon, another worker) placed clusters since it last looked.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..config import StorySettings
from ..dedup.stories import (
    IDF_CLUSTERS,
    StoryIndex,
    StoryPlacement,
    StoryTerms,
    StoryVector,
    story_terms,
)
from ..store.clusters import ClusterStore
from ..timeutil import from_iso


def story_time(published: datetime, first_seen: float) -> float:
    """When a story happened, as far as the tier can tell: the item's published time,
    capped at when it was first seen (a feed's backlog, fetched at once, keeps its dates;
    a date in the future counts as now)."""
    return min(published.timestamp(), first_seen)


def title_hash(title: str) -> int:
    """A headline as compared for a move: case and spacing aside (a hash: one int a cluster)."""
    return hash(" ".join(title.casefold().split()))


class StoryTier:
    """The story index of one process, and the placements a transaction made."""

    def __init__(self, settings: StorySettings, retention: float):
        """`retention`: how long in story time a cluster stays a candidate (the copy
        tier's window: the story index covers what the dedup index covers)."""
        self.settings = settings
        self.retention = retention
        self.index: StoryIndex | None = None  # None: to be (re)built from the store
        self.moves: list[tuple[int, int, float]] = []  # (cluster, story, score) to write

    def _new_index(self) -> StoryIndex:
        return StoryIndex(self.settings.window, self.settings.threshold, self.retention)

    def reset(self) -> None:
        """Empty, for a recluster (which places every cluster again)."""
        self.index = self._new_index()
        self.moves.clear()

    def load(self, clusters: ClusterStore, now: datetime) -> None:
        """Rebuild from the stored vectors: the last IDF_CLUSTERS clusters (the IDF) and
        those created inside the retention (the candidates), in id order, as placed."""
        self.reset()
        index = self.index
        assert index is not None
        last = clusters.next_cluster_id() - 1
        since = now - timedelta(seconds=self.index.retention)
        for cid, story, terms, weights, feed, published, first_seen, title in clusters.story_rows(last - IDF_CLUSTERS, since):
            t = story_time(from_iso(published), from_iso(first_seen).timestamp())
            # (a cluster placed with the tier off has no vector: its headline stands in)
            vector = StoryVector.from_stored(terms, weights) if terms is not None else index.vector(story_terms(title, ""))
            index.add(cid, story, feed, t, vector, title_hash(title))

    def stale(self) -> None:
        """Rebuild before next use (a rollback, or other processes' placements)."""
        self.index = None
        self.moves.clear()

    def ensure(self, clusters: ClusterStore, now: datetime) -> None:
        if self.index is None:
            self.load(clusters, now)

    def place(
        self, cluster_id: int, feed_id: int, published: datetime, seen: int, title: str, text: str,
        terms: StoryTerms | None = None,
    ) -> StoryPlacement:  # fmt: skip
        """The story of a new cluster (its first item's feed, times, headline and text;
        `terms`: story_terms of those, when the parse workers made them)."""
        assert self.index is not None
        t = story_time(published, seen)
        return self.index.place(cluster_id, feed_id, t, terms or story_terms(title, text), title_hash(title))

    def joined(self, cluster_id: int, feed_id: int, title: str, text: str, terms: StoryTerms | None = None) -> None:
        """An item joined a cluster: if it comes from another feed under another headline,
        and the cluster is alone in its story, the story its terms match takes the cluster."""
        index = self.index
        assert index is not None
        if not index.may_move(cluster_id, feed_id, title_hash(title)):
            return
        moved = index.place_again(cluster_id, feed_id, terms or story_terms(title, text))
        if moved is not None:
            self.moves.append((cluster_id, moved.story_id, moved.score or 0.0))

    def written(self) -> list[tuple[int, int, float]]:
        """The moves to write now (and forget)."""
        moves, self.moves = self.moves, []
        return moves
