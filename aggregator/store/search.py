"""Full-text search over stored items, with results grouped by story cluster. Plain
records out; rendering is the CLI's job.

One query language on both backends, FTS5's (see fts_query): on SQLite the `items_fts`
index of aggregator/store/migrations/sqlite/003 and 005 runs it as it is; on PostgreSQL
search_postgres.py translates it to a tsquery over `items_search`. This module ranks,
groups and assembles the results for both."""

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

# Where SQLite's snippet()/highlight() and PostgreSQL's ts_headline() mark a match. Control
# characters: normalising removes them from stored text, and output.safe() removes any that
# slip through, so feed text can neither fake a marker nor survive as one.
MARK_START, MARK_END = "\x02", "\x03"
_MARKS = re.compile(f"([{MARK_START}{MARK_END}])")
log = logging.getLogger(__name__)

# Signs of FTS5 query syntax; a query without them is a list of plain words. A colon
# counts only after a column name, so "12:30" stays plain.
_SYNTAX = re.compile(
    r'["*()^]|(?:^|[\s(-])(?:title|text|\{[\w\s]*\})\s*:|(?:^|\s)(?:AND|OR|NOT|NEAR)(?:\s|\(|$)'
)


class SearchError(AggregatorError):
    """A search query the database cannot run: not valid FTS5 syntax, or (PostgreSQL)
    syntax tsquery cannot express."""


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


def syntax_hint() -> str:
    """The end of every bad-query message: what to write instead."""
    return 'use plain words, or FTS5 syntax such as "exact phrase", bridg*, title:strike, flood NOT river'


def explain(text: str, exc: sqlite3.OperationalError) -> SearchError:
    """A clear message for a query FTS5 rejected."""
    return SearchError(f"cannot search for {text!r}: {exc}; {syntax_hint()}")


def search(
    store: Store, text: str, since: datetime | None = None, limit: int | None = 20
) -> list[ClusterHit]:
    """Clusters with items matching `text` (published since `since`), best match first;
    every matching item of each, best first.

    With a `limit`, only the newest CANDIDATES matching items (by id, the order they were
    stored in) are ranked: FTS5 computes bm25 for every row it returns, so a word that
    most of 1M items contain cost over a second to rank in full (ts_rank_cd likewise reads
    every match's document). A query matching fewer items (the usual case) gets exactly the
    full ranking; a more common one gets the best clusters among the newest matches, and
    lists those matches only."""
    query = fts_query(text)
    catch_up(store)
    if store.on_file:
        rank, show = _ranked, _shown
    else:
        from . import search_postgres

        query = search_postgres.translate(store, query, text)
        if query is None:
            return []
        rank, show = search_postgres.ranked, search_postgres.shown
    try:
        with store.snapshot():
            ranked = rank(store, query, since, limit, CANDIDATES if limit else None)
            if not ranked:
                return []
            shown = show(store, query, [r[2] for r in ranked])
            clusters = _clusters(store, list(dict.fromkeys(r[0] for r in ranked)))
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


def _ranked(
    store: Store, query: str, since: datetime | None, limit: int | None, candidates: int | None
) -> list[tuple]:
    """(cluster id, its best score, item id, the item's score) of the newest `candidates`
    matches (None: all), best cluster first and each cluster's matches best first; scores
    are bm25 negated, so that higher is better."""
    conn = store.conn
    rank = f"-bm25(items_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT})"
    cutoff = conn.execute(
        """SELECT min(rowid) FROM (SELECT rowid FROM items_fts WHERE items_fts MATCH ?
                                   ORDER BY rowid DESC LIMIT ?)""",
        (query, candidates or -1),
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
    return conn.execute(
        f"""WITH hits AS MATERIALIZED (
                SELECT i.cluster_id AS cluster_id, i.id AS id, {rank} AS score
                FROM items_fts JOIN items i ON i.id = items_fts.rowid WHERE {where}),
            top AS (
                SELECT cluster_id, max(score) AS best FROM hits
                GROUP BY cluster_id ORDER BY best DESC, cluster_id LIMIT ?)
            SELECT top.cluster_id, top.best, hits.id, hits.score
            FROM top JOIN hits ON hits.cluster_id = top.cluster_id
            ORDER BY top.best DESC, top.cluster_id, hits.score DESC, hits.id""",
        [*args, limit or -1],
    ).fetchall()


def _shown(store: Store, query: str, item_ids: list[int]) -> dict[int, tuple]:
    """Per item: feed, title, url, published, the title marked up, a snippet of the text."""
    # the rowid range keeps FTS5 from walking every match to find these few
    return {
        r[0]: r[1:]
        for r in store.conn.execute(
            f"""SELECT i.id, coalesce(f.name, f.title, f.url), i.title, i.url, i.published_at,
                       highlight(items_fts, 0, '{MARK_START}', '{MARK_END}'),
                       snippet(items_fts, 1, '{MARK_START}', '{MARK_END}', '…', {SNIPPET_WORDS})
                FROM items_fts JOIN items i ON i.id = items_fts.rowid
                JOIN feeds f ON f.id = i.feed_id
                WHERE items_fts MATCH ? AND items_fts.rowid BETWEEN ? AND ?
                  AND items_fts.rowid IN (SELECT value FROM json_each(?))""",
            (query, min(item_ids), max(item_ids), json.dumps(item_ids)),
        )
    }


def _clusters(store: Store, ids: list[int]) -> dict[int, tuple]:
    """The clusters' rows: id, size, feeds, the representative's title and url, first and
    last seen."""
    listed = "(SELECT value FROM json_each(?))" if store.on_file else "(SELECT unnest(CAST(? AS bigint[])))"
    return {
        r[0]: r
        for r in store.conn.execute(
            f"""SELECT c.id, c.size, c.feed_count, r.title, r.url, c.first_seen, c.last_seen
                FROM clusters c LEFT JOIN items r ON r.id = c.representative_id
                WHERE c.id IN {listed}""",
            (json.dumps(ids) if store.on_file else ids,),
        )
    }


def _score(relevance: float) -> float:
    """A relevance (higher is better) to 3 significant digits: a word most items contain
    scores ~1e-6 with bm25, which rounding to 3 decimals showed as 0.0."""
    return float(f"{relevance:.3g}") + 0.0  # + 0.0: no "-0.0" in the JSON


def _segments(marked: str | None) -> Highlighted:
    """SQLite's marked-up text -> (text, is_match) segments."""
    if not marked:
        return ()
    segments: list[tuple[str, bool]] = []
    inside = False
    for part in _MARKS.split(marked):
        if part == MARK_START:
            inside = True
        elif part == MARK_END:
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
    except _read_only(store) as exc:
        log.warning("%s: the newest items are not searchable yet (%s)", store.name, exc)


def _read_only(store: Store) -> tuple[type[Exception], ...]:
    """What a database we may only read raises when catch_up writes: SQLite's read-only
    or busy file; PostgreSQL's missing privilege, or a read-only standby."""
    if store.on_file:
        return (sqlite3.OperationalError,)
    import psycopg.errors

    return (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction)


def match_condition(store: Store, text: str, alias: str = "i") -> tuple[str, list]:
    """An SQL condition "item `alias` matches the search `text`" and its arguments, for
    filters (`clusters list --query`). A SearchError for a query PostgreSQL cannot run;
    SQLite's reports its own when the statement runs (see explain)."""
    query = fts_query(text)
    if store.on_file:
        return f"{alias}.id IN (SELECT rowid FROM items_fts WHERE items_fts MATCH ?)", [query]
    from .search_postgres import translate

    translated = translate(store, query, text)
    if translated is None:
        return "1 = 0", []
    return (
        f"{alias}.id IN (SELECT item_id FROM items_search WHERE doc @@ CAST(? AS tsquery))",
        [translated.match],
    )
