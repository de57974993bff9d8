"""Where the SQL of the two backends differs: a few statements and fragments, one frozen
record per backend. Everything else is one SQL text for both (SQLite has taken up
PostgreSQL's ON CONFLICT, RETURNING and window functions), with `?` placeholders that
store/postgres.py turns into psycopg's."""

from __future__ import annotations

from dataclasses import dataclass

# advisory lock keys (any 64-bit numbers, the same in every worker)
WRITE_LOCK_KEY = 0x61676772_00000001  # one writer at a time: ids, index counters, clusters
MIGRATE_LOCK_KEY = 0x61676772_00000002  # schema migrations, once per database
PUBLISH_LOCK_KEY = 0x61676772_00000003  # the one worker that publishes the digest


@dataclass(frozen=True)
class Dialect:
    name: str
    begin_write: str  # opens a write transaction
    write_lock: str | None  # run right after begin_write: serialises writers (None: begin did)
    begin_read: str  # a consistent snapshot for several reads
    json_values: str  # FROM-clause fragment: the values of a JSON list column as t.value
    contains: str  # expression: whether {0} contains {1} (both text)
    skip_locked: str  # appended to a SELECT of rows to claim (feed leases)
    greatest: str  # the scalar max() / min() of two values
    least: str
    defer_foreign_keys: str  # foreign keys checked at commit, for this transaction
    index_search: str  # adds the waiting items with id <= ? to the full-text index
    id_type: str  # the column type of an id in a table of our own (temporary tables)
    migrate_lock_key: int = MIGRATE_LOCK_KEY


SQLITE = Dialect(
    name="sqlite",
    begin_write="BEGIN IMMEDIATE",
    write_lock=None,
    begin_read="BEGIN",
    json_values="json_each({}) t",
    contains="instr({0}, {1}) > 0",
    skip_locked="",  # one writer at a time already
    greatest="max",
    least="min",
    defer_foreign_keys="PRAGMA defer_foreign_keys = ON",
    index_search="""INSERT INTO items_fts (rowid, title, text)
                    SELECT id, title, text FROM items
                    WHERE id IN (SELECT item_id FROM search_pending WHERE item_id <= ?)""",
    id_type="INTEGER",  # 64-bit; as INTEGER PRIMARY KEY, the table's rowid
)

POSTGRES = Dialect(
    name="postgresql",
    begin_write="BEGIN",
    write_lock=f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})",
    begin_read="BEGIN ISOLATION LEVEL REPEATABLE READ",
    json_values="json_array_elements_text(({})::json) AS t(value)",
    contains="strpos({0}, {1}) > 0",
    skip_locked="FOR UPDATE SKIP LOCKED",
    greatest="greatest",
    least="least",
    defer_foreign_keys="SET CONSTRAINTS ALL DEFERRED",  # the schema's keys are DEFERRABLE
    # a tsvector per item (migrations/postgres: search_document weighs the title A, text B)
    index_search="""INSERT INTO items_search (item_id, doc)
                    SELECT id, search_document(title, text) FROM items
                    WHERE id IN (SELECT item_id FROM search_pending WHERE item_id <= ?)
                    ON CONFLICT (item_id) DO UPDATE SET doc = excluded.doc""",
    id_type="BIGINT",  # INTEGER is 32-bit here; the schema's ids are BIGINT
)
