"""The throwaway PostgreSQL server the tests start themselves (tests/pgserver.py) and its
fixtures: it answers as the installed version with the throwaway settings, each database is
fresh and its own, a child process connects with the URL, and stopping it (or killing its
owner) leaves no server process and no folder behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from pgserver import INSTALL_HINT, PostgresServer, PostgresServerError, find_binaries

TESTS = Path(__file__).resolve().parent
GONE_WITHIN_S = 120  # a deadline to give up polling, not a speed requirement


def alive(pid: int) -> bool:
    """Whether process `pid` runs; a zombie (exited, not yet reaped by whoever adopted the
    postmaster) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not true after {GONE_WITHIN_S} s: {what}")
        time.sleep(0.1)


def installed_version() -> str:
    """'15.18' from `initdb --version`: initdb (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)."""
    out = subprocess.run(
        [find_binaries().initdb, "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"\(PostgreSQL\) (\d+(?:\.\d+)*)", out)
    assert match, out
    return match.group(1)


def test_server_is_the_installed_version_with_throwaway_settings(postgres_url):
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute("select version()").fetchone()[0]
        settings = dict(
            conn.execute(
                "select name, setting from pg_settings where name = any(%s)",
                [["fsync", "synchronous_commit", "full_page_writes", "listen_addresses",
                  "max_connections", "server_encoding", "lc_collate", "wal_level"]],
            ).fetchall()
        )  # fmt: skip
        # C.UTF-8, not C: lower() knows letters beyond ASCII
        lowered = conn.execute("select lower('ÉCOLE Ωμέγα')").fetchone()[0]
    assert version.startswith(f"PostgreSQL {installed_version()} "), version
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "",
        "max_connections": "200",
        "server_encoding": "UTF8",
        "lc_collate": "C.UTF-8",
        "wal_level": "minimal",
    }
    assert lowered == "école ωμέγα"


def test_url_names_the_database_and_the_servers_socket_folder(postgres_server, postgres_url):
    assert re.fullmatch(
        rf"postgresql://postgres@/test_\d+\?host={re.escape(str(postgres_server.folder))}"
        r"&port=5432",
        postgres_url,
    ), postgres_url
    assert (postgres_server.folder / ".s.PGSQL.5432").is_socket()


def test_two_new_databases_are_empty_and_independent(postgres_server):
    first, second = postgres_server.new_database(), postgres_server.new_database()
    try:
        assert first != second
        with psycopg.connect(first) as a, psycopg.connect(second) as b:
            for conn in (a, b):
                tables = "select count(*) from pg_tables where schemaname = 'public'"
                assert conn.execute(tables).fetchone() == (0,)
            a.execute("create table items (title text)")
            a.execute("insert into items values ('only in the first')")
            a.commit()
            assert a.execute("select title from items").fetchall() == [("only in the first",)]
            assert b.execute("select to_regclass('items')").fetchone() == (None,)
            names = (a.execute("select current_database()").fetchone()[0],
                     b.execute("select current_database()").fetchone()[0])  # fmt: skip
        assert names[0] != names[1]
    finally:
        postgres_server.drop_database(first)
        postgres_server.drop_database(second)


def test_a_child_process_connects_with_the_url(postgres_url):
    """As the --db flag will: the URL on a command line, in a process of our own user (root
    here, while the server runs as postgres)."""
    child = subprocess.run(
        [sys.executable, "-c",
         "import os, sys, psycopg\n"
         "with psycopg.connect(sys.argv[1]) as conn:\n"
         "    conn.execute('create table t (n int)')\n"
         "    conn.execute('insert into t values (42)')\n"
         "    print(os.geteuid(), *conn.execute('select current_database(), n from t').fetchone())",
         postgres_url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    name = psycopg.conninfo.conninfo_to_dict(postgres_url)["dbname"]
    assert child.stdout.split() == [str(os.geteuid()), name, "42"]
    with psycopg.connect(postgres_url) as conn:  # committed by the child, seen by us
        assert conn.execute("select n from t").fetchall() == [(42,)]


def test_drop_database_closes_its_connections(postgres_server):
    url = postgres_server.new_database()
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    left_open = psycopg.connect(url)
    postgres_server.drop_database(url)
    with pytest.raises(psycopg.OperationalError):
        left_open.execute("select 1")
    left_open.close()
    with psycopg.connect(postgres_server.url()) as conn:
        assert conn.execute("select 1 from pg_database where datname = %s", [name]).fetchall() == []


def test_stop_ends_the_server_and_removes_its_folder(postgres_server):
    """A second server beside the session's: its own folder and socket, no collision."""
    server = PostgresServer().start()
    pid, folder = server.pid, server.folder
    assert folder != postgres_server.folder and alive(pid)
    with psycopg.connect(server.new_database()) as conn:
        assert conn.execute("select pg_backend_pid() <> %s", [pid]).fetchone() == (True,)
    server.stop()
    assert not alive(pid)
    assert not folder.exists()
    assert server.folder is None
    server.stop()  # again: nothing to do
    with psycopg.connect(postgres_server.url()) as conn:  # the session's server is untouched
        assert conn.execute("select 1").fetchone() == (1,)


def test_a_killed_owner_leaves_no_server_behind(tmp_path):
    """SIGKILL runs no atexit handler and no finally: the watchdog cleans up."""
    errors = tmp_path / "owner.stderr"
    with errors.open("w") as stderr:
        owner = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time\n"
             f"sys.path.insert(0, {str(TESTS)!r})\n"
             "from pgserver import PostgresServer\n"
             "server = PostgresServer().start()\n"
             "print(server.pid, server.folder, flush=True)\n"
             "time.sleep(600)"],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
        )  # fmt: skip
    try:
        started = owner.stdout.readline().split()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        owner.stdout.close()
    assert len(started) == 2, errors.read_text()
    pid, folder = int(started[0]), Path(started[1])
    wait_until(lambda: not alive(pid), f"postmaster {pid} of a killed owner has stopped")
    wait_until(lambda: not folder.exists(), f"{folder} of a killed owner is removed")


def test_a_server_that_cannot_start_says_why_and_leaves_nothing():
    server = PostgresServer(settings={"max_connections": "lots"})
    with pytest.raises(PostgresServerError) as failed:
        server.start()
    message = str(failed.value)
    assert 'invalid value for parameter "max_connections": "lots"' in message  # the log's tail
    assert INSTALL_HINT in message
    log = re.search(r"its log (\S+) ended", message)
    assert log, message
    assert not Path(log.group(1)).parent.exists()
    assert server.folder is None


def test_missing_binaries_say_how_to_install_them(tmp_path):
    with pytest.raises(PostgresServerError) as failed:
        find_binaries(bindirs=str(tmp_path / "*" / "bin"), path=str(tmp_path))
    assert "initdb, pg_ctl" in str(failed.value)
    assert "apt-get install postgresql, or run `make test`, which installs it" in str(failed.value)


def _programs(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for name in ("initdb", "pg_ctl"):
        (folder / name).write_text("#!/bin/sh\n")
        (folder / name).chmod(0o755)
    return folder


def test_binaries_are_the_newest_debian_server_else_on_path(tmp_path):
    for version in ("9.6", "15", "13"):
        _programs(tmp_path / "lib" / version / "bin")
    newest = find_binaries(bindirs=str(tmp_path / "lib" / "*" / "bin"), path="")
    assert newest.initdb == tmp_path / "lib" / "15" / "bin" / "initdb"
    assert newest.pg_ctl == tmp_path / "lib" / "15" / "bin" / "pg_ctl"
    on_path = _programs(tmp_path / "usr" / "bin")
    found = find_binaries(bindirs=str(tmp_path / "none" / "*" / "bin"), path=str(on_path))
    assert (found.initdb, found.pg_ctl) == (on_path / "initdb", on_path / "pg_ctl")
