"""Read side of the story tier: copy clusters that report one event in their own words
(schema 015: `clusters.story_id`, the id of the story's first cluster; NULL counts as the
cluster's own id). Plain records out, built from queries.py's cluster views.

A story's **lead** is the cluster most outlets carried (`feed_count`), ties to the
earliest (lowest id); its other clusters follow in the same order. The story's id stays
when the lead changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .database import Store
from .queries import (
    _FEED_NAME,
    ClusterFilter,
    ClusterView,
    _filter_sql,
    _iso,
    _load,
    _run_filtered,
    digest_filter_sql,
    ranked_ids,
)
from .search import catch_up

# The story a cluster `c` is in (as SQL): its story_id, or its own id while that is NULL.
STORY_OF = "coalesce({0}.story_id, {0}.id)"


def in_story(alias: str, story: str) -> str:
    """SQL: cluster `alias` is in the story `story` (an SQL expression). Written so that
    both backends look it up in the clusters_story index (and the primary key)."""
    return f"({alias}.story_id = {story} OR ({alias}.story_id IS NULL AND {alias}.id = {story}))"


@dataclass(frozen=True)
class StoryView:
    """One story: its lead cluster, the others (most outlets first, then oldest), and
    facts of the whole story. `scores[k]` is how strongly cluster k (lead first) matched
    when it joined (`clusters.story_score`; None for the one that started the story)."""

    id: int
    lead: ClusterView
    others: tuple[ClusterView, ...]
    outlets: int  # distinct outlets across all its clusters
    first_seen: datetime
    last_seen: datetime
    scores: tuple[float | None, ...] = ()

    @property
    def clusters(self) -> tuple[ClusterView, ...]:
        """The lead, then the other clusters."""
        return (self.lead, *self.others)

    @property
    def size(self) -> int:
        """Items in the story (all its clusters)."""
        return sum(c.size for c in self.clusters)

    @property
    def updated(self) -> datetime:
        """When the story last changed: the latest change of any of its clusters."""
        return max(c.updated or c.last_seen for c in self.clusters)

    def to_json(self) -> dict:
        """The documented JSON shape: the story's facts, then its clusters as
        `clusters show --json` gives them, each with its `story_score`."""
        scores = self.scores or (None,) * len(self.clusters)
        lead, *others = (
            {**c.to_json(), "story_score": s} for c, s in zip(self.clusters, scores, strict=True)
        )
        return {
            "id": self.id, "title": self.lead.title, "url": self.lead.url, "size": self.size,
            "clusters": len(self.clusters), "outlets": self.outlets,
            "first_seen": _iso(self.first_seen), "last_seen": _iso(self.last_seen),
            "lead": lead, "others": others,
        }  # fmt: skip


def list_stories(
    store: Store,
    since: datetime | None = None,
    min_clusters: int = 1,
    limit: int | None = 50,
    where: ClusterFilter | None = None,
    min_size: int = 1,
) -> list[StoryView]:
    """Stories active since `since` (a cluster's last report), newest first, of at least
    `min_clusters` clusters; `min_size` and `where` are the cluster filters of
    queries.list_clusters, applied to the story's lead."""
    sql = f"""{_stories("last_seen" if since is not None else None)}
              SELECT s.sid FROM s, clusters c
              WHERE c.id = (SELECT l.id FROM clusters l WHERE {in_story("l", "s.sid")}
                            ORDER BY l.feed_count DESC, l.id LIMIT 1)
                AND s.n >= ? AND c.size >= ?"""
    args: list = [*([] if since is None else [_iso(since)]), min_clusters, min_size]
    if where and where.query:
        catch_up(store)
    with store.snapshot():
        extra, extra_args = _filter_sql(store, where)
        sql += extra + " ORDER BY s.latest DESC, s.sid DESC"
        args += extra_args
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return _load_stories(store, _run_filtered(store, sql, args, where))


def count_stories(store: Store, min_clusters: int = 1, before: datetime | None = None) -> int:
    """Stories of at least `min_clusters` clusters (last active before `before`)."""
    sql, args = f"{_stories(None)} SELECT count(*) FROM s WHERE s.n >= ?", [min_clusters]
    if before is not None:
        sql += " AND s.latest < ?"
        args.append(_iso(before))
    return store.conn.execute(sql, args).fetchone()[0]


def get_story(store: Store, story_id: int, where: ClusterFilter | None = None) -> StoryView | None:
    """One story with all its clusters; None if there is none with that id (or, with
    `where`, if the filter does not keep its lead)."""
    if where and where.query:
        catch_up(store)
    with store.snapshot():
        found = _load_stories(store, [story_id])
        if not found:
            return None
        extra, args = _filter_sql(store, where)
        if extra and not _run_filtered(
            store,
            f"SELECT c.id FROM clusters c WHERE c.id = ?{extra}",
            [found[0].lead.id, *args],
            where,
        ):
            return None
    return found[0]


def story_of(store: Store, cluster_id: int) -> int | None:
    """The id of the story cluster `cluster_id` is in (None: no such cluster)."""
    row = store.conn.execute(
        f"SELECT {STORY_OF.format('c')} FROM clusters c WHERE c.id = ?", (cluster_id,)
    ).fetchone()
    return None if row is None else row[0]


def digest_stories(
    store: Store,
    since: datetime,
    limit: int,
    min_size: int = 1,
    tags: tuple[str, ...] = (),
    now: datetime | None = None,
    rank: tuple[float, float] = (1.0, 12 * 3600.0),
    query: str = "",
    page_tags: tuple[str, ...] = (),
) -> tuple[list[StoryView], int]:
    """queries.digest_clusters one tier up: (the `limit` best-ranked stories, how many
    matched) of those with a cluster active since `since`, of at least `min_size` items in
    all, ranked by the outlets across the story and its latest report; `tags`,
    `page_tags` and `query` keep a story when any of its clusters has such a member."""
    sql = f"""{_stories("updated_at")}
              SELECT s.sid, s.latest,
                     (SELECT count(DISTINCT {_FEED_NAME}) FROM clusters o JOIN items i ON i.cluster_id = o.id
                      JOIN feeds f ON f.id = i.feed_id WHERE {in_story("o", "s.sid")})
              FROM s WHERE s.size >= ?"""
    members = f"i.cluster_id IN (SELECT o.id FROM clusters o WHERE {in_story('o', 's.sid')})"
    extra, extra_args = digest_filter_sql(store, members, (tags, page_tags), query)
    args: list = [_iso(since), min_size, *extra_args]
    with store.snapshot():
        best, matched = ranked_ids(store, sql + extra, args, now or since, rank, limit)
        return _load_stories(store, best), matched


def _stories(active: str | None) -> str:
    """A WITH clause defining `s`: the stories (sid, n clusters, latest report, size in
    items) with a cluster whose column `active` is at least the query's first argument
    (None: every story). Only those stories' clusters are read (through clusters_story)."""
    story = STORY_OF.format("k")
    grouped = f"SELECT {story}, count(*), max(k.last_seen), sum(k.size) FROM clusters k"
    if active is None:
        return f"WITH s (sid, n, latest, size) AS ({grouped} GROUP BY {story})"
    return f"""WITH active (sid) AS (SELECT DISTINCT {STORY_OF.format("r")} FROM clusters r
                                     WHERE r.{active} >= ?),
                s (sid, n, latest, size) AS (
                    {grouped} WHERE k.story_id IN (SELECT sid FROM active)
                                 OR (k.story_id IS NULL AND k.id IN (SELECT sid FROM active))
                    GROUP BY {story})"""


def _load_stories(store: Store, story_ids: list[int]) -> list[StoryView]:
    """The stories of `story_ids` that exist, in that order (call inside a snapshot)."""
    if not story_ids:
        return []
    marks = ",".join("?" * len(story_ids))
    rows = store.conn.execute(
        f"""SELECT c.id, {STORY_OF.format("c")}, c.story_score FROM clusters c
            WHERE c.story_id IN ({marks}) OR (c.story_id IS NULL AND c.id IN ({marks}))""",
        [*story_ids, *story_ids],
    ).fetchall()
    views = {v.id: v for v in _load(store, [r[0] for r in rows])}
    members: dict[int, list[tuple[ClusterView, float | None]]] = {}
    for cid, sid, score in rows:
        if cid in views:
            members.setdefault(sid, []).append((views[cid], score))
    stories = []
    for sid in story_ids:
        if sid not in members:
            continue
        ranked = sorted(members[sid], key=lambda m: (-m[0].feeds, m[0].id))
        clusters = [c for c, _ in ranked]
        stories.append(StoryView(
            id=sid, lead=clusters[0], others=tuple(clusters[1:]),
            outlets=len({m.feed for c in clusters for m in c.items}) or max(c.feeds for c in clusters),
            first_seen=min(c.first_seen for c in clusters), last_seen=max(c.last_seen for c in clusters),
            scores=tuple(s for _, s in ranked),
        ))  # fmt: skip
    return stories
