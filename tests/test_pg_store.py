"""PostgreSQL only: what SQLite has no counterpart for, against real servers.

- a database that cannot be used (server not running, unknown database or user, a broken
  URL) stops the real CLI with one line naming it, without its password, and the fix;
- a database holding other tables, or a newer schema, is refused untouched;
- workers starting together on an empty database migrate it once;
- a server that stops under a running daemon: one outage message, backoff, /healthz
  failing, then the connections are made again and nothing is lost;
- a transaction cut by a server restart is never continued on a new connection;
- prune and maintain.

The tests that stop or restart a server use one of their own (`own_server`), never the
session's shared one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from feedserver import FeedServer
from pgserver import WAIT_S, PostgresServer, _run, server_account
from test_daemon import REPO, Rig, child_env, story, wait_for

from aggregator.errors import StoreError
from aggregator.store.database import PG_MIGRATIONS_DIR, Store, migrations
from aggregator.store.dialect import MIGRATE_LOCK_KEY
from aggregator.store.postgres import safe_url
from aggregator.store.upkeep import maintain, prune
from aggregator.timeutil import iso, utcnow

PASSWORD = "s3cret-Pw"


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, which it may stop and start."""
    with PostgresServer() as server:
        yield server


def pg_ctl(server: PostgresServer, *args: str) -> None:
    """`pg_ctl ARGS` on `server`'s cluster, waiting for it to finish (stop, start, restart)."""
    extra = ["-l", str(server.log_path)] if args[0] in ("start", "restart") else []
    done = _run([server.binaries.pg_ctl, *args, "-D", server.data_dir, *extra, "-w", "-t", str(WAIT_S)],
                server_account(), cwd=server.data_dir.parent)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def cli(tmp_path: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m aggregator --config (an empty feeds.yaml) --db DB ARGS`."""
    cfg = tmp_path / "feeds.yaml"
    if not cfg.exists():
        cfg.write_text("feeds: []\n", encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", db, *args],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def tables(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {r[0] for r in rows}


# ---------------------------------------------------------------- databases that cannot be used


def with_password(url: str) -> str:
    """The URL with PASSWORD for its user (the test server trusts local users: any
    password works, and none may show in a message)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


BAD_DATABASES = {
    # case: (URL from the server's own, the cause the message quotes, the fix it names)
    "server not running": (lambda pg, tmp: with_password(pg.url("agg")).replace(str(pg.folder), str(tmp)),
                           "No such file or directory", "check that the PostgreSQL server is running"),
    "unknown database": (lambda pg, tmp: with_password(pg.url("no_such_db")),
                         'database "no_such_db" does not exist', "createdb no_such_db"),
    "unknown user": (lambda pg, tmp: with_password(pg.url("postgres")).replace("postgres:", "nobody:", 1),
                     'role "nobody" does not exist', "check the user name and password"),
    "unknown option": (lambda pg, tmp: pg.url("postgres") + f"&colour=blue&password={PASSWORD}",
                       'invalid URI query parameter: "colour"', "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"),
    "broken URL": (lambda pg, tmp: f"postgresql://me:{PASSWORD}@[::1/agg",
                   "IPv6 host address", "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_DATABASES)
@pytest.mark.parametrize(
    "command", [("fetch",), ("clusters", "list"), ("run", "--once")], ids=" ".join
)
def test_a_database_that_cannot_be_used_is_one_line_naming_it_and_the_fix(
    postgres_server: PostgresServer, tmp_path: Path, case: str, command: tuple[str, ...]
) -> None:
    make_url, cause, fix = BAD_DATABASES[case]
    url = make_url(postgres_server, tmp_path)
    done = cli(tmp_path, url, *command)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aggregator: "), done.stderr
    assert PASSWORD not in done.stderr
    assert safe_url(url) in done.stderr and "***" in done.stderr  # the database, named
    assert cause in done.stderr and fix in done.stderr


def test_a_user_who_may_not_create_the_tables_is_told_what_to_grant(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS reader")  # roles belong to the whole server
        admin.execute("CREATE ROLE reader LOGIN")
    url = postgres_url.replace("postgresql://postgres@", "postgresql://reader@", 1)
    try:
        with pytest.raises(StoreError) as info:
            Store.open(url)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("DROP ROLE reader")
    message = str(info.value)
    assert message.startswith(safe_url(url)) and "permission denied" in message
    assert "OWNER TO" in message and "Traceback" not in message
    assert tables(postgres_url) == set()  # nothing half-made


def test_urls_lose_their_password_in_messages() -> None:
    assert safe_url("postgresql://u:pw@h:5/d") == "postgresql://u:***@h:5/d"
    assert (
        safe_url("postgres://u:p%40w@h/d?sslmode=require") == "postgres://u:***@h/d?sslmode=require"
    )
    assert (
        safe_url("postgresql://u@/d?host=/s&password=pw&port=5")
        == "postgresql://u@/d?host=/s&password=***&port=5"
    )
    assert safe_url("postgresql:///d?password=pw") == "postgresql:///d?password=***"
    assert safe_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_connections_time_out_and_notice_a_vanished_server_unless_the_url_says_otherwise() -> None:
    """libpq waits for ever by default (connect, and a server gone without a word, for the
    OS's 2 hours of TCP keepalive); the daemon must notice and back off instead."""
    from aggregator.store.postgres import connect_options

    defaults = connect_options("postgresql://u@h/d")
    assert defaults["connect_timeout"] == 5 and defaults["keepalives_idle"] == 30
    assert "connect_timeout" not in connect_options("postgresql://u@h/d?connect_timeout=3")
    assert "keepalives_idle" not in connect_options("postgresql://u@h/d?keepalives_idle=5")


def test_a_database_with_other_tables_is_refused_untouched(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE contacts (name text)")
    with pytest.raises(StoreError) as info:
        Store.open(postgres_url)
    message = str(info.value)
    assert message.startswith(safe_url(postgres_url))
    assert "not an aggregator one" in message and "createdb" in message
    assert tables(postgres_url) == {"contacts"}


def test_a_newer_schema_is_refused_untouched(postgres_url: str) -> None:
    Store.open(postgres_url).close()
    future = migrations(PG_MIGRATIONS_DIR)[-1][0] + 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schema_version VALUES (%s, 'future.sql', '2030-01-01T00:00:00Z')",
            (future,),
        )
        before = conn.execute("SELECT * FROM schema_version ORDER BY version").fetchall()
    with pytest.raises(StoreError) as info:
        Store.open(postgres_url)
    message = str(info.value)
    assert f"schema version {future} is newer" in message and "upgrade aggregator" in message
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT * FROM schema_version ORDER BY version").fetchall() == before


def test_workers_starting_together_migrate_an_empty_database_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two `aggregator` processes open one empty database at the same moment: the test
    holds the migration lock until both wait for it, then lets them go; one applies the
    schema, the other finds it applied (without the lock both would create the tables:
    "relation already exists", or two rows for one version)."""
    (tmp_path / "feeds.yaml").write_text("feeds: []\n", encoding="utf-8")
    argv = [sys.executable, "-m", "aggregator", "--config", str(tmp_path / "feeds.yaml"), "--db", postgres_url,
            "feeds", "list", "--json"]  # fmt: skip
    high, low = MIGRATE_LOCK_KEY >> 32, MIGRATE_LOCK_KEY & 0xFFFFFFFF
    with psycopg.connect(postgres_url, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        workers = [subprocess.Popen(argv, cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
        try:
            wait_for("both workers waiting for the migration lock", lambda: gate.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = %s AND objid = %s", (high, low)).fetchone()[0] == 2, timeout=60)  # fmt: skip
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK_KEY,))
        results = [(w.wait(60), *w.communicate()) for w in workers]
    assert [r[0] for r in results] == [0, 0], results
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(n,) for n, _ in migrations(PG_MIGRATIONS_DIR)]


# ---------------------------------------------------------------- the server goes away


def test_a_transaction_cut_by_a_server_restart_is_never_continued_on_a_new_connection(
    own_server: PostgresServer,
) -> None:
    """A restart ends the server's side of an open transaction. The next statement fails,
    and so must every later one until the caller ends the transaction: run on a fresh
    connection they would be committed one by one, outside the transaction the caller
    thinks it is in, and its COMMIT would then "succeed" for work that is gone."""
    url = own_server.new_database()
    store = Store.open(url)
    conn = store.conn
    add = "INSERT INTO feeds (url, created_at) VALUES (?, '2026-01-01T00:00:00Z')"
    try:
        conn.execute("BEGIN")
        conn.execute(add, ("https://a.example/feed",))
        pg_ctl(own_server, "restart", "-m", "fast")
        with pytest.raises(psycopg.OperationalError):
            conn.execute(add, ("https://b.example/feed",))
        assert conn.in_transaction  # the caller has to end it
        with pytest.raises(psycopg.OperationalError, match="inside a transaction"):
            conn.execute(add, ("https://c.example/feed",))
        with pytest.raises(psycopg.OperationalError, match="rolled back"):
            conn.execute("COMMIT")
        assert not conn.in_transaction
        assert store.count("feeds") == 0  # nothing of it, and the connection is back
        with store.transaction():
            conn.execute(add, ("https://d.example/feed",))
        assert [r[0] for r in conn.execute("SELECT url FROM feeds")] == ["https://d.example/feed"]
        # and a transaction the store runs is rolled back cleanly, without a new connection
        with pytest.raises(psycopg.OperationalError), store.transaction():
            conn.execute(add, ("https://e.example/feed",))
            pg_ctl(own_server, "restart", "-m", "fast")
            conn.execute(add, ("https://f.example/feed",))
        assert not conn.in_transaction
        assert [r[0] for r in conn.execute("SELECT url FROM feeds")] == ["https://d.example/feed"]
        # a COMMIT that fails with the connection ends the transaction too (a read
        # snapshot's, here): the next statement gets a new connection, not a refusal
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT count(*) FROM feeds")
        pg_ctl(own_server, "restart", "-m", "fast")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("COMMIT")
        assert not conn.in_transaction
        assert store.count("feeds") == 1
    finally:
        store.close()
    with pytest.raises(psycopg.InterfaceError):  # closed by us: not made again
        store.count("feeds")


OUTAGE = "cannot reach the database postgresql://"
RECOVERED = "database writes work again"


def test_the_daemon_rides_out_a_server_that_stops_and_starts_again(
    tmp_path: Path, feed_server: FeedServer, own_server: PostgresServer
) -> None:
    """`pg_ctl stop -m fast` under a running daemon (two feeds, so its polls write on the
    writer thread), a feed brings a story meanwhile; the server starts again. Nothing
    stored may be lost, the waiting story must be stored, and the log must say it once
    each way, with the fix, and never a traceback."""
    rig = Rig(tmp_path, feed_server, own_server.new_database())
    try:
        bridge, strike, fire = (
            story("bridge", "q1"),
            story("rail_strike", "r1"),
            story("library_fire", "q2"),
        )
        quay = rig.serve("/quay.xml", "Quay Times", [bridge])
        river = rig.serve("/river.xml", "Riverside Post", [strike])
        rig.write_config([quay, river], interval="1s")
        daemon = rig.start_serving()
        wait_for("both feeds stored", lambda: rig.count("items") == 2)
        before = rig.query("SELECT id, feed_id, key, title, cluster_id FROM items ORDER BY id")

        pg_ctl(own_server, "stop", "-m", "fast")
        rig.serve("/quay.xml", "Quay Times", [fire, bridge], etag='"v2"')
        daemon.wait_log(OUTAGE)
        health = wait_for("/healthz to say failing", lambda: (r := rig.http.get("/healthz")).status_code == 503
                          and r.json()["store"]["failed_tries"] >= 3 and r.json(), timeout=30)  # fmt: skip
        assert health["status"] == "failing" and health["store"]["writes"] == "failing"
        assert daemon.alive() and daemon.log.count(OUTAGE) == 1  # said once, however many tries
        assert "PostgreSQL server is running" in daemon.log

        pg_ctl(own_server, "start")
        titles = "SELECT title FROM items ORDER BY id"
        wait_for(
            "the story that waited stored", lambda: (fire.title,) in rig.query(titles), timeout=60
        )
        daemon.wait_log(RECOVERED, timeout=30)
        wait_for("/healthz ok again", lambda: rig.http.get("/healthz").status_code == 200)
        after = rig.query("SELECT id, feed_id, key, title, cluster_id FROM items ORDER BY id")
        assert after[: len(before)] == before and len(after) == 3  # nothing lost, nothing twice
        assert rig.query("SELECT count(*) FROM items WHERE cluster_id IS NULL") == [(0,)]
        # a filtered web page reads on a connection of its own, made after the restart
        assert rig.http.get("/?min_size=2").status_code == 200
        assert daemon.stop() == 0, daemon.log
        assert daemon.log.count(OUTAGE) == 1 and daemon.log.count(RECOVERED) == 1
        assert "Traceback" not in daemon.log and "web page query failed" not in daemon.log
    finally:
        rig.close()


def test_publishing_prune_and_maintain_give_way_to_an_outage(
    tmp_path: Path, own_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The jobs beside the poll meet the server gone too (it stopped while the digest was
    being published: seen in the test above). Each records the outage, said once, and
    returns: raised, it was a traceback out of the scheduler per run, and /healthz was not
    told. The digest is published again once the database answers."""
    import asyncio

    from aggregator.config import parse_config
    from aggregator.service.daemon import Daemon

    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("feeds: []\n", encoding="utf-8")
    config = parse_config(cfg.read_text(), cfg)
    store = Store.open(own_server.new_database())
    daemon = Daemon(config, store)
    daemon.publishing = True  # as the worker holding the publisher lock (test_workers.py elects it)
    try:
        daemon.publish()
        assert daemon.cache.health["status"] == "ok"
        pg_ctl(own_server, "stop", "-m", "fast")
        caplog.clear()
        daemon.publish()
        asyncio.run(daemon.prune_job())
        asyncio.run(daemon.maintain_job())
        outage = daemon.pipeline.outage
        assert outage.active and outage.failures == 3 and daemon._republish
        assert daemon.cache.health["status"] == "failing"
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and errors[0].startswith(OUTAGE), errors
        pg_ctl(own_server, "start")
        asyncio.run(daemon.maintain_job())
        daemon.publish()  # the publisher's next step
        assert not daemon._republish
    finally:
        daemon.pipeline.close()
        store.close()


def test_a_read_only_database_is_an_outage_not_every_feeds_error(
    tmp_path: Path, feed_server: FeedServer, postgres_url: str
) -> None:
    """A server that takes connections but no writes (a standby after a failover, or
    default_transaction_read_only) fails every feed the same way: the outage breaker's
    case, as a read-only SQLite file is, not a traceback per feed and poll. Here the
    database turns read-only and its sessions are ended, so the daemon reconnects into it."""
    rig = Rig(tmp_path, feed_server, postgres_url)

    def sessions_end(read_only: str) -> None:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SET default_transaction_read_only = off")  # this session writes
            admin.execute(
                f"ALTER DATABASE {admin.info.dbname} SET default_transaction_read_only = {read_only}"
            )
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = current_database() AND pid != pg_backend_pid()")  # fmt: skip

    try:
        bridge, fire = story("bridge", "q1"), story("library_fire", "q2")
        quay = rig.serve("/quay.xml", "Quay Times", [bridge])
        rig.write_config([quay], interval="1s")
        daemon = rig.start_serving()
        wait_for("the feed stored", lambda: rig.count("items") == 1)
        sessions_end("on")
        rig.serve("/quay.xml", "Quay Times", [fire, bridge], etag='"v2"')
        wait_for("/healthz to say the database is read-only", lambda: "read-only" in str(
            rig.http.get("/healthz").json()["store"].get("error")), timeout=30)  # fmt: skip
        assert (
            daemon.alive()
            and "Traceback" not in daemon.log
            and "unexpected error" not in daemon.log
        )
        sessions_end("off")
        wait_for("the story that waited stored", lambda: rig.count("items") == 2, timeout=60)
        daemon.wait_log(RECOVERED, timeout=30)
        assert daemon.stop() == 0, daemon.log
        assert "Traceback" not in daemon.log and daemon.log.count(RECOVERED) == 1
    finally:
        rig.close()


# ---------------------------------------------------------------- upkeep


def test_prune_and_maintain(postgres_url: str) -> None:
    """prune deletes what retention drops (its signatures and search documents go with it)
    and keeps the cluster counts, with ids past 32 bits too; maintain refreshes the
    planner's statistics (ANALYZE) and folds the search index's pending list."""
    store = Store.open(postgres_url)
    c = store.conn
    old, new = iso(utcnow() - timedelta(days=40)), iso(utcnow())
    try:
        with store.transaction():
            c.execute(
                "INSERT INTO feeds (id, url, created_at) VALUES (1, 'https://a.example/f', ?)",
                (new,),
            )
            c.execute("INSERT INTO clusters (id, representative_id, size, feed_count, created_at)"
                      " VALUES (1, 3000000001, 2, 1, ?)", (new,))  # fmt: skip
            for item_id, seen in ((3000000001, old), (3000000002, new)):
                c.execute("INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,"
                          " changed_at, content_hash, cluster_id) VALUES (?, 1, ?, 'Bridge shut', 'Repairs',"
                          " ?, ?, ?, ?, 1)", (item_id, f"k{item_id}", seen, seen, seen, f"h{item_id}"))  # fmt: skip
        store.index_search()
        assert store.count("items_search") == 2
        assert prune(store, utcnow() - timedelta(days=30)) == (1, 0)
        assert [r[0] for r in c.execute("SELECT id FROM items")] == [3000000002]
        assert store.count("items_search") == 1
        assert c.execute("SELECT size, pruned, representative_id FROM clusters").fetchone() == (
            2,
            1,
            3000000002,
        )
        reltuples = "SELECT reltuples FROM pg_class WHERE relname = 'items' AND relkind = 'r'"
        assert c.execute(reltuples).fetchone()[0] == -1  # never analysed
        maintain(store)
        assert c.execute(reltuples).fetchone()[0] == 1
        assert not c.in_transaction
    finally:
        store.close()


@pytest.mark.bench_smoke
def test_bench_backends_quick() -> None:
    """bench/backends.py still runs end to end (its figures are not asserted)."""
    done = subprocess.run([sys.executable, "bench/backends.py", "--quick", "--json"], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    res = json.loads(done.stdout)
    assert res["demo"]["sqlite"]["items"] == res["demo"]["postgresql"]["items"] > 0
    assert (
        res["local"]["sqlite"]["cold"]["items"]
        == res["local"]["postgresql"]["cold"]["items"]
        == 1000
    )
    assert (
        res["write_path"]["items"] == 1000
        and res["write_path"]["postgresql"]["server_cpu_us_per_item"] > 0
    )
