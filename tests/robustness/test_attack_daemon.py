"""Issue #12, the daemon's own faults: a database that stops taking writes (item 1), a
parse pool that cannot start workers (item 13), a database file deleted or replaced under
the running daemon. Each failed before its fix. A real daemon process, a real HTTP server
on 127.0.0.1, a real SQLite file."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from test_daemon import Rig, Story, children, story, titles, wait_for

LINUX_PROC = Path("/proc/self/stat").exists()


def _big_story(guid: str) -> Story:
    """An item of ~300 KB: its write needs the WAL to grow."""
    base = story("bridge", guid, title=f"Harbour report {guid}")
    return Story(guid, base.title, base.paragraphs * 60, base.link)


def _sizes(rig: Rig, daemon) -> int:
    files = [rig.db, rig.db.with_name(rig.db.name + "-wal"), daemon.stderr_path]
    return max(f.stat().st_size for f in files if f.exists())


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit (Linux)")
def test_a_database_that_refuses_writes_is_said_once_backed_off_and_recovered(rig: Rig) -> None:
    """The disk is full for the daemon (RLIMIT_FSIZE set on the running process: every
    write past the current file sizes fails, as on a full disk): the failure is said once,
    /healthz says it (503), polling backs off instead of fetching every tick, and once the
    limit is lifted (space is back) the daemon stores the waiting story by itself."""
    first = story("rail_strike", "a1")
    feed = rig.serve("/a.xml", "A", [first])
    rig.write_config([feed], interval="1s", check_every="0.2s")
    daemon = rig.start_serving()
    wait_for("the first story stored", lambda: rig.count("items") == 1)
    daemon.wait_log("poll: due=1")

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (_sizes(rig, daemon) + 65_536, hard))
    try:
        big = _big_story("a2")
        rig.serve("/a.xml", "A", [big, first], etag='"v2"')
        daemon.wait_log("cannot write to the database")
        health = rig.http.get("/healthz")
        assert health.status_code == 503, health.text
        assert health.json()["store"]["writes"] == "failing", health.text
        hits = rig.server.hits("/a.xml")
        time.sleep(6.0)  # 30 ticks of check_every
        during = rig.server.hits("/a.xml") - hits
        # before: the feed was fetched, parsed and failed at every tick (~30 here)
        assert during <= 8, f"{during} fetches in 6 s of failing writes: no backoff"
        log = daemon.log
        assert log.count("cannot write to the database") == 1, log
        assert "Traceback" not in log and "internal error" not in log, log
        assert rig.count("items") == 1  # the first story is still there
    finally:
        resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))

    wait_for("the waiting story stored once writes work", lambda: big.title in titles(rig.entries()), timeout=30)
    daemon.wait_log("database writes work again")
    health = rig.http.get("/healthz")
    assert health.status_code == 200 and health.json()["store"] == {"writes": "ok"}, health.text
    assert rig.count("items") == 2
    assert daemon.stop() == 0, daemon.log


@pytest.mark.skipif(not LINUX_PROC, reason="finds the forkserver and parse workers in /proc")
def test_a_parse_pool_that_cannot_start_workers_falls_back_to_parsing_in_process(rig: Rig) -> None:
    """The forkserver's socket is cleaned from the temp folder (as tmp cleaners do) and the
    worker dies: no new pool can start a worker (FileNotFoundError, not BrokenProcessPool).
    Feeds must still be stored, parsed in-process, and /healthz must say so."""
    tmp = rig.tmp / "tmp"
    tmp.mkdir()
    bridge = story("bridge", "a1")
    a = rig.serve("/a.xml", "A", [bridge])
    b = rig.serve("/b.xml", "B", [story("rail_strike", "b1")])
    rig.write_config([a, b], interval="1s", parse_workers=1)
    daemon = rig.start_serving(env={"TMPDIR": str(tmp)})
    wait_for("both feeds stored", lambda: rig.count("items") == 2)
    sockets = list(tmp.glob("pymp-*/listener-*"))
    assert sockets, list(tmp.rglob("*"))
    for path in sockets:
        path.unlink()
    workers = wait_for("a parse worker", lambda: [w for c in children(daemon.proc.pid) for w in children(c)])
    for pid in workers:
        os.kill(pid, signal.SIGKILL)

    # the first change meets the dead worker (BrokenProcessPool); the second one meets the
    # new pool, which cannot start a worker without the socket
    for n, name in enumerate(("library_fire", "match_1", "market_wrap_1"), start=2):
        new = story(name, f"a{n}")
        rig.serve("/a.xml", "A", [new, bridge], etag=f'"v{n}"')
        wait_for(f"{new.title!r} stored though the pool cannot start workers",
                 lambda new=new: new.title in titles(rig.entries()), timeout=15)  # fmt: skip
    parse = rig.health()["parse"]
    assert parse["workers"] != "ok" and parse["error"], parse
    assert rig.health()["status"] == "degraded"
    log = daemon.log
    assert log.count("the parse worker pool failed") == 1, log
    assert "parser crashed" not in log, log
    assert daemon.stop() == 0, log


def _stops_with_a_saved_copy(rig: Rig, daemon, what: str) -> Path:
    code = daemon.wait(15)
    log = daemon.log
    assert code != 0 and what in log, log
    saved = sorted(rig.tmp.glob("agg.db.saved-*"))
    assert len(saved) == 1, (list(rig.tmp.iterdir()), log)
    assert str(saved[0]) in log
    return saved[0]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_under_the_daemon_stops_it_with_a_copy(rig: Rig, how: str) -> None:
    """Before: the daemon wrote on into the unlinked file (lost at exit) and the next CLI
    call made an empty database. Now it stops, and what it had is saved beside the path."""
    a = rig.serve("/a.xml", "A", [story("bridge", "a1"), story("rail_strike", "a2")])
    rig.write_config([a], interval="1s")
    daemon = rig.start_serving()
    wait_for("both stories stored", lambda: rig.count("items") == 2)
    if how == "deleted":
        rig.db.unlink()
    else:
        other = rig.tmp / "other.db"
        sqlite3.connect(other).close()
        os.replace(other, rig.db)
    saved = _stops_with_a_saved_copy(rig, daemon, f"was {how}" if how == "deleted" else "was replaced")
    conn = sqlite3.connect(saved)
    try:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 2
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
