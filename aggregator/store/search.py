"""Full-text search over stored items (the `items_fts` index of aggregator/store/migrations/sqlite/003 and 005), with
results grouped by story cluster. Plain records out; rendering is the CLI's job."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from ..errors import AggregatorError
from ..timeutil import from_iso, iso
from .database import Store

# bm25 weights of the indexed columns (title, text): a word in the headline counts double.
TITLE_WEIGHT, TEXT_WEIGHT = 2.0, 1.0
SNIPPET_WORDS = 16
# With a result limit, how many of the newest matching items `search` ranks (see there).
CANDIDATES = 10_000

# Where SQLite's snippet()/highlight() mark a match. Control characters: normalising
# removes them from stored text, and output.safe() removes any that slip through, so feed
# text can neither fake a marker nor survive as one.
_START, _END = "\x02", "\x03"
_MARKS = re.compile(f"([{_START}{_END}])")
log = logging.getLogger(__name__)

# Signs of FTS5 query syntax; a query without them is a list of plain words. A colon
# counts only after a column name, so "12:30" stays plain.
_SYNTAX = re.compile(
    r'["*()^]|(?:^|[\s(-])(?:title|text|\{[\w\s]*\})\s*:|(?:^|\s)(?:AND|OR|NOT|NEAR)(?:\s|\(|$)'
)


class SearchError(AggregatorError):
    """A search query SQLite's FTS5 cannot parse."""


# One piece of text: (text, is_match) segments, in order.
Highlighted = tuple[tuple[str, bool], ...]


@dataclass(frozen=True)
class Match:
    """One item that matched, with its matching words marked."""

    id: int
    feed: str
    title: str
    url: str | None
    published: datetime
    score: float  # relevance: bm25, negated so that higher is better
    title_marked: Highlighted
    snippet: Highlighted  # a few words of the text around the matches; () if none


@dataclass(frozen=True)
class ClusterHit:
    """A story cluster with at least one matching item, best match first."""

    id: int
    size: int
    feeds: int
    title: str  # the representative's
    url: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    score: float  # its best match's
    matches: tuple[Match, ...]

    def to_json(self) -> dict:
        """The documented shape of `search --json` (times ISO 8601 UTC; snippets with the
        matching words between « and »)."""
        return {
            "id": self.id,
            "size": self.size,
            "feeds": self.feeds,
            "title": self.title,
            "url": self.url,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "score": self.score,
            "matches": [
                {"id": m.id, "feed": m.feed, "title": m.title, "url": m.url,
                 "published": iso(m.published), "score": m.score,
                 "snippet": plain(m.snippet)}
                for m in self.matches
            ],
        }  # fmt: skip


def plain(text: Highlighted, start: str = "«", end: str = "»") -> str:
    """Highlighted text with the matches between `start` and `end` markers."""
    return "".join(f"{start}{t}{end}" if hit else t for t, hit in text)


def fts_query(text: str) -> str:
    """The user's query as FTS5 syntax. Plain words (`don't`, `covid-19`, `AT&T`) are
    quoted one by one, so punctuation never breaks the query; a query that already uses
    FTS5 syntax (quotes, `*`, `^`, parentheses, `title:`/`text:`, AND/OR/NOT/NEAR) is kept
    as is."""
    if not re.search(r"\w", text):
        raise SearchError(f"search query {text!r} has no words to look for")
    if _SYNTAX.search(text):
        return text
    return " ".join('"' + word.replace('"', '""') + '"' for word in text.split())


def is_query_error(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite rejected the FTS5 query (rather than, say, the database)."""
    return any(part in str(exc) for part in _QUERY_ERRORS)


# What SQLite says about a bad FTS5 query (any other error is about the database).
_QUERY_ERRORS = (
    "fts5", "unterminated string", "no such column", "unknown special query", "expected integer",
)


def explain(text: str, exc: sqlite3.OperationalError) -> SearchError:
    """A clear message for a query FTS5 rejected."""
    return SearchError(
        f"cannot search for {text!r}: {exc}; use plain words, or FTS5 syntax such as "
        '"exact phrase", bridg*, title:strike, flood NOT river'
    )


def search(
    store: Store, text: str, since: datetime | None = None, limit: int | None = 20
) -> list[ClusterHit]:
    """Clusters with items matching `text` (published since `since`), best match first;
    every matching item of each, best first.

    With a `limit`, only the newest CANDIDATES matching items (by id, the order they were
    stored in) are ranked: FTS5 computes bm25 for every row it returns, so a word that
    most of 1M items contain cost over a second to rank in full. A query matching fewer
    items (the usual case) gets exactly the full ranking; a more common one gets the best
    clusters among the newest matches, and lists those matches only."""
    query = fts_query(text)
    catch_up(store)
    conn = store.conn
    rank = f"bm25(items_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT})"
    try:
        with store.snapshot():
            cutoff = conn.execute(
                """SELECT min(rowid) FROM (SELECT rowid FROM items_fts WHERE items_fts MATCH ?
                                           ORDER BY rowid DESC LIMIT ?)""",
                (query, CANDIDATES if limit else -1),
            ).fetchone()[0]
            if cutoff is None:
                return []
            where = "items_fts MATCH ? AND items_fts.rowid >= ? AND i.cluster_id IS NOT NULL"
            args: list = [query, cutoff]
            if since is not None:
                where += " AND i.published_at >= ?"
                args.append(iso(since))
            # One statement ranks: bm25 computes its word statistics once per statement,
            # ~20 ms for a word in every item. bm25() cannot sit inside an aggregate, hence
            # the materialised hits.
            ranked = conn.execute(
                f"""WITH hits AS MATERIALIZED (
                        SELECT i.cluster_id AS cluster_id, i.id AS id, {rank} AS score
                        FROM items_fts JOIN items i ON i.id = items_fts.rowid WHERE {where}),
                    top AS (
                        SELECT cluster_id, min(score) AS best FROM hits
                        GROUP BY cluster_id ORDER BY best, cluster_id LIMIT ?)
                    SELECT top.cluster_id, top.best, hits.id, hits.score
                    FROM top JOIN hits ON hits.cluster_id = top.cluster_id
                    ORDER BY top.best, top.cluster_id, hits.score, hits.id""",
                [*args, limit or -1],
            ).fetchall()
            if not ranked:
                return []
            item_ids = [r[2] for r in ranked]
            # the rowid range keeps FTS5 from walking every match to find these few
            shown = {
                r[0]: r[1:]
                for r in conn.execute(
                    f"""SELECT i.id, coalesce(f.name, f.title, f.url), i.title, i.url, i.published_at,
                               highlight(items_fts, 0, '{_START}', '{_END}'),
                               snippet(items_fts, 1, '{_START}', '{_END}', '…', {SNIPPET_WORDS})
                        FROM items_fts JOIN items i ON i.id = items_fts.rowid
                        JOIN feeds f ON f.id = i.feed_id
                        WHERE items_fts MATCH ? AND items_fts.rowid BETWEEN ? AND ?
                          AND items_fts.rowid IN (SELECT value FROM json_each(?))""",
                    (query, min(item_ids), max(item_ids), json.dumps(item_ids)),
                )
            }
            ids = list(dict.fromkeys(r[0] for r in ranked))
            clusters = {
                r[0]: r
                for r in conn.execute(
                    """SELECT c.id, c.size, c.feed_count, r.title, r.url, c.first_seen, c.last_seen
                        FROM clusters c LEFT JOIN items r ON r.id = c.representative_id
                        WHERE c.id IN (SELECT value FROM json_each(?))""",
                    (json.dumps(ids),),
                )
            }
    except sqlite3.OperationalError as exc:
        if is_query_error(exc):
            raise explain(text, exc) from None
        raise
    best: dict[int, float] = {}
    matches: dict[int, list[Match]] = {}
    for cid, top_score, item_id, score in ranked:
        best[cid] = top_score
        feed, title, url, published, marked, snip = shown[item_id]
        matches.setdefault(cid, []).append(
            Match(item_id, feed, title, url, from_iso(published), _score(score),
                  _segments(marked), _segments(snip))  # fmt: skip
        )
    hits = []
    for cid, top_score in best.items():
        if cid not in clusters:  # deleted between the two queries: cannot happen in a snapshot
            continue
        _, size, feeds, title, url, first, last = clusters[cid]
        hits.append(
            ClusterHit(cid, size, feeds, title or "", url, from_iso(first), from_iso(last),
                       _score(top_score), tuple(matches[cid]))  # fmt: skip
        )
    return hits


def _score(bm25: float) -> float:
    """bm25, negated, to 3 significant digits: a word most items contain scores ~1e-6,
    which rounding to 3 decimals showed as 0.0."""
    return float(f"{-bm25:.3g}") + 0.0  # + 0.0: no "-0.0" in the JSON


def _segments(marked: str | None) -> Highlighted:
    """SQLite's marked-up text -> (text, is_match) segments."""
    if not marked:
        return ()
    segments: list[tuple[str, bool]] = []
    inside = False
    for part in _MARKS.split(marked):
        if part == _START:
            inside = True
        elif part == _END:
            inside = False
        elif part:
            segments.append((part, inside))
    return tuple(segments)


def catch_up(store: Store) -> None:
    """Index the items still waiting for the search index (aggregator/store/migrations/sqlite/005), so a
    search sees every stored item. Without write access it searches what is indexed."""
    try:
        if store.search_waiting():
            store.index_search()
    except sqlite3.OperationalError as exc:
        log.warning("%s: the newest items are not searchable yet (%s)", store.name, exc)


def match_ids_sql(alias: str = "i") -> str:
    """An SQL condition "item `alias` matches the FTS query bound to `?`", for filters."""
    return f"{alias}.id IN (SELECT rowid FROM items_fts WHERE items_fts MATCH ?)"
