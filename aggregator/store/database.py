"""Storage: feeds, items, clusters, signatures, fetch log, on SQLite or PostgreSQL.

SQLite (the default) is a plain file (WAL mode, busy timeout) that the daemon writes while
CLI readers and tools like `sqlite3` or Datasette read it. PostgreSQL (`--db
postgresql://...`, store/postgres.py) is for several workers on one database. The schema
lives in store/migrations/<backend>/NNN_*.sql, applied in order on open and recorded in
`schema_version`; a number means the same schema on both backends.

Each feed's result is written in one transaction, so a crash never leaves half a feed.
Write transactions run one at a time on both backends: SQLite's write lock, PostgreSQL's
transaction-level advisory lock (store/dialect.py), so what the writer reads (the next
ids, the index counters, the cluster of a copy) cannot change under it.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlite_utils

from ..config import Config, database_path
from ..errors import StoreError
from ..records import FeedSite, Item
from ..timeutil import from_iso, iso, utcnow
from .dialect import POSTGRES, SQLITE, Dialect
from .postgres import is_postgres_url, safe_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations" / "sqlite"
PG_MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations" / "postgres"
BUSY_TIMEOUT_MS = 30_000
WAL_PAGES = 10_000
CACHE_KIB = 65_536  # page cache per connection (64 MB); allocated as used
SEARCH_BATCH = 20_000  # items added to the full-text index per transaction (aggregator/store/migrations/sqlite/008)
_MIGRATION_NAME = re.compile(r"^(\d+)_[\w-]+\.sql$")


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    """Numbered migration files, in order."""
    found = []
    for path in directory.glob("*.sql"):
        m = _MIGRATION_NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


@dataclass(frozen=True)
class FeedRow:
    """A feed as stored: its config and fetch state."""

    id: int
    url: str
    name: str | None  # from feeds.yaml (feeds.configured_name, aggregator/store/migrations/sqlite/013)
    title: str | None
    tags: tuple[str, ...]
    interval_s: float | None
    active: bool
    status: str
    etag: str | None
    last_modified: str | None
    last_fetch_at: datetime | None
    last_error: str | None
    error_count: int
    next_fetch_at: datetime | None

    @property
    def display_name(self) -> str:
        return self.name or self.title or self.url


@dataclass(frozen=True)
class StoredItem:
    """What the update logic needs to know about an item already stored."""

    id: int
    content_hash: str
    cluster_id: int | None
    first_seen: datetime


def _feed_row(row: dict) -> FeedRow:
    return FeedRow(
        id=row["id"],
        url=row["url"],
        name=row["configured_name"],
        title=row["title"],
        tags=tuple(json.loads(row["tags"] or "[]")),
        interval_s=row["interval_s"],
        active=bool(row["active"]),
        status=row["status"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        last_fetch_at=from_iso(row["last_fetch_at"]),
        last_error=row["last_error"],
        error_count=row["error_count"],
        next_fetch_at=from_iso(row["next_fetch_at"]),
    )


def _file_identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@contextmanager
def open_store(config: Config, db_override: str | None = None, create_folder: bool = False) -> Iterator[Store]:
    """The configured database (or `db_override`), closed afterwards; `create_folder` for
    the commands that fill it (fetch, run)."""
    store = Store.open(database_path(config, db_override), create_folder=create_folder)
    try:
        yield store
    finally:
        store.close()


class Store:
    """The one object that reads and writes the database."""

    def __init__(self, conn, path: Path | str, dialect: Dialect = SQLITE, db: sqlite_utils.Database | None = None):
        self.conn = conn  # sqlite3.Connection, or store.postgres.PgConnection (the same calls)
        self.path = path  # the SQLite file, or the PostgreSQL URL
        self.dialect = dialect
        self.db = db  # sqlite-utils' view of an SQLite file (None on PostgreSQL)
        # the exception class of this backend's driver (sqlite3.Error or psycopg.Error)
        self.Error: type[Exception] = sqlite3.Error
        # items this connection stored since the search index last caught up: a hint for
        # when to index (it may overcount after a rollback until the next index_search)
        self.search_backlog = 0
        self.identity = _file_identity(path) if dialect is SQLITE else None
        self.lock_wait = 0.0  # seconds spent waiting for the write lock (PostgreSQL)

    @property
    def on_file(self) -> bool:
        """Whether this is an SQLite file (which can be deleted, copied, checkpointed)."""
        return self.dialect is SQLITE

    @property
    def name(self) -> str:
        """The database as messages name it (a URL without its password)."""
        return str(self.path) if self.on_file else safe_url(str(self.path))

    def query(self, sql: str, params: Sequence = ()) -> list[dict]:
        """Rows as dicts."""
        if self.db is not None:
            return list(self.db.query(sql, params))
        return self.conn.query(sql, params)

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: str | Path, *, migrations_dir: Path | None = None, create_folder: bool = False) -> Store:
        """Open (creating if needed) and migrate. Fails with a StoreError that names the
        file and the fix, and never writes to a database it cannot use. `create_folder`:
        a first `fetch` or `run` with --db ~/y/d.db makes ~/y, as it makes the file; a
        read-only command does not make a folder for an empty database."""
        if is_postgres_url(str(path)):
            return cls._open_postgres(str(path), migrations_dir or PG_MIGRATIONS_DIR)
        migrations_dir = migrations_dir or MIGRATIONS_DIR
        path = Path(path)
        if create_folder:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"{path}: cannot create the folder {path.parent} ({exc.strerror}); create it or pass --db PATH"
                ) from None
        elif not path.parent.is_dir():
            raise StoreError(
                f"{path}: the folder {path.parent} does not exist; `aggregator fetch` creates it "
                "with the database, or pass --db PATH"
            )
        if path.exists() and path.is_dir():
            raise StoreError(f"{path}: is a folder, not a database file; pass --db PATH/aggregator.db")
        try:
            # used by one thread at a time: the event loop, or the poll's writer thread
            conn = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(_explain_db_error(path, exc)) from None
        db = sqlite_utils.Database(conn)
        store = cls(conn, path, SQLITE, db)
        try:
            store._check_and_migrate(migrations_dir)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(_explain_db_error(path, exc)) from None
        except StoreError:
            conn.close()
            raise
        return store

    def _check_and_migrate(self, migrations_dir: Path) -> None:
        c = self.conn
        # Reading the schema first proves the file is a database before anything is written.
        c.execute("SELECT count(*) FROM sqlite_master").fetchone()
        known = migrations(migrations_dir)
        latest = known[-1][0] if known else 0
        has_version = c.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        current = 0
        if has_version:
            current = c.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        elif c.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(
                f"{self.path}: is an SQLite database, but not an aggregator one; "
                "pass --db with another path"
            )
        if current > latest:
            raise StoreError(
                f"{self.path}: database schema version {current} is newer than this "
                f"aggregator understands ({latest}); upgrade aggregator"
            )
        c.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        c.execute("PRAGMA foreign_keys = ON")
        if current < latest or c.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                c.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"{self.path}: cannot write the database: {exc}") from None
        c.execute("PRAGMA synchronous = NORMAL")
        # A checkpoint (the WAL copied back into the database) syncs the disk twice; at
        # SQLite's default of every 1,000 pages it ran every few feeds of a busy poll and
        # cost ~27 us per stored item. Every WAL_PAGES pages instead (the WAL file then
        # stays up to ~40 MB; the hourly maintenance truncates it).
        c.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES}")
        # SQLite's default page cache is 2 MB: once the item indexes (key, cluster, first
        # seen) and the search index outgrow it, every insert and lookup rereads pages
        c.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        pending = [(n, p) for n, p in known if n > current]
        if not pending:
            return
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for number, path in pending:
                for statement in _split_sql(path.read_text(encoding="utf-8")):
                    c.execute(statement)
                c.execute(
                    "INSERT INTO schema_version VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ','now'))",
                    (number, path.name),
                )
            c.execute("COMMIT")
        except sqlite3.Error:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    @classmethod
    def _open_postgres(cls, url: str, migrations_dir: Path) -> Store:
        import psycopg

        from .postgres import PgConnection, explain

        try:
            conn = PgConnection(url)
        except psycopg.Error as exc:
            raise StoreError(explain(url, exc)) from None
        store = cls(conn, url, POSTGRES)
        store.Error = psycopg.Error
        try:
            store._migrate_postgres(migrations_dir)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(explain(url, exc)) from None
        except StoreError:
            conn.close()
            raise
        return store

    def _migrate_postgres(self, migrations_dir: Path) -> None:
        """As on SQLite; the migrations run under an advisory lock, so workers starting
        together apply them once."""
        c = self.conn
        known = migrations(migrations_dir)
        latest = known[-1][0] if known else 0
        c.execute("BEGIN")
        try:
            c.execute(f"SELECT pg_advisory_xact_lock({POSTGRES.migrate_lock_key})")
            has_version = c.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
            current = 0
            if has_version:
                current = c.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
            elif c.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
            ).fetchone()[0]:
                raise StoreError(
                    f"{self.name}: is a PostgreSQL database with other tables, not an aggregator one; "
                    "create an empty database for aggregator (createdb aggregator)"
                )
            if current > latest:
                raise StoreError(
                    f"{self.name}: database schema version {current} is newer than this "
                    f"aggregator understands ({latest}); upgrade aggregator"
                )
            c.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            for number, path in known:
                if number > current:
                    c.execute(path.read_text(encoding="utf-8"))
                    c.execute(
                        "INSERT INTO schema_version VALUES (?, ?, ?)", (number, path.name, iso(utcnow()))
                    )
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        c.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def check_file(self) -> None:
        """StoreError if the file at our path is no longer the one we opened: deleted (we
        would write on into the unlinked file, and the next CLI call would make an empty
        one) or replaced (restored from a backup, moved). PostgreSQL: nothing to check."""
        if not self.on_file:
            return
        now = _file_identity(self.path)
        if now == self.identity:
            return
        what = "was deleted" if now is None else "was replaced by another file"
        raise StoreError(f"{self.path}: the database file {what} while the daemon was using it")

    def save_copy(self) -> Path:
        """Everything this connection can still read (also from a deleted file, which stays
        open until we close it), written beside the path through SQLite's backup API."""
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        # never the path itself: whoever deleted or replaced the file decides what goes there
        target = self.path.with_name(f"{self.path.name}.saved-{stamp}")
        copy = sqlite3.connect(target)
        try:
            self.conn.backup(copy)
        finally:
            copy.close()
        return target

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, holding the write lock from the start (SQLite: BEGIN
        IMMEDIATE; PostgreSQL: an advisory lock), so a busy database waits instead of
        failing half-way and two writers never interleave."""
        self.conn.execute(self.dialect.begin_write)
        if self.dialect.write_lock:
            waited = time.perf_counter()
            try:
                self.conn.execute(self.dialect.write_lock)
            except BaseException:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.lock_wait += time.perf_counter() - waited
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:  # an I/O error may have rolled it back already
                self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """A consistent read of several queries while the daemon writes. A read that failed
        ends with a ROLLBACK (on a connection that broke there is nothing to commit)."""
        self.conn.execute(self.dialect.begin_read)
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def schema_version(self) -> int:
        return self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]

    # ------------------------------------------------------------ feeds

    def sync_feeds(self, config: Config, now: datetime) -> list[FeedRow]:
        """Make the feeds table match feeds.yaml: add new feeds, update names/tags/intervals,
        mark feeds no longer listed inactive (their items stay). Returns the active feeds.
        Writes only when something differs, so readers never wait for the write lock."""
        if self._feeds_match(config):
            return self.feeds(active_only=True)
        with self.transaction():
            listed = set()
            for feed in config.feeds:
                listed.add(feed.url)
                self.conn.execute(
                    """INSERT INTO feeds (url, configured_name, tags, interval_s, active, created_at)
                       VALUES (?, ?, ?, ?, 1, ?)
                       ON CONFLICT (url) DO UPDATE SET
                         configured_name = excluded.configured_name, tags = excluded.tags,
                         interval_s = excluded.interval_s, active = 1""",
                    (feed.url, feed.name, json.dumps(list(feed.tags)), feed.interval, iso(now)),
                )
            for (url,) in self.conn.execute("SELECT url FROM feeds WHERE active = 1").fetchall():
                if url not in listed:
                    self.conn.execute("UPDATE feeds SET active = 0 WHERE url = ?", (url,))
        return self.feeds(active_only=True)

    def _feeds_match(self, config: Config) -> bool:
        stored = {
            r[0]: r[1:]
            for r in self.conn.execute(
                "SELECT url, configured_name, tags, interval_s FROM feeds WHERE active = 1"
            )
        }
        wanted = {f.url: (f.name, json.dumps(list(f.tags)), f.interval) for f in config.feeds}
        return stored == wanted

    def feeds(self, active_only: bool = False) -> list[FeedRow]:
        sql = "SELECT * FROM feeds" + (" WHERE active = 1" if active_only else "") + " ORDER BY id"
        return [_feed_row(r) for r in self.query(sql)]

    def feed_sites(self) -> dict[str, FeedSite]:
        """Each stored feed's own title and site link by URL (`feeds export`: OPML's
        text and htmlUrl for feeds that feeds.yaml does not name)."""
        return {
            url: FeedSite(title, site_url)
            for url, title, site_url in self.conn.execute("SELECT url, title, site_url FROM feeds")
        }

    def feed_summaries(self) -> list[dict]:
        """Feeds with their item counts, for `feeds list`."""
        return list(
            self.query(
                """SELECT f.*, (SELECT count(*) FROM items i WHERE i.feed_id = f.id) AS items
                   FROM feeds f ORDER BY f.active DESC, f.id"""
            )
        )

    def update_feed_state(self, feed_id: int, **columns) -> None:
        """Fetch state after one attempt (etag, status, error count, next fetch time...)."""
        values = {k: iso(v) if isinstance(v, datetime) else v for k, v in columns.items()}
        if "next_fetch_at" in values:  # a result: any claim on the feed ends (store/leases.py)
            values.setdefault("lease_owner", None)
            values.setdefault("lease_until", None)
        assignments = ", ".join(f"{k} = ?" for k in values)
        self.conn.execute(
            f"UPDATE feeds SET {assignments} WHERE id = ?", (*values.values(), feed_id)
        )

    def log_fetch(
        self,
        feed_id: int,
        fetched_at: datetime,
        outcome: str,
        http_status: int | None,
        duration: float,
        new_items: int = 0,
        updated_items: int = 0,
        error: str | None = None,
    ) -> None:
        self.conn.execute(
            """INSERT INTO fetch_log (feed_id, fetched_at, outcome, http_status, duration_ms,
                                      new_items, updated_items, error)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (feed_id, iso(fetched_at), outcome, http_status, round(duration * 1000),
             new_items, updated_items, error),
        )  # fmt: skip

    # ------------------------------------------------------------ items

    def stored_items(self, feed_id: int, keys: Sequence[str]) -> dict[str, StoredItem]:
        """The feed's items among `keys`, in one query per 500 keys."""
        found: dict[str, StoredItem] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, id_, digest, cluster, first_seen in self.conn.execute(
                f"SELECT key, id, content_hash, cluster_id, first_seen_at FROM items "
                f"WHERE feed_id = ? AND key IN ({marks})",
                (feed_id, *chunk),
            ):
                found[key] = StoredItem(id_, digest, cluster, from_iso(first_seen))
        return found

    def insert_items(self, feed_id: int, items: Iterable[Item], now: datetime) -> list[int]:
        """New items; returns their ids in order."""
        items = list(items)
        stamp = iso(now)
        # the ids SQLite would choose (max + 1, ...), given up front so one executemany
        # writes them all; the caller's transaction holds the write lock meanwhile
        first = self.conn.execute("SELECT coalesce(max(id), 0) + 1 FROM items").fetchone()[0]
        ids = list(range(first, first + len(items)))
        self.conn.executemany(
            """INSERT INTO items (id, feed_id, key, url, canonical_url, title, text, author,
                   published_at, updated_at, first_seen_at, changed_at, content_hash)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [(item_id, feed_id, item.key, item.url, item.canonical_url, item.title, item.text,
              item.author, iso(item.published), iso(item.updated), stamp, stamp, item.content_hash)
             for item_id, item in zip(ids, items, strict=True)],
        )  # fmt: skip
        self.search_backlog += len(ids)
        return ids

    def update_item(self, item_id: int, item: Item, now: datetime) -> None:
        """A changed entry is updated in place (same row, same first-seen time; an undated
        one keeps the publish time it got when first seen, so it does not come back as new)."""
        self.conn.execute(
            """UPDATE items SET url = ?, canonical_url = ?, title = ?, text = ?, author = ?,
                   published_at = CASE WHEN ? THEN published_at ELSE ? END, updated_at = ?,
                   changed_at = ?, content_hash = ?
               WHERE id = ?""",
            (item.url, item.canonical_url, item.title, item.text, item.author, item.undated,
             iso(item.published), iso(item.updated), iso(now), item.content_hash, item_id),
        )  # fmt: skip
        self.search_backlog += 1

    def index_search(self, batch: int = SEARCH_BATCH) -> int:
        """Add the items waiting in `search_pending` to the full-text index, `batch` per
        transaction (aggregator/store/migrations/sqlite/005 says why in batches); returns how many."""
        done = 0
        while True:
            with self.transaction():
                upto = self.conn.execute(
                    "SELECT max(item_id) FROM (SELECT item_id FROM search_pending ORDER BY item_id LIMIT ?) AS waiting",
                    (batch,),
                ).fetchone()[0]
                if upto is None:
                    self.search_backlog = 0  # nothing waits, whoever indexed it
                    return done
                self.conn.execute(self.dialect.index_search, (upto,))
                done += self.conn.execute("DELETE FROM search_pending WHERE item_id <= ?", (upto,)).rowcount

    def search_waiting(self) -> bool:
        return self.conn.execute("SELECT EXISTS (SELECT 1 FROM search_pending)").fetchone()[0] == 1

    def count(self, table: str) -> int:
        return self.conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


def _split_sql(script: str) -> list[str]:
    """Statements of a migration file, split where SQLite says a statement is complete."""
    statements, current = [], []
    for line in script.splitlines(keepends=True):
        current.append(line)
        text = "".join(current)
        if sqlite3.complete_statement(text):
            statements.append(text.strip())
            current = []
    rest = "".join(current).strip()
    if rest and any(not ln.strip().startswith("--") for ln in rest.splitlines() if ln.strip()):
        raise sqlite3.OperationalError(f"incomplete statement at the end of a migration: {rest[:80]}")
    return statements


def _explain_db_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{path}: is not a valid SQLite database ({text}); restore it from a backup or pass --db with a new path"
    if "readonly" in text or "unable to open" in text:
        return f"{path}: cannot write the database ({text}); check the folder's permissions or pass --db"
    return f"{path}: database error: {text}"


def due_feeds(store: Store, now: datetime) -> list[FeedRow]:
    """Active, not dead feeds whose next fetch time has come."""
    return [
        _feed_row(r)
        for r in store.query(
            """SELECT * FROM feeds WHERE active = 1 AND status != 'dead'
               AND next_fetch_at IS NOT NULL AND next_fetch_at <= ? ORDER BY next_fetch_at""",
            [iso(now)],
        )
    ]


def schedule_new_feeds(store: Store, when: dict[int, datetime]) -> None:
    """First fetch times for feeds never fetched (also ones scheduled for later)."""
    with store.transaction():
        for feed_id, at in when.items():
            store.conn.execute(
                "UPDATE feeds SET next_fetch_at = ? WHERE id = ? AND last_fetch_at IS NULL",
                (iso(at), feed_id),
            )
