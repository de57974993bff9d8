"""PostgreSQL through psycopg 3, behind the small connection interface the store already
uses for SQLite: `execute(sql, params)` with `?` placeholders returning a cursor
(fetchone, fetchall, fetchmany, iteration, rowcount), `executemany`, `in_transaction`
and `close`. One Store and, wherever the two dialects agree, one SQL text serve both
backends; where they differ the store asks `dialect` (see store/dialect.py).

psycopg is imported only when a postgresql:// URL is opened: SQLite users never load it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from decimal import Decimal
from functools import lru_cache
from typing import Any

# a quoted string, a quoted name or a comment (whose ? are not placeholders), else a ?
_TOKENS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/)|\?""", re.S)
URL_SCHEMES = ("postgresql://", "postgres://")


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
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


class PgConnection:
    """A psycopg connection in autocommit mode whose transactions the store opens and
    ends with explicit BEGIN / COMMIT, as it does on SQLite. A connection broken by a
    server restart is replaced at the next statement outside a transaction, so the
    daemon's outage breaker sees the database come back."""

    def __init__(self, url: str):
        self.url = url
        self._conn = _connect(url)

    @property
    def raw(self):
        """The psycopg connection itself (for COPY, LISTEN and other PostgreSQL-only calls)."""
        return self._conn

    @property
    def in_transaction(self) -> bool:
        import psycopg.pq

        return self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def _ready(self):
        if self._conn.broken or self._conn.closed:
            self._conn = _connect(self.url)
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] | None = None):
        conn = self._ready()
        if params is None or not len(params):
            # no parameters: psycopg sends the text as it is (several statements allowed)
            return conn.execute(sql)
        return conn.execute(to_psycopg(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]):
        cur = self._ready().cursor()
        cur.executemany(to_psycopg(sql), [tuple(r) for r in rows])
        return cur

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict]:
        """Rows as dicts (sqlite-utils' `db.query` shape)."""
        from psycopg.rows import dict_row

        with self._ready().cursor(row_factory=dict_row) as cur:
            cur.execute(to_psycopg(sql), tuple(params) or None)
            return cur.fetchall() if cur.description else []

    def close(self) -> None:
        self._conn.close()


def _connect(url: str):
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
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
