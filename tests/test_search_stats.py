"""Everyday use through the real CLI as a subprocess: `search`, `stats`, the cluster
filters (--tag/--feed/--query), the read-only views, piped/terminal/JSON output and the
examples in every `--help`. Feeds come from a real local HTTP server (tests/feedserver.py).
Each test that reads or writes a database runs on SQLite and on PostgreSQL (conftest.py:
`db_target`; the module's shared world is built once per backend), except those about an
SQLite-only part, which say so.

The world (published hours ago; first seen days ago, set after the fetch):

    story    wire (tags world, wire)   daily (tag local)       echo (tag local)
    bridge   w1  5h, first seen 20d    d1  4h, 3d              e1 3h, now
    rail     w2 30h, 20d               d3 29h, 10d             e2 28h, now
    library  w3  6h, 20d
    cafe                               d2  2h, 10d
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path

import pytest
from backends import BACKENDS
from feedserver import FeedServer
from pgserver import PostgresServer

from aggregator.cli import build_parser
from aggregator.store.database import Store
from aggregator.store.postgres import to_psycopg
from aggregator.store.search import fts_query, search
from aggregator.store.upkeep import maintain, merge_search_segments, prune
from aggregator.timeutil import iso, utcnow

DATA = Path(__file__).parent / "data" / "dedup"
ROOT = Path(__file__).resolve().parents[1]
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
CAFE_TEXT = (
    "Don't expect the old café on Quay Lane to reopen soon, the owners said, after the "
    "zeppelin-themed tea room failed its fire inspection for a second time this spring. "
    "Regulars have started a petition and a weekly picnic outside the shuttered door."
)


def article(name: str) -> tuple[str, str]:
    """(headline, body as HTML paragraphs) of a fixture article."""
    headline, _, body = (DATA / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    paragraphs = [p.strip() for p in body.split("\n\n") if p.strip()]
    return headline.strip(), "".join(f"<p>{escape(p, quote=False)}</p>" for p in paragraphs)


def rss(name: str, entries: list[tuple[str, str, str, datetime]]) -> bytes:
    """An RSS 2.0 feed of (guid, title, html body, published) entries."""
    items = "".join(
        f'<item><guid isPermaLink="false">{guid}</guid><title>{escape(title)}</title>'
        f"<link>https://{name}.example.com/{guid}</link>"
        f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate>"
        f"<description>{escape(body)}</description></item>"
        for guid, title, body, published in entries
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{name}</title>'
        f"<link>https://{name}.example.com/</link><description>t</description>{items}"
        "</channel></rss>"
    ).encode()


def ago(hours: float) -> datetime:
    return utcnow() - timedelta(hours=hours)


def sql(db: Path | str, query: str, *args) -> list[tuple]:
    """Rows of `query` (with ? placeholders) run on the database itself: an SQLite file or a
    postgresql:// URL, as another tool would (committed at once)."""
    if isinstance(db, Path):
        with sqlite3.connect(db) as conn:
            rows = conn.execute(query, args).fetchall()
        conn.close()
        return rows
    import psycopg

    with psycopg.connect(db, autocommit=True) as conn:
        cur = conn.execute(to_psycopg(query), args)
        return cur.fetchall() if cur.description else []


def indexed(store: Store, word: str) -> int:
    """How many items the full-text index (not the waiting list) finds `word` in."""
    if store.on_file:
        return store.conn.execute("SELECT count(*) FROM items_fts WHERE items_fts MATCH ?", (word,)).fetchone()[0]
    return store.conn.execute("SELECT count(*) FROM items_search WHERE doc @@ CAST(? AS tsquery)", (word,)).fetchone()[0]


def check_fts5(store: Store) -> None:
    """FTS5's own integrity check of items_fts against items (SQLite; PostgreSQL's index
    is a plain table with a foreign key, kept by triggers)."""
    if store.on_file:
        store.conn.execute("INSERT INTO items_fts (items_fts) VALUES ('integrity-check')")


def run(cfg: Path, db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip


def run_json(cfg: Path, db: Path | str, *args: str):
    result = run(cfg, db, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def run_on_terminal(cfg: Path, db: Path | str, *args: str) -> str:
    """Output of the CLI with stdout on a pseudo-terminal (what a person sees)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), *args],
        stdout=slave, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    return b"".join(chunks).decode()


class World:
    def __init__(self, tmp_path: Path, server: FeedServer, db: Path | str):
        self.server = server
        self.cfg = tmp_path / "feeds.yaml"
        self.db = db  # an SQLite file or a postgresql:// URL
        bridge, rail, library = article("bridge"), article("rail_strike"), article("library_fire")
        self.feeds = {
            "wire": [("w1", *bridge, ago(5)), ("w2", *rail, ago(30)), ("w3", *library, ago(6))],
            "daily": [("d1", "Bridge closure: " + bridge[0], bridge[1], ago(4)),
                      ("d2", "Quay Lane café stays shut", f"<p>{CAFE_TEXT}</p>", ago(2)),
                      ("d3", rail[0], rail[1], ago(29))],
            "echo": [("e1", bridge[0], bridge[1] + "<p>Share this story.</p>", ago(3)),
                     ("e2", rail[0] + " (updated)", rail[1], ago(28))],
        }  # fmt: skip
        tags = {"wire": "[world, wire]", "daily": "[local]", "echo": "[local]"}
        lines = ["settings:", "  timeout: 5s", "  parse_workers: 0", "  interval: 1h", "feeds:"]
        for name in self.feeds:
            self.serve(name)
            lines += [f"  - url: {self.url(name)}", f"    name: {name}", f"    tags: {tags[name]}"]
        self.cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def url(self, feed: str) -> str:
        return self.server.url(f"/{feed}.xml")

    def serve(self, feed: str) -> None:
        self.server.set(f"/{feed}.xml", rss(feed, self.feeds[feed]))

    def fetch(self) -> None:
        result = run(self.cfg, self.db, "fetch")
        assert result.returncode == 0, result.stderr
        assert "0 errors" in result.stderr, result.stderr

    def sql(self, query: str, *args) -> list[tuple]:
        return sql(self.db, query, *args)

    def item(self, guid: str) -> int:
        return self.sql("SELECT id FROM items WHERE key = ?", guid)[0][0]

    def cluster(self, guid: str) -> int:
        return self.sql("SELECT cluster_id FROM items WHERE key = ?", guid)[0][0]


def build_world(tmp_path: Path, server: FeedServer, db: Path | str) -> World:
    w = World(tmp_path, server, db)
    w.fetch()
    first_seen = {"w1": 20, "w2": 20, "w3": 20, "d1": 3, "d2": 10, "d3": 10}  # days ago
    for guid, days in first_seen.items():
        w.sql("UPDATE items SET first_seen_at = ? WHERE key = ?", iso(utcnow() - timedelta(days=days)), guid)
    return w


@pytest.fixture
def world(tmp_path: Path, feed_server: FeedServer, db_target: Path | str) -> World:
    """A world of its own, for tests that change it."""
    return build_world(tmp_path, feed_server, db_target)


@pytest.fixture(scope="module", params=BACKENDS)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world per backend for the tests that only read it (each CLI call costs a process
    start)."""
    folder = tmp_path_factory.mktemp("shared")
    pg: PostgresServer | None = None
    db: Path | str = folder / "agg.db"
    if request.param == "postgresql":
        pg = request.getfixturevalue("postgres_server")
        db = pg.new_database()
    with FeedServer() as server:
        yield build_world(folder, server, db)
    if pg is not None:
        pg.drop_database(str(db))


def test_world_clusters_as_designed(shared: World) -> None:
    c = shared.cluster
    assert c("w1") == c("d1") == c("e1")
    assert c("w2") == c("d3") == c("e2")
    assert len({c("w1"), c("w2"), c("w3"), c("d2")}) == 4


# ---------------------------------------------------------------- search


def test_search_finds_a_word_of_the_text_grouped_by_cluster(shared: World) -> None:
    hits = run_json(shared.cfg, shared.db, "search", "corroded")  # in the bridge article's body
    assert [h["id"] for h in hits] == [shared.cluster("w1")]
    (hit,) = hits
    assert set(hit) == {"id", "size", "feeds", "title", "url", "first_seen", "last_seen",
                        "score", "matches"}  # fmt: skip
    assert (hit["size"], hit["feeds"]) == (3, 3)
    assert hit["title"] == article("bridge")[0]  # the representative's (earliest published)
    assert ISO_Z.match(hit["first_seen"]) and ISO_Z.match(hit["last_seen"])
    assert {m["id"] for m in hit["matches"]} == {shared.item(g) for g in ("w1", "d1", "e1")}
    for m in hit["matches"]:
        assert set(m) == {"id", "feed", "title", "url", "published", "score", "snippet"}
        assert ISO_Z.match(m["published"])
        assert "«corroded»" in m["snippet"]
    scores = [m["score"] for m in hit["matches"]]
    assert scores == sorted(scores, reverse=True) and hit["score"] == scores[0]


def test_search_orders_clusters_by_best_match_and_honours_since_and_limit(shared: World) -> None:
    # "strike" is in the rail headline (weighted double) and the body; library mentions none
    hits = run_json(shared.cfg, shared.db, "search", "strike", "--since", "2d")
    assert hits[0]["id"] == shared.cluster("w2")
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    # rail items were published 28-30 h ago
    assert run_json(shared.cfg, shared.db, "search", "driverless", "--since", "24h") == []
    both = run_json(shared.cfg, shared.db, "search", "said", "--since", "2d")
    assert len(both) >= 2
    assert len(run_json(shared.cfg, shared.db, "search", "said", "--since", "2d", "--limit", "1")) == 1


def test_search_plain_words_are_quoted_and_diacritics_ignored(shared: World) -> None:
    cafe = shared.cluster("d2")
    assert [h["id"] for h in run_json(shared.cfg, shared.db, "search", "don't")] == [cafe]
    assert [h["id"] for h in run_json(shared.cfg, shared.db, "search", "cafe")] == [cafe]
    assert [h["id"] for h in run_json(shared.cfg, shared.db, "search", "zeppelin-themed")] == [cafe]
    # FTS5 syntax is kept: a phrase, a prefix, a column
    assert [h["id"] for h in run_json(shared.cfg, shared.db, "search", '"tea room"')] == [cafe]
    assert [h["id"] for h in run_json(shared.cfg, shared.db, "search", "zeppel*")] == [cafe]
    titled = run_json(shared.cfg, shared.db, "search", "title:driverless", "--since", "2d")
    assert [h["id"] for h in titled] == [shared.cluster("w2")]


def test_fts_query_quotes_plain_words_and_keeps_syntax() -> None:
    assert fts_query("don't  covid-19") == '"don\'t" "covid-19"'
    assert fts_query('say "hi"') == 'say "hi"'  # a phrase: FTS5 syntax, kept
    assert fts_query("at 12:30") == '"at" "12:30"'
    assert fts_query("rock and roll") == '"rock" "and" "roll"'
    for syntax in ("rock AND roll", "title:strike", "bridg*", "NEAR(a b)", "{title text}: x"):
        assert fts_query(syntax) == syntax


@pytest.mark.parametrize("query", ["title:(bridge", "corroded AND", '"unclosed', "!!!"])
def test_search_syntax_error_is_a_clear_message(shared: World, query: str) -> None:
    result = run(shared.cfg, shared.db, "search", query)
    assert result.returncode == 2
    assert result.stderr.startswith("aggregator: ")
    assert "Traceback" not in result.stderr
    assert query in result.stderr


def test_search_piped_is_tsv_and_terminal_is_highlighted_without_feed_escapes(world: World) -> None:
    piped = run(world.cfg, world.db, "search", "corroded")
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert lines[0].split("\t") == ["cluster", "size", "feeds", "item", "feed", "published",
                                    "score", "title", "snippet"]  # fmt: skip
    assert len(lines) == 4 and all(len(line.split("\t")) == 9 for line in lines)
    assert "\x1b" not in piped.stdout and "«corroded»" in piped.stdout
    assert all(ISO_Z.match(line.split("\t")[5]) for line in lines[1:])

    # another tool wrote escape sequences into an item; they must not reach the terminal
    world.sql(
        "UPDATE items SET title = ?, text = text || ? WHERE key = 'd2'",
        "Quay Lane \x1b[31mcafé\x1b]0;pwned\x07 stays shut", " The \x1b[2Jzeppelin returns.",
    )
    shown = run_on_terminal(world.cfg, world.db, "search", "zeppelin", "--since", "2d")
    assert "\x1b[1mzeppelin\x1b[0m" in shown
    assert "\x1b[31m" not in shown and "\x1b]0;" not in shown and "\x1b[2J" not in shown
    assert re.search(r"\d+h ago", shown)  # relative times on a terminal


def test_fts_follows_updated_and_pruned_items(world: World) -> None:
    """The search index (FTS5 on SQLite, items_search on PostgreSQL) follows edits and
    retention."""
    # the café item changes: its new words are found, its old ones no longer
    world.feeds["daily"][1] = ("d2", "Quay Lane café reopens", "<p>The dirigible parlour is back.</p>", ago(1))
    world.serve("daily")
    world.fetch()
    assert [h["id"] for h in run_json(world.cfg, world.db, "search", "dirigible")] == [world.cluster("d2")]
    assert run_json(world.cfg, world.db, "search", "zeppelin") == []
    # retention removes the wire items (first seen 20 days ago) from the index too
    store = Store.open(world.db)
    try:
        assert prune(store, utcnow() - timedelta(days=15)) == (3, 1)  # w1, w2, w3; library gone
        assert search(store, "Millbrook", None) == []
        check_fts5(store)
    finally:
        store.close()
    hits = run_json(world.cfg, world.db, "search", "corroded")
    assert {m["id"] for h in hits for m in h["matches"]} == {world.item("d1"), world.item("e1")}


def test_migration_indexes_items_stored_before_it(older_schema) -> None:
    """A database from before full-text search is backfilled when it is opened. SQLite only:
    PostgreSQL's schema starts at version 13, search included."""
    db, old = older_schema(2)
    store = Store.open(db, migrations_dir=old)
    try:
        c = store.conn
        c.execute("INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'a', '2026-01-01T00:00:00Z')")
        c.execute("INSERT INTO clusters (id, representative_id, size, feed_count, created_at) VALUES (1, 1, 1, 1, '2026-01-01T00:00:00Z')")
        c.execute(
            """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                  changed_at, content_hash, cluster_id)
               VALUES (1, 1, 'k', 'Old news', 'An archived walrus.', '2026-01-01T00:00:00Z',
                       '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'h', 1)"""
        )  # fmt: skip
    finally:
        store.close()
    store = Store.open(db)
    try:
        (hit,) = search(store, "walrus", None)
        assert hit.id == 1 and [m.id for m in hit.matches] == [1]
    finally:
        store.close()


def test_search_index_is_filled_in_batches_and_never_misses_a_stored_item(db_target: Path | str) -> None:
    """Items wait in search_pending (aggregator/store/migrations/sqlite/005) until a batch indexes them; a
    search indexes what waits first, and deleting or editing a waiting item or an indexed
    one keeps the index exact."""
    store = Store.open(db_target)
    c = store.conn
    try:
        with store.transaction():
            c.execute("INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'a', '2026-01-01T00:00:00Z')")
            c.execute("INSERT INTO clusters (id, representative_id, size, feed_count, created_at) VALUES (1, 1, 3, 1, '2026-01-01T00:00:00Z')")
            for n, word in enumerate(["walrus", "narwhal", "puffin"], 1):
                c.execute(
                    """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                          changed_at, content_hash, cluster_id)
                       VALUES (?, 1, ?, ?, 'Seen on the quay.', '2026-01-01T00:00:00Z',
                               '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', ?, 1)""",
                    (n, f"k{n}", f"A {word} again", f"h{n}"),
                )  # fmt: skip
        waiting = "SELECT item_id FROM search_pending ORDER BY item_id"
        assert [r[0] for r in c.execute(waiting)] == [1, 2, 3]
        assert indexed(store, "quay") == 0
        # one indexed by a batch, one deleted and one edited while waiting
        assert store.index_search(batch=1) == 3  # one item per transaction, all of them
        with store.transaction():
            c.execute("INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at, changed_at, content_hash, cluster_id) VALUES (4, 1, 'k4', 'A gannet', 'Quay.', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'h4', 1)")
            c.execute("INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at, changed_at, content_hash, cluster_id) VALUES (5, 1, 'k5', 'A tern', 'Quay.', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'h5', 1)")
            c.execute("DELETE FROM items WHERE id = 4")  # waiting
            c.execute("UPDATE items SET title = 'A skua' WHERE id = 5")  # waiting
            c.execute("DELETE FROM items WHERE id = 1")  # indexed
            c.execute("UPDATE items SET title = 'A cormorant' WHERE id = 2")  # indexed
        assert [r[0] for r in c.execute(waiting)] == [2, 5]
        found = {w: sorted(m.id for h in search(store, w, None) for m in h.matches)
                 for w in ["walrus", "narwhal", "cormorant", "puffin", "gannet", "tern", "skua", "quay"]}  # fmt: skip
        assert found == {"walrus": [], "narwhal": [], "cormorant": [2], "puffin": [3], "gannet": [],
                         "tern": [], "skua": [5], "quay": [2, 3, 5]}  # fmt: skip
        assert c.execute(waiting).fetchall() == []  # the search indexed what waited
        assert indexed(store, "quay") == 3
        check_fts5(store)
    finally:
        store.close()


def test_maintenance_merges_the_search_index_and_search_still_finds_everything(tmp_path: Path) -> None:
    """The write path leaves up to 16 index segments per level (aggregator/store/migrations/sqlite/008); the
    hourly maintain() merges them in small steps, and every item stays findable. SQLite
    only: FTS5's segments (PostgreSQL's GIN index needs no merging by us)."""
    store = Store.open(tmp_path / "a.db")
    c = store.conn
    try:
        automerge = c.execute("SELECT v FROM items_fts_config WHERE k = 'automerge'").fetchone()
        assert automerge == (16,)
        with store.transaction():
            c.execute("INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'a', '2026-01-01T00:00:00Z')")
            c.execute("INSERT INTO clusters (id, representative_id, size, feed_count, created_at) VALUES (1, 1, 60, 1, '2026-01-01T00:00:00Z')")
            c.executemany(
                """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                      changed_at, content_hash, cluster_id)
                   VALUES (?, 1, ?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',
                           '2026-01-01T00:00:00Z', ?, 1)""",
                [(n, f"k{n}", f"Item {n} walrus", f"word{n} quay", f"h{n}") for n in range(1, 61)],
            )  # fmt: skip
        assert store.index_search(batch=1) == 60  # one segment per item
        segments = "SELECT count(*) FROM items_fts_data"
        before = c.execute(segments).fetchone()[0]
        assert merge_search_segments(store) >= 1
        assert c.execute(segments).fetchone()[0] < before
        assert merge_search_segments(store) == 0  # nothing left: returns at once
        maintain(store)
        assert len({m.id for h in search(store, "walrus", None) for m in h.matches}) == 60
        assert [m.id for h in search(store, "word37", None) for m in h.matches] == [37]
        c.execute("INSERT INTO items_fts (items_fts) VALUES ('integrity-check')")
    finally:
        store.close()


def test_search_ranks_the_newest_matches_of_a_very_common_word(
    db_target: Path | str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact ranking while fewer items match than search.CANDIDATES; beyond that, the best
    clusters among the newest CANDIDATES matches, with those matches only."""
    store = Store.open(db_target)
    c = store.conn
    try:
        with store.transaction():
            c.execute("INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'a', '2026-01-01T00:00:00Z')")
            for n in range(1, 7):
                c.execute("INSERT INTO clusters (id, representative_id, size, feed_count, created_at) VALUES (?, ?, 2, 1, '2026-01-01T00:00:00Z')", (n, n))
            # items 1-6 and their copies 7-12 in clusters 1-6; more "quay" ranks higher
            for n in range(1, 13):
                cluster = (n - 1) % 6 + 1
                c.execute(
                    """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                          changed_at, content_hash, cluster_id)
                       VALUES (?, 1, ?, 'News', ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',
                               '2026-01-01T00:00:00Z', ?, ?)""",
                    (n, f"k{n}", " ".join(["quay"] * (n % 5 + 1) + ["harbour"] * 8), f"h{n}", cluster),
                )  # fmt: skip
            for n in range(13, 40):  # items without the word, so that it has weight
                c.execute(
                    """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                          changed_at, content_hash)
                       VALUES (?, 1, ?, 'News', 'Harbour', '2026-01-01T00:00:00Z',
                               '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', ?)""",
                    (n, f"k{n}", f"h{n}"),
                )  # fmt: skip
        full = search(store, "quay", None, None)
        assert len(full) == 6 and sum(len(h.matches) for h in full) == 12
        monkeypatch.setattr("aggregator.store.search.CANDIDATES", 12)
        assert search(store, "quay", None, 4) == full[:4]
        monkeypatch.setattr("aggregator.store.search.CANDIDATES", 5)  # items 8-12
        newest = search(store, "quay", None, 3)
        expected = []
        for hit in full:
            kept = tuple(m for m in hit.matches if m.id >= 8)
            if kept:
                expected.append((hit.id, [m.id for m in kept], kept[0].score))
        expected.sort(key=lambda e: (-e[2], e[0]))
        assert [(h.id, [m.id for m in h.matches], h.score) for h in newest] == expected[:3]
        assert [h.id for h in newest] != [h.id for h in full[:3]]
    finally:
        store.close()


def test_search_backlog_hint_resets_when_another_process_indexed(db_target: Path | str) -> None:
    """The daemon's count of items waiting for the index is only a hint: when a CLI
    search has indexed them meanwhile, the next index_search finds nothing and resets it
    (otherwise every later feed write would trigger a needless index run)."""
    from aggregator.records import Item

    daemon = Store.open(db_target)
    try:
        with daemon.transaction():
            daemon.conn.execute("INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'a', '2026-01-01T00:00:00Z')")
            now = utcnow()
            daemon.insert_items(1, [Item(key=f"k{n}", url=None, canonical_url=None, title=f"Walrus {n}",
                                         text="On the quay.", author=None, published=now, updated=None,
                                         content_hash=f"h{n}") for n in range(3)], now)  # fmt: skip
        assert daemon.search_backlog == 3
        cli = Store.open(db_target)
        try:
            assert cli.index_search() == 3
        finally:
            cli.close()
        assert daemon.index_search() == 0 and daemon.search_backlog == 0
    finally:
        daemon.close()


# ---------------------------------------------------------------- stats


def test_stats_numbers(shared: World) -> None:
    stats = run_json(shared.cfg, shared.db, "stats")
    assert set(stats) == {"feeds", "items", "clusters", "duplicates", "largest_clusters_24h",
                          "database", "per_feed"}  # fmt: skip
    assert stats["feeds"] == {"total": 3, "ok": 3, "failing": 0, "dead": 0, "new": 0, "inactive": 0}
    assert (stats["items"], stats["clusters"]) == (8, 4)
    # not their cluster's first-seen member: d1 (3d), d3 (10d), e1 (now), e2 (now)
    assert stats["duplicates"] == {"today": 2, "7d": 3, "all": 4}
    # rail (3 items) was last published 28 h ago; singletons are not listed
    (largest,) = stats["largest_clusters_24h"]
    assert largest["id"] == shared.cluster("w1") and (largest["size"], largest["feeds"]) == (3, 3)
    assert largest["title"] == article("bridge")[0] and ISO_Z.match(largest["last_seen"])
    database = stats["database"]
    if isinstance(shared.db, Path):  # the file and its WAL
        assert database["path"] == str(shared.db)
        assert database["db_bytes"] == shared.db.stat().st_size > 0
        assert database["bytes"] == database["db_bytes"] + database["wal_bytes"]
    else:  # pg_database_size(); the server's WAL is not one database's
        assert database["path"] == shared.db
        (size,) = shared.sql("SELECT pg_database_size(current_database())")[0]
        assert database["bytes"] == database["db_bytes"] > 0 and abs(size - database["bytes"]) < 1_000_000
        assert database["wal_bytes"] is None
    per_feed = [(f["name"], f["items"], f["republished"], f["republished_share"])
                for f in stats["per_feed"]]  # fmt: skip
    # echo: both its stories were first reported by wire; daily: bridge and rail (not café)
    assert per_feed == [("echo", 2, 2, 1.0), ("daily", 3, 2, 0.667), ("wire", 3, 0, 0.0)]
    assert {f["state"] for f in stats["per_feed"]} == {"ok"}


def test_stats_counts_failing_and_inactive_feeds(world: World) -> None:
    world.server.set("/echo.xml", b"<html>gone fishing</html>")
    text = world.cfg.read_text(encoding="utf-8")
    world.cfg.write_text(text.split(f"  - url: {world.url('wire')}")[0]
                         + text.split("tags: [world, wire]\n")[1], encoding="utf-8")  # fmt: skip
    assert run(world.cfg, world.db, "fetch").returncode == 0
    stats = run_json(world.cfg, world.db, "stats")
    assert stats["feeds"] == {"total": 3, "ok": 1, "failing": 1, "dead": 0, "new": 0, "inactive": 1}
    assert {f["name"]: f["state"] for f in stats["per_feed"]} == {
        "wire": "inactive", "daily": "ok", "echo": "failing"}  # fmt: skip


def test_stats_piped_is_tsv_blocks_and_terminal_is_readable(shared: World) -> None:
    piped = run(shared.cfg, shared.db, "stats")
    assert piped.returncode == 0, piped.stderr
    assert "\x1b" not in piped.stdout
    blocks = [b.splitlines() for b in piped.stdout.strip("\n").split("\n\n")]
    assert [b[0] for b in blocks] == ["metric\tvalue", "id\tsize\tfeeds\tlast seen\ttitle",
                                      "id\tfeed\tstate\titems\trepublished\tshare"]  # fmt: skip
    metrics = dict(line.split("\t") for line in blocks[0][1:])
    assert metrics["items"] == "8" and metrics["duplicates removed all"] == "4"
    assert int(metrics["database size"]) > 0
    # the file and its WAL on SQLite; PostgreSQL has no WAL of one database to show
    assert ("database wal" in metrics) == ("database file" in metrics) == isinstance(shared.db, Path)
    assert ISO_Z.match(blocks[1][1].split("\t")[3])
    assert blocks[2][1].split("\t")[1:] == ["echo", "ok", "2", "2", "1.0"]

    shown = run_on_terminal(shared.cfg, shared.db, "stats")
    assert re.search(r"database size\s+\d+\.\d (kB|MB)", shown)
    assert re.search(r"echo\s+ok\s+2\s+2\s+100%", shown)
    assert re.search(r"\d+h ago", shown)


# ---------------------------------------------------------------- cluster filters


def ids(world: World, *args: str) -> set[int]:
    found = run_json(world.cfg, world.db, "clusters", "list", "--since", "30d", "--min-size", "1", *args)
    return {c["id"] for c in found}


def test_clusters_list_filters(shared: World) -> None:
    bridge, rail, library, cafe = (shared.cluster(g) for g in ("w1", "w2", "w3", "d2"))
    assert ids(shared) == {bridge, rail, library, cafe}
    assert ids(shared, "--tag", "wire") == {bridge, rail, library}
    assert ids(shared, "--tag", "local") == {bridge, rail, cafe}
    assert ids(shared, "--tag", "nosuchtag") == set()
    assert ids(shared, "--tag", "world", "--tag", "local") == {bridge, rail, library, cafe}
    assert ids(shared, "--feed", "echo") == {bridge, rail}
    assert ids(shared, "--feed", "ECHO") == {bridge, rail}  # names in any case
    assert ids(shared, "--feed", shared.url("daily")) == {bridge, rail, cafe}
    assert ids(shared, "--query", "Millbrook") == {library}
    assert ids(shared, "--query", "don't") == {cafe}
    assert ids(shared, "--feed", "daily", "--query", "driverless") == {rail}
    assert ids(shared, "--tag", "wire", "--query", "café") == set()
    assert ids(shared, "--feed", "echo", "--min-size", "3") == {bridge, rail}

    unknown = run(shared.cfg, shared.db, "clusters", "list", "--feed", "nosuch")
    assert unknown.returncode == 2 and "no feed named or at 'nosuch'" in unknown.stderr
    bad = run(shared.cfg, shared.db, "clusters", "list", "--query", "title:(oops")
    assert bad.returncode == 2 and "cannot search" in bad.stderr and "Traceback" not in bad.stderr


def test_a_tag_filter_takes_a_folder_with_its_subfolders(world: World) -> None:
    """Tags are folders ("Tech/Apple" is Apple inside Tech, aggregator.ingest.opml): `--tag Region`
    takes the feeds in Region/local as a reader's folder holds its subfolders, and a tag
    that only begins like a folder ("Reg") takes none."""
    text = world.cfg.read_text(encoding="utf-8")
    world.cfg.write_text(text.replace("tags: [local]", "tags: [Region/local]"), encoding="utf-8")
    assert run(world.cfg, world.db, "fetch").returncode == 0
    bridge, rail, cafe = (world.cluster(g) for g in ("w1", "w2", "d2"))
    assert ids(world, "--tag", "Region") == ids(world, "--tag", "Region/local") == {bridge, rail, cafe}
    assert ids(world, "--tag", "Reg") == ids(world, "--tag", "local") == set()
    digest = run(world.cfg, world.db, "digest", "--format", "json", "-o", "-", "--tag", "Region",
                 "--since", "30d")  # fmt: skip
    assert digest.returncode == 0, digest.stderr
    assert len(json.loads(digest.stdout)["items"]) == 3


def test_clusters_show_filters(shared: World) -> None:
    bridge, cafe = shared.cluster("w1"), shared.cluster("d2")
    shown = run_json(shared.cfg, shared.db, "clusters", "show", str(bridge), "--tag", "local")
    assert shown["id"] == bridge and len(shown["items"]) == 3
    assert run_json(shared.cfg, shared.db, "clusters", "show", str(cafe), "--query", "zeppelin")["id"] == cafe
    refused = run(shared.cfg, shared.db, "clusters", "show", str(cafe), "--feed", "wire")
    assert refused.returncode == 1  # not found (as `clusters show 999`), not a usage error
    assert f"cluster {cafe} has no member matching --feed wire" in refused.stderr


# ---------------------------------------------------------------- views


def test_views(shared: World) -> None:
    bridge = shared.cluster("w1")
    rows = shared.sql("SELECT id, size, sources, title, url, first_seen, last_seen FROM story_clusters "
                     "ORDER BY last_seen DESC")  # fmt: skip
    assert len(rows) == 4
    by_id = {r[0]: r for r in rows}
    title, _ = article("bridge")
    assert by_id[bridge][1:5] == (3, 3, title, "https://wire.example.com/w1")
    assert ISO_Z.match(by_id[bridge][5]) and by_id[bridge][5] < by_id[bridge][6]
    members = shared.sql(
        "SELECT cluster_id, item_id, feed, title, url, published, is_representative "
        "FROM cluster_members WHERE cluster_id = ? ORDER BY published", bridge)
    assert [(m[2], m[6]) for m in members] == [("wire", 1), ("daily", 0), ("echo", 0)]
    assert {m[1] for m in members} == {shared.item(g) for g in ("w1", "d1", "e1")}
    assert all(ISO_Z.match(m[5]) for m in members)
    assert members[0][3:5] == (title, "https://wire.example.com/w1")
    total = shared.sql("SELECT count(*), sum(is_representative) FROM cluster_members")[0]
    assert total == (8, 4)


# ---------------------------------------------------------------- help


def command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from command_paths(sub, (*prefix, name))


def test_every_command_help_has_an_example(tmp_path: Path) -> None:
    paths = list(command_paths(build_parser()))
    assert ("search",) in paths and ("stats",) in paths and ("clusters", "list") in paths
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("feeds: []\n", encoding="utf-8")
    for path in [(), *paths]:
        result = run(cfg, tmp_path / "h.db", *path, "--help")
        assert result.returncode == 0, (path, result.stderr)
        assert "example" in result.stdout, f"`aggregator {' '.join(path)} --help` has no example"
