"""Opening the SQLite file: migrations, idempotent reopen, WAL, and refusing what isn't ours.

SQLite only, but for the reopen (on both backends): files, folders, PRAGMAs and the WAL
are SQLite's. PostgreSQL's counterparts (a foreign or newer database refused, a server that
is not there, two workers migrating at once) are in tests/test_pg_store.py.
"""

import sqlite3
from pathlib import Path

import pytest

from aggregator.errors import StoreError
from aggregator.store.database import MIGRATIONS_DIR, PG_MIGRATIONS_DIR, Store, migrations


def test_migrations_create_schema(tmp_path: Path) -> None:
    db = tmp_path / "agg.db"
    store = Store.open(db)
    try:
        latest = migrations()[-1][0]
        assert store.schema_version() == latest
        tables = {
            r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {"schema_version", "feeds", "items", "clusters", "signatures", "fetch_log"} <= tables
    finally:
        store.close()
    # a plain SQLite file any tool can read
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT version, name FROM schema_version").fetchall()
    assert rows == [(n, p.name) for n, p in migrations()]


def test_reopen_is_idempotent(db_target: Path | str) -> None:
    db = db_target
    store = Store.open(db)
    store.conn.execute(
        "INSERT INTO feeds (url, created_at) VALUES ('https://a.example.com/', '2024-01-01T00:00:00Z')"
    )
    store.close()
    for _ in range(2):
        store = Store.open(db)
        try:
            applied = store.conn.execute(
                "SELECT version FROM schema_version ORDER BY version"
            ).fetchall()
            folder = MIGRATIONS_DIR if store.on_file else PG_MIGRATIONS_DIR
            assert [r[0] for r in applied] == [n for n, _ in migrations(folder)]
            assert store.schema_version() == migrations()[-1][0]  # one number, both backends
            assert store.count("feeds") == 1
        finally:
            store.close()


def test_wal_mode(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "agg.db")
    try:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "agg.db") as conn:  # persistent: set in the file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_non_database_file_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"These are my notes, not a database.\n" * 200)
    before = snapshot(db)
    with pytest.raises(StoreError) as info:
        Store.open(db)
    assert str(db) in str(info.value)
    assert "not a valid SQLite database" in str(info.value)
    assert snapshot(db) == before


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    conn.close()
    before = snapshot(db)
    with pytest.raises(StoreError, match="not an aggregator one"):
        Store.open(db)
    assert snapshot(db) == before


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "agg.db"
    Store.open(db).close()
    future = migrations()[-1][0] + 1
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = DELETE")  # fold the WAL in: one file to compare
    conn.execute(
        "INSERT INTO schema_version VALUES (?, 'future.sql', '2030-01-01T00:00:00Z')", (future,)
    )
    conn.commit()
    conn.close()
    before = snapshot(db)
    with pytest.raises(StoreError) as info:
        Store.open(db)
    message = str(info.value)
    assert str(db) in message
    assert f"schema version {future} is newer" in message
    assert "upgrade aggregator" in message
    assert snapshot(db) == before
    with sqlite3.connect(db) as conn:  # still not switched to WAL by the failed open
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_missing_folder_is_created_for_a_first_fetch(tmp_path: Path) -> None:
    db = tmp_path / "nope" / "deeper" / "agg.db"  # a first run with --db ~/y/d.db
    with pytest.raises(StoreError, match="does not exist"):  # a read-only command
        Store.open(db)
    assert not db.parent.exists()
    Store.open(db, create_folder=True).close()
    assert db.is_file()


def test_folder_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        Store.open(tmp_path / "file" / "agg.db", create_folder=True)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a folder"):
        Store.open(tmp_path)
