"""Read side: what the CLI (and later the digest) shows. Plain records out, no printing."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from ..config import DedupSettings
from ..errors import AggregatorError
from ..timeutil import from_iso
from .database import Store
from .ranking import story_score
from .search import catch_up, explain, is_query_error, match_condition


@dataclass(frozen=True)
class MemberView:
    id: int
    feed: str
    title: str
    url: str | None
    published: datetime
    similarity: float | None  # estimated resemblance to the representative
    link: str | None = None  # the link as the feed published it (`url` is the canonical one)


@dataclass(frozen=True)
class ClusterView:
    id: int
    size: int
    feeds: int
    title: str
    url: str | None  # the representative's canonical link
    first_seen: datetime
    last_seen: datetime
    items: tuple[MemberView, ...]
    updated: datetime | None = None  # when the story last changed: a report, a text change
    lede: str = ""  # the representative's opening words (LEDE_WORDS), plain text

    @property
    def sources(self) -> int:
        """Distinct outlets that carried the story."""
        return len({m.feed for m in self.items}) or self.feeds

    def to_json(self) -> dict:
        """The documented, stable JSON shape (times ISO 8601 UTC)."""
        d = asdict(self)
        del d["updated"], d["lede"]
        for key in ("first_seen", "last_seen"):
            d[key] = _iso(d[key])
        for item in d["items"]:
            item["published"] = _iso(item["published"])
        return d


def _iso(dt: datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


_FEED_NAME = "coalesce(f.name, f.title, f.url)"


@dataclass(frozen=True)
class ClusterFilter:
    """Which clusters to keep: those with at least one member from a feed with one of
    `tags`, from the feed `feed` (name, own title or URL), and matching the full-text
    query `query` (each given condition must hold, possibly by different members)."""

    tags: tuple[str, ...] = ()
    feed: str | None = None
    query: str | None = None

    def __bool__(self) -> bool:
        return bool(self.tags or self.feed or self.query)

    def describe(self) -> str:
        """The filter as the options that set it, for messages."""
        parts = [f"--tag {t}" for t in self.tags]
        if self.feed:
            parts.append(f"--feed {self.feed}")
        if self.query:
            parts.append(f"--query {self.query!r}")
        return " ".join(parts)


def tags_sql(tags: Sequence[str]) -> tuple[str, list]:
    """SQL matching a feed tag `t.value` against wanted tags, and its arguments. Tags are
    folders (aggregator.ingest.opml): "Tech" also matches "Tech/Apple", as a reader's folder
    holds its subfolders; "Tech/Apple" matches only itself and below."""
    sql = " OR ".join("t.value = ? OR substr(t.value, 1, ?) = ?" for _ in tags)
    return f"({sql})", [x for tag in tags for x in (tag, len(tag) + 1, f"{tag}/")]


def _filter_sql(store: Store, where: ClusterFilter | None) -> tuple[str, list]:
    """SQL conditions on clusters `c` (each starting with AND) and their arguments."""
    if not where:
        return "", []
    sql, args = "", []
    if where.tags:
        match, match_args = tags_sql(where.tags)
        sql += (
            f" AND EXISTS (SELECT 1 FROM items i JOIN feeds f ON f.id = i.feed_id, {store.dialect.json_values.format('f.tags')}"
            f" WHERE i.cluster_id = c.id AND {match})"
        )
        args.extend(match_args)
    if where.feed:
        feed_ids = find_feeds(store, where.feed)
        sql += (
            " AND EXISTS (SELECT 1 FROM items i WHERE i.cluster_id = c.id"
            f" AND i.feed_id IN ({','.join('?' * len(feed_ids))}))"
        )
        args.extend(feed_ids)
    if where.query:
        match, match_args = match_condition(store, where.query)
        sql += f" AND EXISTS (SELECT 1 FROM items i WHERE i.cluster_id = c.id AND {match})"
        args.extend(match_args)
    return sql, args


def ascii_lower(text: str) -> str:
    """`text` with A-Z as a-z only: what SQLite's lower() does, and PostgreSQL's on the
    schema's COLLATE "C" columns. Applied to a value in Python, it compares with lower()
    of a column on both backends alike (PostgreSQL's lower() of a parameter would follow
    the database's locale and fold "É" too)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def find_feeds(store: Store, name_or_url: str) -> list[int]:
    """Ids of the feeds called `name_or_url` (feeds.yaml name or the feed's own title, A-Z
    in any case) or at that URL; an AggregatorError naming the fix when there is none."""
    ids = [
        r[0]
        for r in store.conn.execute(
            """SELECT id FROM feeds WHERE url = ? OR lower(name) = ?
               OR (name IS NULL AND lower(title) = ?) ORDER BY id""",
            (name_or_url, ascii_lower(name_or_url), ascii_lower(name_or_url)),
        )
    ]
    if not ids:
        raise AggregatorError(
            f"no feed named or at {name_or_url!r}; see the names with `aggregator feeds list`"
        )
    return ids


def _run_filtered(store: Store, sql: str, args: list, where: ClusterFilter | None) -> list[int]:
    try:
        return [r[0] for r in store.conn.execute(sql, args)]
    except sqlite3.OperationalError as exc:
        if where and where.query and is_query_error(exc):
            raise explain(where.query, exc) from None
        raise


def list_clusters(
    store: Store,
    since: datetime | None = None,
    min_size: int = 1,
    limit: int | None = 50,
    where: ClusterFilter | None = None,
) -> list[ClusterView]:
    """Clusters active since `since`, newest first, with their members; with `where`,
    only the clusters it keeps."""
    sql = """SELECT c.id FROM clusters c WHERE c.size >= ?"""
    args: list = [min_size]
    if since is not None:
        sql += " AND c.last_seen >= ?"
        args.append(since.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if where and where.query:
        catch_up(store)
    with store.snapshot():
        extra, extra_args = _filter_sql(store, where)
        sql += extra + " ORDER BY c.last_seen DESC, c.id DESC"
        args += extra_args
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        ids = _run_filtered(store, sql, args, where)
        return _load(store, ids)


def count_clusters(store: Store, min_size: int = 1, before: datetime | None = None) -> int:
    """Clusters of at least `min_size` items (last active before `before`)."""
    sql, args = "SELECT count(*) FROM clusters WHERE size >= ?", [min_size]
    if before is not None:
        sql += " AND last_seen < ?"
        args.append(before.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return store.conn.execute(sql, args).fetchone()[0]


def get_cluster(
    store: Store, cluster_id: int, where: ClusterFilter | None = None
) -> ClusterView | None:
    """One cluster with its members; None if there is none with that id (or, with
    `where`, if the filter does not keep it)."""
    if where and where.query:
        catch_up(store)
    with store.snapshot():
        extra, args = _filter_sql(store, where)
        if extra and not _run_filtered(
            store, f"SELECT c.id FROM clusters c WHERE c.id = ?{extra}", [cluster_id, *args], where
        ):
            return None
        found = _load(store, [cluster_id])
    return found[0] if found else None


# The digest's and the page's lede: the representative's opening words.
LEDE_WORDS = 60



def lede(text: str, words: int = LEDE_WORDS, more: bool = False) -> str:
    """The first `words` words of a text, on one line, with "…" when it goes on (`more`:
    the text was cut before it reached us)."""
    parts = text.split()
    cut = len(parts) > words or (more and bool(parts))
    return " ".join(parts[:words]) + (" …" if cut else "")


def reader_link(canonical: str | None, published: str | None) -> str | None:
    """The link a reader follows: the canonical one (tracking parameters removed), with
    the published link's #fragment, which canonical URLs drop (a hash-routed page,
    `site/#/article/1`, needs it)."""
    if not canonical:
        return published
    if published and "#" in published and "#" not in canonical:
        return canonical + "#" + published.split("#", 1)[1]
    return canonical


def outlet_lines(members: Sequence[MemberView]) -> list[MemberView]:
    """One member per outlet, headline and link, the earliest, in time order: an outlet's
    Atom and JSON feeds of one post are one source and one line (the digest and the page)."""
    seen: dict[tuple, MemberView] = {}
    for m in members:
        seen.setdefault((m.feed, m.title, m.url), m)
    return list(seen.values())


def _load(store: Store, ids: list[int]) -> list[ClusterView]:
    if not ids:
        return []
    conn = store.conn
    marks = ",".join("?" * len(ids))
    clusters = {
        r[0]: r
        for r in conn.execute(
            f"""SELECT c.id, c.size, c.feed_count, c.first_seen, c.last_seen, c.representative_id,
                       i.title, i.canonical_url, i.url, c.updated_at, substr(i.text, 1, 2000),
                       length(i.text) > 2000
                FROM clusters c LEFT JOIN items i ON i.id = c.representative_id
                WHERE c.id IN ({marks})""",
            ids,
        )
    }
    members: dict[int, list[tuple]] = {cid: [] for cid in clusters}
    for row in conn.execute(
        f"""SELECT i.cluster_id, i.id, {_FEED_NAME}, i.title, i.canonical_url, i.published_at,
                   s.kind, s.size, s.lede_size, s.full, s.lede,
                   CASE WHEN i.changed_at > i.first_seen_at THEN i.changed_at END, i.url
            FROM items i JOIN feeds f ON f.id = i.feed_id
            LEFT JOIN signatures s ON s.item_id = i.id
            WHERE i.cluster_id IN ({marks}) ORDER BY i.published_at, i.id""",
        ids,
    ):
        members[row[0]].append(row)
    views = []
    for cid in ids:
        if cid not in clusters:
            continue
        _, size, feeds, first, last, rep_id, title, canonical, url, _, text, cut = clusters[cid]
        rows = members[cid]
        # the story last changed when its latest report was published or a member's text
        # changed (not when a poll stored them: a first fetch stores everything at once)
        changes = [from_iso(last), *(from_iso(r[11]) for r in rows if r[11])]
        sigs = {r[1]: (r[6], r[9]) for r in rows if r[9] is not None}  # kind, full MinHash
        rep_sig = sigs.get(rep_id)
        items = tuple(
            MemberView(
                id=r[1],
                feed=r[2],
                title=r[3],
                url=reader_link(r[4], r[12]),
                published=from_iso(r[5]),
                similarity=_similarity(rep_sig, sigs.get(r[1]), r[1] == rep_id),
                link=r[12],
            )
            for r in rows
        )
        views.append(
            ClusterView(cid, size, feeds, title or "", reader_link(canonical, url), from_iso(first),
                        from_iso(last), items, max(changes), lede(text or "", more=bool(cut)))  # fmt: skip
        )
    return views


def _similarity(rep: tuple[int, bytes] | None, sig: tuple[int, bytes] | None, is_rep: bool) -> float | None:
    """dedup.jaccard of two stored signatures (the share of equal 32-bit MinHash values),
    read from their blobs without numpy, so that read-only commands never import it."""
    if is_rep:
        return 1.0
    if rep is None or sig is None or rep[0] != sig[0] or len(rep[1]) != len(sig[1]) or not rep[1]:
        return None
    a, b = memoryview(rep[1]).cast("I"), memoryview(sig[1]).cast("I")
    return round(sum(x == y for x, y in zip(a, b, strict=True)) / len(a), 3)


def digest_clusters(
    store: Store,
    since: datetime,
    limit: int,
    min_size: int = 1,
    tags: tuple[str, ...] = (),
    now: datetime | None = None,
    rank: tuple[float, float] = (1.0, 12 * 3600.0),
    query: str = "",
    page_tags: tuple[str, ...] = (),
) -> tuple[list[ClusterView], int]:
    """(The `limit` best-ranked clusters, how many matched) of those active (a member joined or changed) since `since`
    (ranking.story_score with `rank` = (sources weight, recency seconds), ties to the newer
    story); with `tags` (and again with `page_tags`), only clusters carried by a feed with
    one of the tags; with `query`, only those whose title or a member's headline contains it
    (ASCII case ignored)."""
    sql = f"""SELECT c.id, c.last_seen,
                     (SELECT count(DISTINCT {_FEED_NAME}) FROM items i JOIN feeds f ON f.id = i.feed_id
                      WHERE i.cluster_id = c.id)
              FROM clusters c WHERE c.updated_at >= ? AND c.size >= ?"""
    extra, extra_args = digest_filter_sql(store, "i.cluster_id = c.id", (tags, page_tags), query)
    args: list = [since.strftime("%Y-%m-%dT%H:%M:%SZ"), min_size, *extra_args]
    with store.snapshot():
        best, matched = ranked_ids(store, sql + extra, args, now or since, rank, limit)
        return _load(store, best), matched


def digest_filter_sql(
    store: Store, members: str, tag_sets: Sequence[Sequence[str]], query: str
) -> tuple[str, list]:
    """The digest's filters as SQL conditions (each starting with AND) on the items
    `members` selects (a condition on `i`): a member from a feed with one of the tags of
    each non-empty set, and a member's headline containing `query` (ASCII case ignored)."""
    sql, args = "", []
    for wanted in tag_sets:
        if wanted:
            match, match_args = tags_sql(wanted)
            sql += (
                f" AND EXISTS (SELECT 1 FROM items i JOIN feeds f ON f.id = i.feed_id, {store.dialect.json_values.format('f.tags')}"
                f" WHERE {members} AND {match})"
            )
            args.extend(match_args)
    if query:
        contains = store.dialect.contains.format("lower(i.title)", "?")
        sql += f" AND EXISTS (SELECT 1 FROM items i WHERE {members} AND {contains})"
        args.append(ascii_lower(query))
    return sql, args


def ranked_ids(
    store: Store, sql: str, args: list, now: datetime, rank: tuple[float, float], limit: int
) -> tuple[list[int], int]:
    """(The ids of the `limit` best rows of `sql`, how many rows) for rows of (id, latest
    report, outlets), ranked by ranking.story_score, ties to the newer, then higher id."""
    scored = [
        (story_score(outlets, from_iso(latest), now, *rank), latest, rid)
        for rid, latest, outlets in store.conn.execute(sql, args)
    ]
    scored.sort(reverse=True)
    return [rid for _, _, rid in scored[:limit]], len(scored)


def feed_tags(store: Store) -> list[str]:
    """Every tag of the feeds followed (the page's tag menu)."""
    tags = store.dialect.json_values.format("f.tags")
    rows = store.conn.execute(f"SELECT DISTINCT t.value FROM feeds f, {tags} WHERE f.active = 1")
    return sorted(str(r[0]) for r in rows)


def feed_json(row: dict) -> dict:
    """The documented `feeds list --json` shape of one feeds row (with its item count);
    `name` is feeds.yaml's, else the feed's own title, else null (aggregator/store/migrations/sqlite/013:
    feeds.name also falls back to the URL)."""
    return {
        "id": row["id"], "url": row["url"], "name": row["configured_name"] or row["title"],
        "tags": json.loads(row["tags"]), "active": bool(row["active"]), "status": row["status"],
        "last_fetch": row["last_fetch_at"], "last_error": row["last_error"],
        "error_count": row["error_count"], "next_fetch": row["next_fetch_at"],
        "moved_to": row["moved_to"], "items": row["items"],
    }  # fmt: skip


def feed_rows(store: Store) -> list[dict]:
    return store.feed_summaries()


__all__ = [
    "ClusterFilter", "ClusterView", "MemberView", "DedupSettings", "list_clusters", "get_cluster",
]


def cluster_tags(store: Store, cluster_ids: list[int]) -> dict[int, frozenset[str]]:
    """Per cluster, the tags (feeds.yaml) of the feeds that carried it: the web view's
    `?tag=` filter works on these without going back to the database."""
    if not cluster_ids:
        return {}
    out: dict[int, set[str]] = {cid: set() for cid in cluster_ids}
    marks = ",".join("?" * len(cluster_ids))
    for cid, tag in store.conn.execute(
        f"""SELECT DISTINCT i.cluster_id, t.value
            FROM items i JOIN feeds f ON f.id = i.feed_id, {store.dialect.json_values.format('f.tags')}
            WHERE i.cluster_id IN ({marks})""",
        cluster_ids,
    ):
        out[cid].add(str(tag))
    return {cid: frozenset(tags) for cid, tags in out.items()}
