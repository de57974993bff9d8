"""The PostgreSQL schema (aggregator/store/migrations/postgres/013_initial.sql) against SQLite's
after its 13 migrations, built by the real Store.open: the same tables, views, columns,
indexes, keys and triggers, and the same trigger-kept facts (duplicate marks, feed counters,
feed names, the search queue) after the same writes, compared row for row. The writes are
store.py's own statements (the same text on both where the dialects agree), in a scripted
story that reaches every trigger and in seeded random histories; a bulk load with the
triggers off and the file's Backfill section gives the same rows; search finds the same
items; and a write into a big story reads as few rows as into a small one."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from pgserver import PostgresServer

from aggregator.store.database import Store
from aggregator.store.search import TEXT_WEIGHT, TITLE_WEIGHT, fts_query

SCHEMA = (
    Path(__file__).resolve().parents[1] / "aggregator/store/migrations/postgres/013_initial.sql"
)


# ---------------------------------------------------------------- the server (tests/pgserver.py)


@pytest.fixture(scope="session")
def pg_server(postgres_server: PostgresServer) -> PostgresServer:
    return postgres_server


# ---------------------------------------------------------------- the two databases


def open_pg(server: PostgresServer) -> psycopg.Connection:
    """A fresh database with 013_initial applied as the backend will: the whole file, one transaction."""
    conn = psycopg.connect(server.new_database(), autocommit=True)
    with conn.transaction():
        conn.execute(SCHEMA.read_text(encoding="utf-8"))
    return conn


@pytest.fixture
def pg(pg_server: PostgresServer) -> Iterator[psycopg.Connection]:
    conn = open_pg(pg_server)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    store = Store.open(tmp_path / "x.db")
    try:
        yield store.conn
    finally:
        store.close()


# ---------------------------------------------------------------- what each schema holds


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # SQLite's declared type, PostgreSQL's data_type
    not_null: bool
    default: str | None


@dataclass(frozen=True)
class Index:
    table: str
    columns: tuple[str, ...]
    unique: bool
    where: str | None


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    table: str
    references: tuple[str, ...]
    on_delete: str


@dataclass(frozen=True)
class Schema:
    tables: dict[str, tuple[Column, ...]]
    views: dict[str, tuple[str, ...]]
    indexes: dict[str, Index]  # created ones; not those behind keys
    keys: dict[str, frozenset[tuple[str, ...]]]  # primary key and UNIQUE column lists
    foreign_keys: dict[str, frozenset[ForeignKey]]
    triggers: frozenset[tuple[str, str]]  # (table or view, trigger)


# FTS5's table and its shadow tables on SQLite; one table of documents on PostgreSQL
SQLITE_SEARCH = {
    "items_fts",
    "items_fts_config",
    "items_fts_data",
    "items_fts_docsize",
    "items_fts_idx",
}
PG_SEARCH = {"items_search"}


def sqlite_schema(conn: sqlite3.Connection) -> Schema:
    objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    tables = sorted(n for t, n, _, _ in objects if t == "table" and n not in SQLITE_SEARCH)
    views = sorted(n for t, n, _, _ in objects if t == "view")
    sql_of = {n: s for _, n, _, s in objects}
    columns, keys, fks, indexes = {}, {}, {}, {}
    for table in tables:
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()
        # SQLite lets a non-INTEGER PRIMARY KEY hold NULL (a legacy quirk); a key is NOT NULL
        columns[table] = tuple(Column(n, t, bool(nn or pk), d) for _, n, t, nn, d, pk in info)
        table_keys = {tuple(n for *_, n, _, _, _, pk in sorted(info, key=lambda r: r[5]) if pk)}
        for _, name, unique, origin, _ in conn.execute(f"PRAGMA index_list({table})"):
            cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({name})"))
            if origin == "c":
                where = re.search(r"\bWHERE\b(.*)$", sql_of[name], re.S | re.I)
                indexes[name] = Index(table, cols, bool(unique), where and where.group(1))
            else:
                table_keys.add(cols)
        keys[table] = frozenset(table_keys - {()})
        found: dict[int, list] = {}
        for fid, _, ref, col, to, _, on_delete, _ in conn.execute(
            f"PRAGMA foreign_key_list({table})"
        ):
            found.setdefault(fid, [ref, [], [], on_delete])
            found[fid][1].append(col)
            found[fid][2].append(to)
        fks[table] = frozenset(
            ForeignKey(tuple(c), r, tuple(t), d) for r, c, t, d in found.values()
        )
    return Schema(
        tables=columns,
        views={v: tuple(r[1] for r in conn.execute(f"PRAGMA table_info({v})")) for v in views},
        indexes=indexes,
        keys=keys,
        foreign_keys=fks,
        triggers=frozenset((tbl, n) for t, n, tbl, _ in objects if t == "trigger"),
    )


PG_ON_DELETE = {
    "a": "NO ACTION",
    "c": "CASCADE",
    "r": "RESTRICT",
    "n": "SET NULL",
    "d": "SET DEFAULT",
}


def pg_schema(conn: psycopg.Connection) -> Schema:
    def names(relid: int, attnums: Sequence[int]) -> tuple[str, ...]:
        got = dict(
            conn.execute("SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s", (relid,))
        )
        return tuple(got[a] for a in attnums)

    kinds = dict(
        conn.execute(
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    )
    columns: dict[str, list[Column]] = {}
    for table, name, type_, nullable, default in conn.execute(
        """SELECT table_name, column_name, data_type, is_nullable, column_default
           FROM information_schema.columns WHERE table_schema = current_schema()
           ORDER BY table_name, ordinal_position"""
    ):
        default = default and re.sub(r"::[\w ]+$", "", default)  # '[]'::text -> '[]'
        columns.setdefault(table, []).append(Column(name, type_, nullable == "NO", default))
    tables = {
        t: tuple(c) for t, c in columns.items() if kinds[t] == "BASE TABLE" and t not in PG_SEARCH
    }
    keys: dict[str, set] = {t: set() for t in tables}
    fks: dict[str, set] = {t: set() for t in tables}
    for table, contype, relid, conkey, refid, ref, confkey, deltype in conn.execute(
        """SELECT t.relname, c.contype, c.conrelid, c.conkey, c.confrelid, r.relname, c.confkey,
                  c.confdeltype
           FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
           LEFT JOIN pg_class r ON r.oid = c.confrelid
           WHERE t.relnamespace = current_schema()::regnamespace AND c.contype IN ('p', 'u', 'f')"""
    ):
        if table not in tables:
            continue
        if contype == "f":
            fks[table].add(
                ForeignKey(names(relid, conkey), ref, names(refid, confkey), PG_ON_DELETE[deltype])
            )
        else:
            keys[table].add(names(relid, conkey))
    indexes = {}
    for name, table, relid, attnums, unique, where in conn.execute(
        """SELECT i.relname, t.relname, x.indrelid, x.indkey::int2[], x.indisunique,
                  pg_get_expr(x.indpred, x.indrelid)
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
           WHERE t.relnamespace = current_schema()::regnamespace
             AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                             WHERE c.conindid = x.indexrelid AND c.contype IN ('p', 'u'))"""
    ):
        indexes[name] = Index(table, names(relid, attnums), unique, where)
    return Schema(
        tables=tables,
        views={t: tuple(c.name for c in cols) for t, cols in columns.items() if kinds[t] == "VIEW"},
        indexes=indexes,
        keys={t: frozenset(k) for t, k in keys.items()},
        foreign_keys={t: frozenset(f) for t, f in fks.items()},
        triggers=frozenset(
            conn.execute(
                """SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                   WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace"""
            ).fetchall()
        ),
    )


def _predicate(where: str | None) -> str | None:
    """An index's WHERE as both print it: `duplicate = 1` and `(duplicate = 1)`."""
    if where is None:
        return None
    text = " ".join(where.split()).lower()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return text


def test_same_tables_and_views(lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
    """Every SQLite table and view, with its columns in the same order; FTS5's five tables
    are one table of documents (items_search) on PostgreSQL."""
    ours, theirs = sqlite_schema(lite), pg_schema(pg)
    assert sorted(theirs.tables) == sorted(ours.tables)
    assert {
        t
        for (t,) in pg.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    } - set(ours.tables) == PG_SEARCH
    for table, columns in ours.tables.items():
        assert [c.name for c in theirs.tables[table]] == [c.name for c in columns], table
    assert theirs.views == ours.views
    assert set(ours.views) == {
        "story_clusters",
        "cluster_members",
        "cluster_marks",
        "item_marks",
        "cluster_place_marks",
    }


def _pg_type(column: Column) -> str:
    """The type 001 gives a SQLite column: ids (and counters of writes) 64-bit, other
    integers 32-bit, so sum() of them stays an integer."""
    if column.type == "INTEGER":
        wide = (
            column.name == "id"
            or column.name.endswith("_id")
            or column.name in {"placed_seq", "version"}
        )
        return "bigint" if wide else "integer"
    return {"TEXT": "text", "REAL": "double precision", "BLOB": "bytea"}[column.type]


def test_same_columns(lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
    """Per column: the type it maps to, NOT NULL, and the default; text compared byte by
    byte (collation "C", SQLite's BINARY) whatever the database's locale."""
    ours, theirs = sqlite_schema(lite), pg_schema(pg)
    for table, columns in ours.tables.items():
        expected = [Column(c.name, _pg_type(c), c.not_null, c.default) for c in columns]
        assert list(theirs.tables[table]) == expected, table
    loose = pg.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = current_schema() AND data_type = 'text'
             AND table_name IN (SELECT table_name FROM information_schema.tables
                                WHERE table_schema = current_schema() AND table_type = 'BASE TABLE')
             AND collation_name IS DISTINCT FROM 'C'"""
    ).fetchall()
    assert loose == []
    # ids SQLite numbered itself (feeds, fetch_log) are numbered here too
    identity = pg.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() AND is_identity = 'YES'"
    ).fetchall()
    assert sorted(t for (t,) in identity) == ["feeds", "fetch_log"]


def test_same_indexes_and_keys(lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
    """The same named indexes on the same columns, SQLite's implicit rowid written out as
    `id`; the same primary keys, UNIQUE constraints and foreign keys, which PostgreSQL can
    defer as SQLite's defer_foreign_keys does."""
    ours, theirs = sqlite_schema(lite), pg_schema(pg)
    expected = {
        name: Index(i.table, (*i.columns, "id"), i.unique, _predicate(i.where))
        for name, i in ours.indexes.items()
    }
    found = {
        name: Index(i.table, i.columns, i.unique, _predicate(i.where))
        for name, i in theirs.indexes.items()
    }
    assert found == {**expected, "items_search_doc": Index("items_search", ("doc",), False, None)}
    assert theirs.keys == ours.keys
    assert theirs.foreign_keys == ours.foreign_keys
    assert pg.execute(
        "SELECT bool_and(condeferrable) FROM pg_constraint WHERE contype = 'f'"
    ).fetchone()[0]


def test_same_triggers(lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
    """Each SQLite trigger has its namesake on the same table or view (what they do is
    compared by the tests below)."""
    assert pg_schema(pg).triggers == sqlite_schema(lite).triggers


def test_same_seeded_rows(lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
    """What the migrations store (002's and 009's meta rows), and nothing else."""
    both = Both(lite, pg)
    assert both.dump() == both.dump(pg=True)
    assert dict(lite.execute("SELECT key, value FROM meta")) == {
        "cluster_generation": "0",
        "index_writes": "0",
    }


def test_text_orders_as_in_sqlite(lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
    """Columns order by bytes and lower() folds ASCII only, as SQLite's BINARY collation and
    lower() do (a parameter, lower(?), takes the database's locale on PostgreSQL)."""
    words = ["b", "B", "a", "é", "É", "Z", "2026-01-02T00:00:00Z", "2026-01-10T00:00:00Z", "ä", "_", " "]  # fmt: skip
    both = Both(lite, pg)
    both.run("INSERT INTO meta (key, value) VALUES " + ", ".join(["(?, ?)"] * len(words)),
             [x for w in words for x in (w, w)])  # fmt: skip
    rows = both.run("SELECT key, lower(value), upper(value) FROM meta ORDER BY key")
    assert [k for k, _, _ in rows] == sorted(["cluster_generation", "index_writes", *words])
    assert ("É", "É", "É") in rows and ("é", "é", "é") in rows and ("B", "b", "B") in rows
    assert both.run("SELECT key FROM meta WHERE value > ? ORDER BY key DESC", ("Z",))


# ---------------------------------------------------------------- the same writes on both


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class Both:
    """The SQLite store and the PostgreSQL database, written the same way. Statements are
    SQLite's; run() and many() give PostgreSQL the same text with %s placeholders, or its
    own where the dialects differ (`pg_sql`)."""

    def __init__(self, lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
        self.lite = lite
        self.pg = pg

    def run(
        self, sql: str, params: Sequence = (), pg_sql: str | None = None, pg: bool = False
    ) -> list[tuple]:
        """Rows of the statement on SQLite (run on both unless `pg`: then on PostgreSQL only)."""
        if pg:
            cur = self.pg.execute(pg_sql or _pg(sql), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        rows = self.lite.execute(sql, params).fetchall()
        cur = self.pg.execute(pg_sql or _pg(sql), params)
        theirs = [tuple(r) for r in cur.fetchall()] if cur.description else []
        assert theirs == rows, sql
        return rows

    def many(self, sql: str, rows: Sequence[Sequence], pg_sql: str | None = None) -> None:
        self.lite.executemany(sql, rows)
        with self.pg.cursor() as cur:
            cur.executemany(pg_sql or _pg(sql), rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.lite.execute("BEGIN IMMEDIATE")
        try:
            with self.pg.transaction():
                yield
        except BaseException:
            self.lite.execute("ROLLBACK")
            raise
        self.lite.execute("COMMIT")

    def dump(self, pg: bool = False) -> dict[str, tuple[tuple[str, ...], list[tuple]]]:
        """(columns, rows) of every table and view the triggers write or read, in key order;
        the search index as the items it holds."""
        out = {}
        for name, key in DUMPED.items():
            sql = f"SELECT * FROM {name} ORDER BY {key}"
            if pg:
                cur = self.pg.execute(sql)
                out[name] = (
                    tuple(d.name for d in cur.description),
                    [tuple(r) for r in cur.fetchall()],
                )
            else:
                cur = self.lite.execute(sql)
                out[name] = (tuple(d[0] for d in cur.description), cur.fetchall())
        indexed = (
            "SELECT item_id FROM items_search ORDER BY 1"
            if pg
            else "SELECT id FROM items_fts_docsize ORDER BY 1"
        )
        out["indexed"] = (
            ("item_id",),
            self.run(indexed, pg=True) if pg else self.lite.execute(indexed).fetchall(),
        )
        return out

    def check(self, what: str = "") -> dict:
        """Both hold the same rows; returns SQLite's dump."""
        ours, theirs = self.dump(), self.dump(pg=True)
        for name in ours:
            assert theirs[name] == ours[name], f"{name} differs {what}"
        return ours


DUMPED = {
    "feeds": "id", "items": "id", "clusters": "id", "signatures": "item_id", "fetch_log": "id",
    "meta": "key", "feed_counts": "feed_id", "search_pending": "item_id",
    "story_clusters": "id", "cluster_members": "item_id",
    "cluster_marks": "1", "item_marks": "1", "cluster_place_marks": "1",
}  # fmt: skip


# What store.py writes, statement for statement (each function names its original).


def add_feed(both: Both, url: str, name: str | None, tags: Sequence[str], now: str) -> int:
    """Store.sync_feeds, one feed."""
    both.run(
        """INSERT INTO feeds (url, configured_name, tags, interval_s, active, created_at)
           VALUES (?, ?, ?, ?, 1, ?)
           ON CONFLICT (url) DO UPDATE SET
             configured_name = excluded.configured_name, tags = excluded.tags,
             interval_s = excluded.interval_s, active = 1""",
        (url, name, json.dumps(list(tags)), 600.0, now),
    )
    return both.run("SELECT id FROM feeds WHERE url = ?", (url,))[0][0]


def update_feed_state(both: Both, feed_id: int, **columns: object) -> None:
    """Store.update_feed_state."""
    assignments = ", ".join(f"{k} = ?" for k in columns)
    both.run(f"UPDATE feeds SET {assignments} WHERE id = ?", (*columns.values(), feed_id))


def log_fetch(
    both: Both, feed_id: int, at: str, outcome: str, status: int | None, new: int
) -> None:
    """Store.log_fetch."""
    both.run(
        """INSERT INTO fetch_log (feed_id, fetched_at, outcome, http_status, duration_ms,
                                  new_items, updated_items, error)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        (feed_id, at, outcome, status, 120, new, 0, None if outcome == "ok" else "timed out"),
    )


@dataclass(frozen=True)
class Entry:
    key: str
    title: str
    text: str
    published: str


def insert_items(both: Both, feed_id: int, entries: Sequence[Entry], now: str) -> list[int]:
    """Store.insert_items: ids max + 1, ... given up front."""
    first = both.run("SELECT coalesce(max(id), 0) + 1 FROM items")[0][0]
    ids = list(range(first, first + len(entries)))
    both.many(
        """INSERT INTO items (id, feed_id, key, url, canonical_url, title, text, author,
               published_at, updated_at, first_seen_at, changed_at, content_hash)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        [(i, feed_id, e.key, f"https://x.example/{e.key}", f"https://x.example/{e.key}", e.title, e.text,
          None, e.published, None, now, now, f"h{e.key}") for i, e in zip(ids, entries, strict=True)],
    )  # fmt: skip
    return ids


def update_item(both: Both, item_id: int, title: str, text: str, now: str) -> None:
    """Store.update_item (an undated entry keeps its publish time)."""
    both.run(
        """UPDATE items SET url = ?, canonical_url = ?, title = ?, text = ?, author = ?,
               published_at = CASE WHEN ? THEN published_at ELSE ? END, updated_at = ?,
               changed_at = ?, content_hash = ?
           WHERE id = ?""",
        (None, None, title, text, "A. Writer", True, now, now, now, f"h{title}", item_id),
    )


def bump_index_writes(both: Both) -> int:
    """store.bump_index_writes, with `meta.value` qualified: PostgreSQL finds a bare `value`
    ambiguous beside `excluded.value` (SQLite takes both spellings)."""
    return int(both.run(
        """INSERT INTO meta (key, value) VALUES ('index_writes', '1')
           ON CONFLICT (key) DO UPDATE SET value = CAST(meta.value AS INTEGER) + 1 RETURNING value"""
    )[0][0])  # fmt: skip


def bump_cluster_generation(both: Both) -> None:
    both.run(
        """INSERT INTO meta (key, value) VALUES ('cluster_generation', '1')
           ON CONFLICT (key) DO UPDATE SET value = CAST(meta.value AS INTEGER) + 1"""
    )


# ClusterStore.save_signatures: INSERT OR REPLACE is an upsert on PostgreSQL, "full" quoted
SAVE_SIGNATURES = (
    "INSERT OR REPLACE INTO signatures (item_id, kind, size, lede_size, full, lede, "
    "paragraphs, exact_keys) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SAVE_SIGNATURES_PG = """INSERT INTO signatures (item_id, kind, size, lede_size, "full", lede, paragraphs, exact_keys)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (item_id) DO UPDATE SET kind = excluded.kind, size = excluded.size,
        lede_size = excluded.lede_size, "full" = excluded."full", lede = excluded.lede,
        paragraphs = excluded.paragraphs, exact_keys = excluded.exact_keys"""

# ClusterStore.refresh's update: SQLite's scalar max()/min() are greatest()/least()
REFRESH = """UPDATE clusters SET
       size = ? + pruned,
       feed_count = CASE WHEN pruned > 0 THEN max(feed_count, ?) ELSE ? END,
       first_seen = CASE WHEN pruned > 0 THEN min(first_seen, ?) ELSE ? END,
       last_seen = ?, representative_id = ?, updated_at = ? WHERE id = ?"""
REFRESH_PG = _pg(REFRESH).replace("max(", "greatest(").replace("min(", "least(")


def refresh(both: Both, cluster_ids: set[int], now: str) -> None:
    """ClusterStore.refresh."""
    for cid in sorted(cluster_ids):
        count, feeds, first, last = both.run(
            """SELECT count(*), count(DISTINCT feed_id), min(published_at), max(published_at)
               FROM items WHERE cluster_id = ?""",
            (cid,),
        )[0]
        if count == 0:
            both.run("DELETE FROM clusters WHERE id = ?", (cid,))
            continue
        rep = both.run(
            "SELECT id FROM items WHERE cluster_id = ? ORDER BY published_at, id LIMIT 1", (cid,)
        )[0][0]
        both.run(REFRESH, (count, feeds, feeds, first, first, last, rep, now, cid), REFRESH_PG)


def place(
    both: Both, placements: Sequence[tuple[int, int | None]], now: str, touched: set[int]
) -> None:
    """Clusterer._place_batch's writes for (item id, cluster it joins; None: a new one):
    bump_index_writes, add_singletons, save_signatures, set_item_clusters, refresh."""
    next_cluster = both.run("SELECT coalesce(max(id), 0) + 1 FROM clusters")[0][0]
    assignments, singletons = [], []
    for item_id, cluster in placements:
        if cluster is None:
            cluster, next_cluster = next_cluster, next_cluster + 1
            published = both.run("SELECT published_at FROM items WHERE id = ?", (item_id,))[0][0]
            singletons.append((cluster, item_id, published, published, now, now))
        else:
            touched.add(cluster)
        assignments.append((cluster, 0.5 if cluster in touched else 1.0, item_id))
    seq = bump_index_writes(both)
    both.many(
        """INSERT INTO clusters (id, representative_id, size, feed_count, first_seen,
                                 last_seen, updated_at, created_at)
           VALUES (?, ?, 1, 1, ?, ?, ?, ?)""",
        singletons,
    )
    both.many(
        SAVE_SIGNATURES,
        [
            (i, 0, 40, 10, i.to_bytes(8, "little") * 4, None, b"\x01\x00\x00\x00", 3)
            for i, _ in placements
        ],
        SAVE_SIGNATURES_PG,
    )
    both.many(
        "UPDATE items SET cluster_id = ?, similarity = ?, placed_seq = ? WHERE id = ?",
        [(c, s, seq, i) for c, s, i in assignments],
    )
    refresh(both, touched, now)


def index_search(both: Both, batch: int = 3) -> None:
    """Store.index_search (small batches, to take several turns); PostgreSQL's statement
    differs in its target only."""
    while True:
        with both.transaction():
            upto = both.run(
                "SELECT max(item_id) FROM (SELECT item_id FROM search_pending ORDER BY item_id LIMIT ?) AS s",
                (batch,),
            )[0][0]
            if upto is None:
                return
            both.run(
                """INSERT INTO items_fts (rowid, title, text)
                   SELECT id, title, text FROM items
                   WHERE id IN (SELECT item_id FROM search_pending WHERE item_id <= ?)""",
                (upto,),
                """INSERT INTO items_search (item_id, doc)
                   SELECT id, search_document(title, text) FROM items
                   WHERE id IN (SELECT item_id FROM search_pending WHERE item_id <= %s)""",
            )
            both.run("DELETE FROM search_pending WHERE item_id <= ?", (upto,))


def prune(both: Both, before: str) -> None:
    """store.prune: many-row statements, whose triggers PostgreSQL runs after all rows."""
    with both.transaction():
        both.run(
            "CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY, cluster_id INTEGER)",
            pg_sql="CREATE TEMP TABLE IF NOT EXISTS doomed (id BIGINT PRIMARY KEY, cluster_id BIGINT)",
        )
        both.run("DELETE FROM doomed")
        both.run(
            "INSERT INTO doomed SELECT id, cluster_id FROM items WHERE first_seen_at < ?", (before,)
        )
        if not both.run("SELECT count(*) FROM doomed")[0][0]:
            return
        bump_cluster_generation(both)
        both.run("DELETE FROM signatures WHERE item_id IN (SELECT id FROM doomed)")
        both.run("DELETE FROM items WHERE id IN (SELECT id FROM doomed)")
        both.run(
            """UPDATE clusters SET pruned = pruned + (SELECT count(*) FROM doomed d
                                                       WHERE d.cluster_id = clusters.id)
               WHERE id IN (SELECT cluster_id FROM doomed)"""
        )
        both.run(
            """DELETE FROM clusters WHERE id IN (SELECT cluster_id FROM doomed)
               AND NOT EXISTS (SELECT 1 FROM items i WHERE i.cluster_id = clusters.id)"""
        )
        both.run(
            """UPDATE clusters SET representative_id = (
                   SELECT id FROM items i WHERE i.cluster_id = clusters.id
                   ORDER BY published_at, id LIMIT 1)
               WHERE id IN (SELECT cluster_id FROM doomed)"""
        )
        both.run("DELETE FROM doomed")


def recluster(both: Both, rng: random.Random, now: str) -> None:
    """Clusterer.recluster: ClusterStore.reset (clusters first, foreign keys deferred), then
    every item placed again in id order, in batches."""
    with both.transaction():
        both.run("PRAGMA defer_foreign_keys = ON", pg_sql="SET CONSTRAINTS ALL DEFERRED")
        both.run("DELETE FROM clusters")
        check_marks(both.check("with every cluster deleted, the items not yet unclustered"))
        both.run("UPDATE items SET cluster_id = NULL, similarity = NULL")
        bump_cluster_generation(both)
        ids = [i for (i,) in both.run("SELECT id FROM items ORDER BY id")]
        for start in range(0, len(ids), 5):
            clusters = [c for (c,) in both.run("SELECT id FROM clusters ORDER BY id")]
            batch = [
                (i, rng.choice(clusters) if clusters and rng.random() < 0.5 else None)
                for i in ids[start : start + 5]
            ]
            place(both, batch, now, set())


# ---------------------------------------------------------------- what the marks must be


def rows_of(dump: dict, name: str) -> list[dict]:
    columns, rows = dump[name]
    return [dict(zip(columns, r, strict=True)) for r in rows]


def check_marks(dump: dict) -> None:
    """The marks and counters mean what aggregator/migrations/006 says, computed here from
    the rows (so that equal is also right)."""
    items = {i["id"]: i for i in rows_of(dump, "items")}
    clusters = {c["id"]: c for c in rows_of(dump, "clusters")}
    first: dict[int, int] = {}
    for i in sorted(items.values(), key=lambda i: (i["first_seen_at"], i["id"])):
        first.setdefault(i["cluster_id"], i["id"])
    counts: dict[int, list[int]] = {}
    for i in items.values():
        c = clusters.get(i["cluster_id"])
        rep = c and items.get(c["representative_id"])
        duplicate = int(c is not None and (c["pruned"] > 0 or first[c["id"]] != i["id"]))
        republished = int(bool(rep) and rep["feed_id"] != i["feed_id"])
        assert (i["duplicate"], i["republished"]) == (duplicate, republished), i
        n = counts.setdefault(i["feed_id"], [0, 0, 0])
        n[0], n[1], n[2] = n[0] + 1, n[1] + duplicate, n[2] + republished
    kept = {
        n["feed_id"]: [n["items"], n["duplicates"], n["republished"]]
        for n in rows_of(dump, "feed_counts")
    }
    assert {f: n for f, n in kept.items() if n != [0, 0, 0]} == counts
    for f in rows_of(dump, "feeds"):
        assert f["name"] == (f["configured_name"] or f["title"] or f["url"])


# ---------------------------------------------------------------- the scripted story


def marks_in(dump: dict, cluster: int, mark: str) -> dict[int, int]:
    """Item id -> its `duplicate` or `republished` mark, for the members of `cluster`."""
    return {i["id"]: i[mark] for i in rows_of(dump, "items") if i["cluster_id"] == cluster}


# An item stored by hand, straight into a cluster (the aggregator stores items unclustered)
HAND_INSERT = """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                    changed_at, content_hash, cluster_id)
                 VALUES (?, ?, ?, 'Typed in', 'by hand', ?, ?, ?, 'h', ?)"""

T0, T1, T2, T3, T4 = (f"2026-03-0{d}T08:00:00Z" for d in range(1, 6))


def test_every_trigger_has_the_same_effect(
    lite: sqlite3.Connection, pg: psycopg.Connection
) -> None:
    """A story through every trigger (named at each step), both databases compared after
    each step, and the marks checked against their meaning."""
    both = Both(lite, pg)

    # feeds_name_insert: configured, unnamed, and a hand-run INSERT naming the feed
    wire = add_feed(both, "https://wire.example/feed", "Wire", ["News"], T0)
    blog = add_feed(both, "https://blog.example/feed", None, ["Tech/Apple"], T0)
    both.run(
        "INSERT INTO feeds (url, name, created_at) VALUES (?, ?, ?)",
        ("https://hand.example/", "Hand", T0),
    )
    hand = both.run("SELECT id FROM feeds WHERE url = 'https://hand.example/'")[0][0]
    d = both.check("after the feeds")
    assert [(f["name"], f["configured_name"]) for f in rows_of(d, "feeds")] == [
        ("Wire", "Wire"), ("https://blog.example/feed", None), ("Hand", "Hand")]  # fmt: skip
    # feeds_name_update: the feed's own title, a configured name given and taken away again
    update_feed_state(both, blog, title="Blog Title", status="ok", last_fetch_at=T0, error_count=0)
    add_feed(both, "https://blog.example/feed", "My Blog", ["Tech/Apple"], T0)
    add_feed(both, "https://blog.example/feed", None, [], T0)
    log_fetch(both, wire, T0, "ok", 200, 3)
    log_fetch(both, blog, T0, "error", None, 0)
    assert rows_of(both.check("after renames"), "feeds")[1]["name"] == "Blog Title"

    # items_fts_insert, items_counts_insert: stored unclustered, waiting for the index
    a, b, c = insert_items(both, wire, [Entry("a", "Flood in town", "The river rose.", T1),
                                        Entry("b", "Storm", "Wind and rain.", T1),
                                        Entry("c", "Flood update", "The river fell.", T2)], T1)  # fmt: skip
    (e,) = insert_items(both, blog, [Entry("e", "Flood seen", "Our view of the river.", T0)], T1)
    d = both.check("after inserts")
    assert len(rows_of(d, "search_pending")) == 4
    # items_marks_update: a new story, then members joining it
    place(both, [(a, None), (b, None)], T1, set())
    story = both.run("SELECT cluster_id FROM items WHERE id = ?", (a,))[0][0]
    place(both, [(c, story)], T2, set())
    # clusters_marks_update: the blog's earlier report becomes the representative and every
    # member of another feed is republished
    place(both, [(e, story)], T2, set())
    d = both.check("after placing")
    check_marks(d)
    assert marks_in(d, story, "republished") == {a: 1, c: 1, e: 0}

    # first-seen order: an item first seen earlier comes first (place 1 is re-marked)
    (f,) = insert_items(both, hand, [Entry("f", "Flood early", "First to see it.", T2)], T0)
    place(both, [(f, story)], T2, set())
    d = both.check("after an earlier first-seen member")
    check_marks(d)
    assert marks_in(d, story, "duplicate") == {a: 1, c: 1, e: 1, f: 0}
    # hand-run: its first-seen time changes, and it moves to another feed
    both.run("UPDATE items SET first_seen_at = ? WHERE id = ?", (T3, f))
    check_marks(both.check("after a first-seen change"))
    both.run("UPDATE items SET feed_id = ? WHERE id = ?", (wire, e))  # the representative
    d = both.check("after moving the representative to another feed")
    check_marks(d)
    assert marks_in(d, story, "republished") == {a: 0, c: 0, e: 0, f: 1}

    # hand-run INSERT straight into the story, first seen before all: it comes first, and
    # the member that came first before is a duplicate now
    g = both.run("SELECT coalesce(max(id), 0) + 1 FROM items")[0][0]
    both.run(HAND_INSERT, (g, hand, "g", T2, T0, T0, story))
    d = both.check("after a hand-run INSERT into the story")
    check_marks(d)
    assert marks_in(d, story, "duplicate") == {a: 1, c: 1, e: 1, f: 1, g: 0}

    # items_fts_update: an edited entry waits for the index again, wherever it was
    index_search(both)
    update_item(both, c, "Flood over", "The river is back in its bed.", T3)
    assert [r["item_id"] for r in rows_of(both.check("after an edit"), "search_pending")] == [c]
    index_search(both)

    # the write-only views, hand-run: marks set wrong by hand, then recomputed
    both.run(
        "UPDATE items SET duplicate = 1 - duplicate, republished = 1 - republished WHERE id = ?",
        (a,),
    )
    both.run("INSERT INTO item_marks (item_id) VALUES (?)", (a,))
    both.run("UPDATE items SET duplicate = 1 - duplicate WHERE cluster_id = ?", (story,))
    both.run("INSERT INTO cluster_marks (cluster_id) VALUES (?)", (story,))
    both.run("UPDATE items SET duplicate = 1 - duplicate WHERE id = ?", (g,))  # it comes first
    both.run("INSERT INTO cluster_place_marks (cluster_id, place) SELECT ?, 0", (story,))
    check_marks(both.check("after the write-only views"))

    # items_counts_delete, items_fts_delete: a hand-run delete of the representative
    both.run("DELETE FROM signatures WHERE item_id = ?", (e,))
    both.run("DELETE FROM items WHERE id = ?", (e,))
    check_marks(both.check("after deleting the representative"))
    refresh(both, {story}, T3)
    check_marks(both.check("after its refresh"))

    # prune: the pruned count makes every member a duplicate; a story left empty goes
    prune(both, T2)
    d = both.check("after prune")
    check_marks(d)
    # a, c and g were first seen before T2; b's story is gone with it
    assert [(cl["id"], cl["pruned"]) for cl in rows_of(d, "clusters")] == [(story, 3)]
    assert dict(both.run("SELECT key, value FROM meta ORDER BY key"))["cluster_generation"] == "1"

    # clusters_marks_delete: recluster deletes every cluster first
    recluster(both, random.Random(1), T4)
    check_marks(both.check("after recluster"))


# ---------------------------------------------------------------- random histories

STAMPS = [f"2026-03-0{d}T0{h}:00:00Z" for d in (1, 2, 3) for h in (0, 6)]
WORDS = ["flood", "river", "storm", "town", "rain", "café", "über", "covid-19", "example.com"]


def random_history(both: Both, seed: int, steps: int, check_each: bool = True) -> None:
    """App-like writes chosen at random (polls placing items in new or existing stories,
    edits moving them, prunes, recluster, indexing) and single-row hand-run ones (an item
    stored into a cluster, a first-seen time, a feed, a delete); few distinct times, so
    first-seen ties are common."""
    rng = random.Random(seed)
    feeds = [
        add_feed(both, f"https://f{n}.example/", rng.choice([None, f"F{n}"]), ["T"], STAMPS[0])
        for n in range(4)
    ]
    keys = iter(range(10**6))

    def text() -> str:
        return " ".join(rng.choices(WORDS, k=rng.randint(1, 5)))

    def clusters() -> list[int]:
        return [c for (c,) in both.run("SELECT id FROM clusters ORDER BY id")]

    def items() -> list[int]:
        return [i for (i,) in both.run("SELECT id FROM items ORDER BY id")]

    ops = [
        "poll",
        "edit",
        "hand_insert",
        "reseen",
        "move",
        "delete",
        "prune",
        "index",
        "recluster",
        "mark",
        "state",
    ]
    weights = [8, 3, 1, 1, 1, 1, 0.4, 1, 0.2, 0.5, 1]
    for step in range(steps):
        op = rng.choices(ops, weights)[0]
        now = rng.choice(STAMPS)
        if op == "poll":
            feed = rng.choice(feeds)
            with both.transaction():
                entries = [
                    Entry(f"k{next(keys)}", text(), text(), rng.choice(STAMPS))
                    for _ in range(rng.randint(1, 4))
                ]
                ids = insert_items(both, feed, entries, now)
                known = clusters()
                place(
                    both,
                    [(i, rng.choice(known) if known and rng.random() < 0.6 else None) for i in ids],
                    now,
                    set(),
                )
                update_feed_state(
                    both, feed, status="ok", last_fetch_at=now, title=rng.choice([None, text()])
                )
                log_fetch(both, feed, now, "ok", 200, len(ids))
        elif op == "edit" and items():
            item = rng.choice(items())
            with both.transaction():
                (old,) = both.run("SELECT cluster_id FROM items WHERE id = ?", (item,))[0]
                update_item(both, item, text(), text(), now)
                known = [c for c in clusters() if c != old]
                touched = {old} if old is not None else set()
                place(
                    both,
                    [(item, rng.choice(known) if known and rng.random() < 0.5 else None)],
                    now,
                    touched,
                )
        elif op == "hand_insert" and clusters():
            item, cluster = (
                both.run("SELECT coalesce(max(id), 0) + 1 FROM items")[0][0],
                rng.choice(clusters()),
            )
            if rng.random() < 0.3:  # it is the representative as it arrives
                both.run("UPDATE clusters SET representative_id = ? WHERE id = ?", (item, cluster))
            both.run(
                HAND_INSERT,
                (item, rng.choice(feeds), f"k{next(keys)}", now, rng.choice(STAMPS), now, cluster),
            )
        elif op == "reseen" and items():
            both.run("UPDATE items SET first_seen_at = ? WHERE id = ?", (now, rng.choice(items())))
        elif op == "move" and items():
            both.run(
                "UPDATE items SET feed_id = ? WHERE id = ?",
                (rng.choice(feeds), rng.choice(items())),
            )
        elif op == "delete" and items():
            item = rng.choice(items())
            (cluster,) = both.run("SELECT cluster_id FROM items WHERE id = ?", (item,))[0]
            with both.transaction():
                both.run("DELETE FROM signatures WHERE item_id = ?", (item,))
                both.run("DELETE FROM items WHERE id = ?", (item,))
                if cluster is not None and rng.random() < 0.5:
                    refresh(both, {cluster}, now)
        elif op == "prune":
            prune(both, rng.choice(STAMPS[:3]))
        elif op == "index":
            index_search(both, batch=rng.randint(1, 8))
        elif op == "recluster":
            recluster(both, rng, now)
        elif op == "mark" and clusters():
            both.run("INSERT INTO cluster_marks (cluster_id) VALUES (?)", (rng.choice(clusters()),))
            both.run(
                "INSERT INTO cluster_place_marks (cluster_id, place) VALUES (?, ?)",
                (rng.choice(clusters()), rng.randint(0, 2)),
            )
        elif op == "state":
            feed = rng.choice(feeds)
            update_feed_state(
                both, feed, status="error", error_count=rng.randint(1, 5), last_error="timed out"
            )
            log_fetch(both, feed, now, "error", None, 0)
        if check_each:
            both.check(f"after step {step} ({op}) of seed {seed}")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_histories_give_the_same_rows(
    seed: int, pg_server: PostgresServer, tmp_path: Path
) -> None:
    store = Store.open(tmp_path / f"{seed}.db")
    pg = open_pg(pg_server)
    try:
        both = Both(store.conn, pg)
        random_history(both, seed, steps=120)
        d = both.check("at the end")
        check_marks(d)
        assert len(rows_of(d, "items")) > 20 and len(rows_of(d, "clusters")) > 5
        assert any(i["duplicate"] for i in rows_of(d, "items")) and any(
            i["republished"] for i in rows_of(d, "items")
        )
    finally:
        pg.close()
        store.close()


# ---------------------------------------------------------------- bulk load and backfill


def test_backfill_after_a_bulk_load(
    pg_server: PostgresServer, lite: sqlite3.Connection, pg: psycopg.Connection
) -> None:
    """Rows copied with the triggers off (session_replication_role = replica), then the
    file's Backfill section: the marks, counters and search queue the triggers keep."""
    both = Both(lite, pg)
    random_history(both, seed=4, steps=80, check_each=False)
    kept = both.check("before the copy")
    loaded = open_pg(pg_server)
    try:
        with loaded.transaction():
            loaded.execute("SET LOCAL session_replication_role = replica")
            for table in ("feeds", "clusters", "items"):
                columns, rows = kept[table]
                if table == "items":  # as an older copy would hold them: never marked
                    rows = [(*r[:-3], 0, 0, r[-1]) for r in rows]
                marks = ", ".join(["%s"] * len(columns))
                with loaded.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) OVERRIDING SYSTEM VALUE VALUES ({marks})",
                        rows,
                    )
            loaded.execute("SET LOCAL session_replication_role = origin")
            loaded.execute(
                SCHEMA.read_text(encoding="utf-8").split("\n-- Backfill", 1)[1].split("\n", 1)[1]
            )
        assert loaded.execute("SELECT * FROM items ORDER BY id").fetchall() == kept["items"][1]
        assert [r for r in kept["feed_counts"][1] if r[1:] != (0, 0, 0)] == loaded.execute(
            "SELECT * FROM feed_counts ORDER BY feed_id"
        ).fetchall()
        assert loaded.execute("SELECT item_id FROM search_pending ORDER BY 1").fetchall() == [
            (r[0],) for r in kept["items"][1]
        ]
    finally:
        loaded.close()


# ---------------------------------------------------------------- search


SEARCHED = [
    ("Café owners protest", "The café on Main Street closed its doors."),
    ("Example domain sold", "example.com was bought for 3.11 million."),
    ("Covid-19 cases rise", "covid-19 numbers grow in the city."),
    ("Über alles", "ÜBER-Fahrer streiken heute in Berlin."),
    ("AT&T outage", "don't panic, l'été arrive bientôt."),
    ("東京タワー", "ニュース 速報"),
    ("Flood warning", "officials watch the river level."),
    ("River news", "a flood reached the lower town."),
]
# plain words, as `aggregator search` takes them (search.fts_query quotes each)
QUERIES = [
    "cafe", "café", "CAFÉ", "main street", "street main", "example", "com", "example.com", "3.11",
    "11", "covid", "19", "covid-19", "über", "uber", "fahrer", "AT&T", "t", "don't", "dont", "ete",
    "l'été", "bientot", "東京タワー", "東京", "flood", "flood river", "river town", "news", "nothing",
]  # fmt: skip


def test_search_finds_the_same_items(lite: sqlite3.Connection, pg: psycopg.Connection) -> None:
    """search_query() over items_search finds what FTS5 finds for the same plain words
    (unicode61 remove_diacritics 2: case and accents folded, split at punctuation), ranks a
    word in the headline first as bm25 with the app's weights does, and like FTS5 waits for
    the next batch after an edit."""
    both = Both(lite, pg)
    feed = add_feed(both, "https://s.example/", None, [], T0)
    ids = insert_items(
        both, feed, [Entry(f"s{n}", t, x, T1) for n, (t, x) in enumerate(SEARCHED)], T1
    )
    index_search(both, batch=100)

    def found(query: str) -> tuple[set[int], set[int]]:
        ours = {
            r
            for (r,) in lite.execute(
                "SELECT rowid FROM items_fts WHERE items_fts MATCH ?", (fts_query(query),)
            )
        }
        theirs = {
            r
            for (r,) in pg.execute(
                "SELECT item_id FROM items_search WHERE doc @@ search_query(%s)", (query,)
            )
        }
        return ours, theirs

    for query in QUERIES:
        ours, theirs = found(query)
        assert theirs == ours, query
    assert (
        found("cafe")[0] == {ids[0]} and found("covid")[0] == {ids[2]} and found("t")[0] == {ids[4]}
    )
    assert found("flood")[0] == {ids[6], ids[7]} and found("nothing")[0] == set()

    weights = "{0, 0, %s, 1}" % (TEXT_WEIGHT / TITLE_WEIGHT)
    for word in ("flood", "river"):
        ours = [r for r, in lite.execute(
            f"SELECT rowid FROM items_fts WHERE items_fts MATCH ? ORDER BY bm25(items_fts, {TITLE_WEIGHT}, {TEXT_WEIGHT})",
            (fts_query(word),))]  # fmt: skip
        theirs = [r for r, in pg.execute(
            "SELECT item_id FROM items_search WHERE doc @@ search_query(%s) ORDER BY ts_rank(%s, doc, search_query(%s)) DESC",
            (word, weights, word))]  # fmt: skip
        assert theirs == ours and len(ours) == 2, word

    update_item(both, ids[0], "Tea owners protest", "The tea room on Main Street closed.", T2)
    assert found("cafe") == (set(), set()) and found("tea") == (set(), set())
    index_search(both)
    assert found("tea") == ({ids[0]}, {ids[0]}) and found("cafe") == (set(), set())


# ---------------------------------------------------------------- cost per write


def _rows_read(pg: psycopg.Connection) -> int:
    """Rows of `items` this transaction read so far (index fetches and sequential reads)."""
    return pg.execute(
        "SELECT coalesce(idx_tup_fetch, 0) + seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'items'"
    ).fetchone()[0]


def test_a_write_into_a_big_story_reads_as_few_rows(pg: psycopg.Connection) -> None:
    """Placing an item in a story of 400 members whose first-seen times are all equal reads
    as many rows as in a story of 20 (012: a few index steps whatever the cluster's size):
    the cluster index ends with id, as SQLite's ends with the rowid, so the first members by
    (first_seen_at, id) come off the index without sorting the ties. 4,000 older items make
    the stories a small part of the table, as they are, so the planner's choice is real."""
    pg.execute(
        "INSERT INTO feeds (id, url, created_at) VALUES (1, 'https://a.example/', %s)", (T0,)
    )
    pg.execute(
        """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at, changed_at,
                              content_hash)
           SELECT n, 1, n::text, 't', 'x', %s, %s, %s, 'h' FROM generate_series(10000, 13999) AS n""",
        (T0, T0, T0),
    )
    for cluster, size in ((1, 20), (2, 400)):
        base = cluster * 1000
        pg.execute(
            "INSERT INTO clusters (id, representative_id, created_at) VALUES (%s, %s, %s)",
            (cluster, base, T0),
        )
        with pg.cursor() as cur:
            cur.executemany(
                """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                      changed_at, content_hash) VALUES (%s, 1, %s, 't', 'x', %s, %s, %s, 'h')""",
                [(base + n, f"{base + n}", T1, T1, T1) for n in range(size + 2)],
            )
            cur.executemany(
                "UPDATE items SET cluster_id = %s WHERE id = %s",
                [(cluster, base + n) for n in range(size)],
            )
    pg.execute("ANALYZE items")
    read = {}
    for cluster, size in ((1, 20), (2, 400)):
        base = cluster * 1000
        for n in (size, size + 1):  # the second joins ahead of the rest: it comes first now
            if n == size + 1:
                pg.execute("UPDATE items SET first_seen_at = %s WHERE id = %s", (T0, base + n))
            with pg.transaction():
                before = _rows_read(pg)
                pg.execute(
                    "UPDATE items SET cluster_id = %s, placed_seq = 1 WHERE id = %s",
                    (cluster, base + n),
                )
                read[size, n - size] = _rows_read(pg) - before
    first = pg.execute("SELECT id FROM items WHERE cluster_id = 2 AND duplicate = 0").fetchall()
    assert first == [(2401,)]  # the one that joined ahead
    assert read[400, 0] == read[20, 0] and read[400, 1] == read[20, 1], read
    assert read[400, 1] < 20, read
