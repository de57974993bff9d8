"""PostgreSQL through psycopg 3, behind the small connection interface the store already
uses for SQLite: `execute(sql, params)` with `?` placeholders returning a cursor
(fetchone, fetchall, fetchmany, iteration, rowcount), `executemany`, `in_transaction`
and `close`. One Store and, wherever the two dialects agree, one SQL text serve both
backends; where they differ the store asks `dialect` (see store/dialect.py).

psycopg is imported only when a postgresql:// URL is opened: SQLite users never load it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

# a quoted string, a quoted name or a comment (whose ? are not placeholders), else a ?
_TOKENS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/)|\?""", re.S)
URL_SCHEMES = ("postgresql://", "postgres://")
# a statement that ends a transaction
_ENDS = re.compile(r"\s*(COMMIT|END|ROLLBACK)\s*;?\s*$", re.I)


def is_postgres_url(target: object) -> bool:
    """Whether a --db value or settings.database names a PostgreSQL database."""
    return isinstance(target, str) and target.startswith(URL_SCHEMES)


@lru_cache(maxsize=1024)
def to_psycopg(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s`. psycopg reads `%` everywhere in a
    query that has parameters (also inside quotes), so every literal `%` is doubled."""
    sql = sql.replace("%", "%%")
    return _TOKENS.sub(lambda m: m.group(1) or "%s", sql)


def safe_url(url: str) -> str:
    """The URL without its password (user:PASSWORD@, or a password= parameter), for
    messages and logs."""
    url = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def _password(url: str) -> str | None:
    m = re.search(r"://[^:/@]*:([^@/]*)@", url) or re.search(r"[?&]password=([^&#]*)", url)
    return m.group(1) if m and m.group(1) else None


def one_line(exc: BaseException) -> str:
    """A driver message on one line (libpq's run over several, with hints indented)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    for prefix in ("connection failed: ", "connection is bad: "):
        text = text.removeprefix(prefix)
    return text.replace("FATAL: ", "")


# Defaults for what the URL does not set itself. libpq waits for ever by default: for a
# connection to a host that does not answer, and (over TCP) for a server that vanished
# without closing the connection until the OS gives up on it, ~2 hours later. The daemon
# must notice within a minute and back off (service/outage.py), and a connection attempt
# blocks the thread making it: 5 s keeps a shutdown within the daemon's 10 s promise.
# Unix sockets ignore the keepalives.
CONNECT_DEFAULTS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30,
                    "keepalives_interval": 10, "keepalives_count": 3}  # fmt: skip


def connect_options(url: str) -> dict[str, int]:
    """CONNECT_DEFAULTS for the options the URL leaves out (a URL that cannot be read gets
    them all, and psycopg then says what is wrong with it)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        given = conninfo_to_dict(url)
    except ProgrammingError:
        given = {}
    return {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}


URL_FORM = "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"
_REFUSED = re.compile(r'role "[^"]*" does not exist|authentication failed|pg_hba\.conf')


def explain(url: str, exc: BaseException) -> str:
    """What went wrong opening the database at `url`, on one line: the database (without
    its password), the driver's reason and what to do about it."""
    import psycopg

    reason = one_line(exc)
    password = _password(url)
    if password:  # a driver message may quote the URL, or parts of it
        reason = reason.replace(url, safe_url(url)).replace(password, "***")
    name = safe_url(url)
    unreadable = isinstance(exc, psycopg.ProgrammingError) and "URI" in reason
    if unreadable or "connection option" in reason:
        return f"{name}: not a usable PostgreSQL URL ({reason}); write it as {URL_FORM}"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return (f"{name}: this user may not create aggregator's tables ({reason}); make it the owner "
                "of the database (ALTER DATABASE ... OWNER TO ...) or grant it CREATE on its schema")  # fmt: skip
    if not isinstance(exc, psycopg.OperationalError):
        return f"{name}: database error: {reason}"
    missing = re.search(r'database "([^"]+)" does not exist', reason)
    if missing:
        return (f"{name}: cannot connect to PostgreSQL ({reason}); create the database "
                f"(createdb {missing.group(1)}) or fix the database name in the URL")  # fmt: skip
    if _REFUSED.search(reason):
        return (f"{name}: PostgreSQL refused the connection ({reason}); check the user name and password "
                "in the URL, and that the server's pg_hba.conf lets this user connect")  # fmt: skip
    return (f"{name}: cannot connect to PostgreSQL ({reason}); check that the PostgreSQL server is running "
            "and that the URL's host and port are right")  # fmt: skip


class PgConnection:
    """A psycopg connection in autocommit mode whose transactions the store opens and
    ends with explicit BEGIN / COMMIT, as it does on SQLite.

    A connection broken by a server restart (or a dropped network) is replaced at the next
    statement, so the daemon's outage breaker (service/outage.py) sees the database come
    back, but never inside a transaction: there every statement fails until the caller
    ends it (ROLLBACK, or a COMMIT that fails saying the work was rolled back), since a
    new connection would run the rest of it statement by statement, outside any
    transaction, and commit half of it. The event loop and the poll's writer thread take
    turns on one connection; a lock keeps two of them from replacing it at once."""

    def __init__(self, url: str):
        self.url = url
        self._conn = _connect(url)
        self._lost_transaction = False  # the connection broke while a transaction was open
        self._replacing = threading.Lock()
        self._closed = False

    @property
    def raw(self):
        """The psycopg connection itself (for COPY, LISTEN and other PostgreSQL-only calls)."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        if self._lost_transaction:
            return True
        return self._conn.info.transaction_status not in (
            TransactionStatus.IDLE,
            TransactionStatus.UNKNOWN,
        )

    def _ready(self, sql: str):
        """The connection to run `sql` on, a new one if it broke outside a transaction;
        None for the ROLLBACK that ends a lost transaction (nothing left to roll back)."""
        conn = self._conn
        if not (conn.broken or conn.closed):
            return conn
        import psycopg

        if self._closed:  # by close(): as sqlite3's, a closed connection stays closed
            raise psycopg.InterfaceError("the connection is closed")
        if self._lost_transaction:
            ending = _ENDS.match(sql)
            if ending:
                self._lost_transaction = False
            if ending and ending.group(1).upper() == "ROLLBACK":
                return None
            if ending:
                raise psycopg.OperationalError(
                    "the connection to the server was lost during this transaction, so it was "
                    "rolled back: nothing of it was stored"
                )
            raise psycopg.OperationalError(
                "the connection to the server was lost inside a transaction; end it (ROLLBACK) "
                "before the next statement"
            )
        with self._replacing:
            if self._conn is conn:
                conn.close()
                self._conn = _connect(self.url)
        return self._conn

    def _run(self, sql: str, call):
        """`call(connection)`, noting a transaction that the connection's loss ended."""
        conn = self._ready(sql)
        if conn is None:
            return _NO_ROWS
        from psycopg import OperationalError
        from psycopg.pq import TransactionStatus

        # a COMMIT or ROLLBACK that fails with the connection ends the transaction anyway
        was_open = conn.info.transaction_status != TransactionStatus.IDLE and not _ENDS.match(sql)
        try:
            return call(conn)
        except OperationalError:
            if was_open and conn.broken:
                self._lost_transaction = True
            raise

    def execute(self, sql: str, params: Sequence[Any] | None = None):
        if params is None or not len(params):
            # no parameters: psycopg sends the text as it is (several statements allowed)
            return self._run(sql, lambda conn: conn.execute(sql))
        return self._run(sql, lambda conn: conn.execute(to_psycopg(sql), tuple(params)))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]):
        def run(conn):
            cur = conn.cursor()
            cur.executemany(to_psycopg(sql), [tuple(r) for r in rows])
            return cur

        return self._run(sql, run)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """Rows as dicts (sqlite-utils' `db.query` shape)."""
        from psycopg.rows import dict_row

        def run(conn) -> list[dict]:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(to_psycopg(sql), tuple(params) or None)
                return cur.fetchall() if cur.description else []

        return self._run(sql, run)

    def close(self) -> None:
        self._closed = True
        self._conn.close()


class _NoRows:
    """The cursor of a statement that had nothing to do."""

    rowcount = 0
    description = None

    def fetchone(self):
        return None

    def fetchall(self) -> list:
        return []

    def fetchmany(self, size: int = 1) -> list:
        return []

    def __iter__(self):
        return iter(())


_NO_ROWS = _NoRows()


def _connect(url: str):
    import psycopg

    conn = psycopg.connect(url, autocommit=True, **connect_options(url))
    conn.adapters.register_loader("numeric", _numeric_loader())
    return conn


@lru_cache(maxsize=1)
def _numeric_loader():
    """sum() and avg() of integers are `numeric` on PostgreSQL (Decimal in Python); the
    store's callers expect SQLite's int or float."""
    from psycopg.adapt import Loader

    class NumericLoader(Loader):
        def load(self, data) -> int | float:
            value = Decimal(bytes(data).decode())
            return int(value) if value == value.to_integral_value() else float(value)

    return NumericLoader
