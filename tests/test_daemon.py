"""The daemon (`scheduler.py`, `aggregator run`) as a real subprocess against local feed
servers: polling, publishing and serving the digest, conditional requests, config reload,
graceful shutdown, the single-instance lock and restarts.

Each test writes a feeds.yaml with short intervals (check every 0.2s, feeds due every
1-2s), starts the real daemon and waits with polling loops bounded by deadlines. The
database is read the way any SQLite tool would, read-only (or through psycopg). The tests
of the poll / reload / publish / restart cycle take `backend_rig` (tests/conftest.py) and
run on SQLite and on PostgreSQL; the rest are about the daemon itself, on SQLite.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from feedserver import FeedServer, Route

from aggregator.config import dump_yaml
from aggregator.store.postgres import is_postgres_url, to_psycopg
from aggregator.timeutil import utcnow

REPO = Path(__file__).resolve().parents[1]
ARTICLES = Path(__file__).parent / "data" / "dedup"
FAST = {
    "check_every": "0.2s",
    "interval": "2s",
    "timeout": "5s",
    "connect_timeout": "2s",
    "parse_workers": 0,
}
WAIT = 10.0  # deadline for anything the daemon should do within a few polls
STOP_WITHIN = 10.0  # the daemon promises to exit this soon after SIGTERM


# ---------------------------------------------------------------- waiting


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def child_env() -> dict[str, str]:
    """The environment for a subprocess: this checkout importable, no AGGREGATOR_* leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- feeds


@dataclass(frozen=True)
class Story:
    guid: str
    title: str
    paragraphs: tuple[str, ...]
    link: str
    hours_ago: float = 2.0


def story(name: str, guid: str, title: str | None = None, hours_ago: float = 2.0) -> Story:
    """A story from tests/data/dedup/NAME.txt (headline, blank line, paragraphs)."""
    headline, _, body = (ARTICLES / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    paragraphs = tuple(p.strip() for p in body.split("\n\n") if p.strip())
    return Story(
        guid, title or headline.strip(), paragraphs, f"https://example.com/{guid}", hours_ago
    )


def rss(outlet: str, stories: list[Story]) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>{escape(outlet)}</title><link>https://example.com/</link>",
        "<description>test feed</description>",
    ]
    for s in stories:
        published = format_datetime(utcnow() - timedelta(hours=s.hours_ago), usegmt=True)
        body = "".join(f"<p>{escape(p, quote=False)}</p>" for p in s.paragraphs)
        parts += [
            f'<item><guid isPermaLink="false">{escape(s.guid)}</guid>',
            f"<title>{escape(s.title)}</title><link>{escape(s.link)}</link>",
            f"<pubDate>{published}</pubDate><description>{escape(body)}</description></item>",
        ]
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


# ---------------------------------------------------------------- the rig


class Daemon:
    """One daemon subprocess; its stderr goes to a file the test reads while it runs."""

    def __init__(self, argv: list[str], stderr_path: Path, env: dict[str, str] | None = None):
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env={**child_env(), **(env or {})}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )  # fmt: skip

    @property
    def log(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, text: str, timeout: float = WAIT, count: int = 1) -> None:
        def seen() -> bool:
            if not self.alive() and self.log.count(text) < count:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log}")
            return self.log.count(text) >= count

        wait_for(f"{text!r} on stderr", seen, timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._stderr.close()

    def stop(self) -> int:
        """SIGTERM, then the exit code (it must come within STOP_WITHIN seconds)."""
        self.signal(signal.SIGTERM)
        return self.wait(STOP_WITHIN)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(5)
        self._stderr.close()


class Rig:
    """Feeds on the local server, a feeds.yaml listing them, the database, the digest and
    the daemon's HTTP port, all under tmp_path. `db`: a database target (an SQLite file, the
    default tmp_path/agg.db, or a postgresql:// URL), as --db takes it."""

    def __init__(self, tmp_path: Path, server: FeedServer, db: Path | str | None = None):
        self.tmp = tmp_path
        self.server = server
        self.cfg = tmp_path / "feeds.yaml"
        self.db = tmp_path / "agg.db" if db is None else db
        self.digest = tmp_path / "digest.xml"
        self.port = free_port()
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=5, trust_env=False
        )
        self.daemons: list[Daemon] = []

    # -- feeds and config

    def serve(
        self, path: str, outlet: str, stories: list[Story], etag: str = '"v1"', **kw: Any
    ) -> str:
        self.server.set(path, Route(body=rss(outlet, stories), etag=etag,
                                    headers={"Content-Type": "application/rss+xml"}, **kw))  # fmt: skip
        return self.server.url(path)

    def config_text(self, feeds: list[Any], **settings: Any) -> str:
        base = {**FAST, "http": f"127.0.0.1:{self.port}", "digest_path": str(self.digest)}
        return dump_yaml({"settings": {**base, **settings}, "feeds": feeds})

    def write_config(self, feeds: list[Any], **settings: Any) -> None:
        self.cfg.write_text(self.config_text(feeds, **settings), encoding="utf-8")

    # -- processes

    def start(self, *args: str, name: str = "daemon", env: dict[str, str] | None = None) -> Daemon:
        """`python scheduler.py --config CFG --db DB ARGS` from the repository root (`env`:
        variables added to its environment)."""
        argv = [sys.executable, "scheduler.py", *self._paths(), *args]
        daemon = Daemon(argv, self.tmp / f"{name}-{len(self.daemons)}.stderr", env)
        self.daemons.append(daemon)
        return daemon

    def start_serving(self, *args: str, env: dict[str, str] | None = None) -> Daemon:
        daemon = self.start(*args, env=env)
        wait_for("the daemon to answer /healthz", lambda: self._up(daemon))
        return daemon

    def _up(self, daemon: Daemon) -> bool:
        if not daemon.alive():
            raise AssertionError(f"daemon exited ({daemon.proc.returncode}):\n{daemon.log}")
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
        """`python -m aggregator --config CFG --db DB ARGS`, run to completion."""
        argv = [sys.executable, "-m", "aggregator", *self._paths(), *args]
        return subprocess.run(argv, cwd=REPO, env=child_env(), capture_output=True, timeout=timeout)

    def _paths(self) -> list[str]:
        return ["--config", str(self.cfg), "--db", str(self.db)]

    # -- reading what the daemon made

    @property
    def on_file(self) -> bool:
        return not is_postgres_url(self.db)

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Rows of `sql` (`?` placeholders), on a connection of the test's own."""
        if not self.on_file:
            import psycopg

            with psycopg.connect(self.db, autocommit=True) as pg:
                return pg.execute(to_psycopg(sql), params or None).fetchall()
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def count(self, table: str) -> int:
        return self.query(f"SELECT count(*) FROM {table}")[0][0]

    def health(self) -> dict:
        return self.http.get("/healthz").json()

    def entries(self, fmt: str = "json") -> dict[str, dict]:
        """The served digest's entries by id: {id: {"title", "summary"[, "sources"]}}."""
        response = self.http.get(f"/digest.{fmt}")
        if response.status_code == 503 and "being built" in response.text:
            return {}  # a worker that just took the publisher's part: ask again
        assert response.status_code == 200, response.text
        return parse_entries(fmt, response.content)

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.kill()
        self.http.close()


def parse_entries(fmt: str, body: bytes) -> dict[str, dict]:
    if fmt == "json":
        doc = json.loads(body)
        return {i["id"]: {"title": i["title"], "summary": i["content_text"],
                          "sources": i["_aggregator"]["sources"]} for i in doc["items"]}  # fmt: skip
    parsed = feedparser.parse(body)
    assert not parsed.bozo, parsed.bozo_exception
    return {e.id: {"title": e.title, "summary": e.summary} for e in parsed.entries}


def titles(entries: dict[str, dict]) -> set[str]:
    return {e["title"] for e in entries.values()}


def find(entries: dict[str, dict], title: str) -> tuple[str, dict]:
    matches = [(i, e) for i, e in entries.items() if e["title"] == title]
    assert len(matches) == 1, (title, entries)
    return matches[0]


# ---------------------------------------------------------------- polling and serving


def test_polls_stores_and_serves_the_same_digest_in_every_format(backend_rig: Rig) -> None:
    rig = backend_rig
    bridge, strike, fire = (
        story("bridge", "q1"),
        story("rail_strike", "q2"),
        story("library_fire", "r1"),
    )
    quay = rig.serve("/quay.xml", "Quay Times", [bridge, strike])
    river = rig.serve("/river.xml", "Riverside Post", [fire])
    rig.write_config([quay, {"url": river, "name": "Riverside Post"}])
    daemon = rig.start_serving()

    wait_for("3 items in the database", lambda: rig.count("items") == 3)
    health = wait_for("/healthz to count both feeds",
                      lambda: (h := rig.health())["feeds_ok"] == 2 and h["items"] == 3 and h)  # fmt: skip
    assert health["status"] == "ok" and health["clusters"] == 3 and health["last_poll"]
    assert rig.http.get("/healthz").headers["Content-Type"] == "application/json"

    by_format = {
        fmt: wait_for(
            f"/digest.{fmt} to list 3 stories", lambda f=fmt: len(e := rig.entries(f)) == 3 and e
        )
        for fmt in ("atom", "rss", "json")
    }
    expected = {bridge.title, strike.title, fire.title}
    for fmt, entries in by_format.items():
        assert titles(entries) == expected, fmt
        assert set(entries) == set(by_format["atom"]), f"{fmt} entry ids differ from atom's"
    for fmt, mime in (("atom", "application/atom+xml"), ("rss", "application/rss+xml"),
                      ("json", "application/feed+json")):  # fmt: skip
        assert rig.http.get(f"/digest.{fmt}").headers["Content-Type"].startswith(mime)
    assert rig.http.get("/nope").status_code == 404

    # settings.digest_path holds the same bytes as /digest.atom (digest.format defaults to atom)
    assert rig.digest.read_bytes() == rig.http.get("/digest.atom").content
    assert daemon.stop() == 0


def test_new_story_and_a_syndicated_copy_update_the_digest(backend_rig: Rig) -> None:
    rig = backend_rig
    bridge, strike = story("bridge", "q1"), story("rail_strike", "r1")
    quay = rig.serve("/quay.xml", "Quay Times", [bridge])
    river = rig.serve("/river.xml", "Riverside Post", [strike])
    rig.write_config([quay, river], interval="1s")
    daemon = rig.start_serving()
    before = wait_for("2 stories in the digest", lambda: len(e := rig.entries()) == 2 and e)
    bridge_id, entry = find(before, bridge.title)
    assert entry["sources"] == 1 and entry["summary"].startswith("The Harbor Street bridge, which carries")
    assert entry["summary"].endswith("Reported by 1 source: Quay Times")  # the lede, then the sources

    # a new story: new bytes under a new ETag
    fire = story("library_fire", "q2")
    rig.serve("/quay.xml", "Quay Times", [fire, bridge], etag='"v2"')
    after = wait_for("the new story in the digest", lambda: len(e := rig.entries()) == 3 and e)
    assert titles(after) == {bridge.title, strike.title, fire.title}

    # another outlet runs the bridge story's wire text under its own headline
    copy = story(
        "bridge", "r2", title="Harbor Street crossing shut until November for deck repairs"
    )
    rig.serve("/river.xml", "Riverside Post", [copy, strike], etag='"v2"')

    def joined() -> dict | None:
        entries = rig.entries()
        return entries if entries.get(bridge_id, {}).get("sources") == 2 else None

    final = wait_for("the copy to join the bridge story", joined)
    assert len(final) == 3, "the copy must not become an entry of its own"
    assert final[bridge_id]["summary"].endswith("Reported by 2 sources: Quay Times, Riverside Post")
    atom_id, atom_entry = find(rig.entries("atom"), final[bridge_id]["title"])
    assert atom_id == bridge_id
    assert "Reported by 2 sources" in atom_entry["summary"]
    assert daemon.stop() == 0


def test_conditional_requests_get_304(rig: Rig) -> None:
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    rig.write_config([quay])
    daemon = rig.start_serving()
    wait_for("the story in the digest", lambda: len(rig.entries()) == 1)
    for fmt in ("atom", "rss", "json"):
        first = rig.http.get(f"/digest.{fmt}")
        etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
        again = rig.http.get(f"/digest.{fmt}", headers={"If-None-Match": etag})
        assert again.status_code == 304, fmt
        assert again.content == b"" and again.headers["ETag"] == etag
        since = rig.http.get(f"/digest.{fmt}", headers={"If-Modified-Since": last_modified})
        assert since.status_code == 304, fmt
        listed = rig.http.get(f"/digest.{fmt}", headers={"If-None-Match": f'"x", W/{etag}'})
        assert listed.status_code == 304, fmt
        other = rig.http.get(f"/digest.{fmt}", headers={"If-None-Match": '"something-else"'})
        assert other.status_code == 200 and other.content == first.content
        head = rig.http.head(f"/digest.{fmt}")
        assert head.status_code == 200 and head.content == b"" and head.headers["ETag"] == etag
    assert daemon.stop() == 0


# ---------------------------------------------------------------- life cycle


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_during_a_poll_exits_0_promptly_with_a_sound_database(
    backend_rig: Rig, sig: signal.Signals
) -> None:
    rig = backend_rig
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    slow = rig.serve("/slow.xml", "Slow Gazette", [story("rail_strike", "s1")], delay=3)
    rig.write_config([quay, slow], interval="1s")
    daemon = rig.start_serving()
    wait_for("a request to the slow feed", lambda: rig.server.hits("/slow.xml") >= 1)
    wait_for("the fast feed stored", lambda: rig.count("items") >= 1)

    started = time.monotonic()
    daemon.signal(sig)
    assert daemon.wait(STOP_WITHIN) == 0, daemon.log
    assert time.monotonic() - started < STOP_WITHIN
    assert "poll cancelled by shutdown" in daemon.log  # the slow feed was still in flight
    assert daemon.log.rstrip().endswith("stopped")
    assert rig.query("SELECT count(*) FROM items WHERE cluster_id IS NULL") == [(0,)]
    if not rig.on_file:  # PostgreSQL checks its keys itself; the daemon left no session behind
        # a backend leaves pg_stat_activity a moment after its client has gone (CI once saw
        # one still listed right after the daemon exited), so this waits for it, briefly
        sessions = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid != pg_backend_pid()"
        wait_for("the daemon's sessions to end", lambda: rig.query(sessions) == [(0,)], timeout=15)
        return
    conn = sqlite3.connect(rig.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def test_restart_does_not_refetch_feeds_that_are_not_due(backend_rig: Rig) -> None:
    rig = backend_rig
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    river = rig.serve("/river.xml", "Riverside Post", [story("rail_strike", "r1")])
    rig.write_config([quay, river], interval="1h")
    once = rig.start("--once")
    assert once.wait(30) == 0, once.log
    assert (rig.server.hits("/quay.xml"), rig.server.hits("/river.xml")) == (1, 1)
    scheduled = rig.query("SELECT url, next_fetch_at FROM feeds ORDER BY id")

    daemon = rig.start_serving()
    daemon.wait_log("daemon started")
    time.sleep(1.5)  # several 0.2s checks: none may find a feed due
    assert daemon.stop() == 0, daemon.log
    assert (rig.server.hits("/quay.xml"), rig.server.hits("/river.xml")) == (1, 1)
    assert rig.query("SELECT url, next_fetch_at FROM feeds ORDER BY id") == scheduled
    assert "poll: due=" not in daemon.log


def test_a_second_daemon_on_the_same_database_refuses(rig: Rig) -> None:
    """SQLite only: one daemon per file (a lock beside it). On PostgreSQL any number of
    workers share one database (#17)."""
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    rig.write_config([quay])
    first = rig.start_serving()
    second = rig.start(name="second")
    code = second.wait(30)
    assert code != 0
    assert "already running" in second.log
    assert first.alive() and rig.http.get("/healthz").status_code == 200
    reader = rig.cli("digest", "-o", "-")  # CLI readers do not take the daemon's lock
    assert reader.returncode == 0, reader.stderr
    assert first.stop() == 0


def test_config_edits_and_sighup_reload_without_a_restart(backend_rig: Rig) -> None:
    rig = backend_rig
    a = rig.serve("/a.xml", "A", [story("bridge", "a1")])
    b = rig.serve("/b.xml", "B", [story("rail_strike", "b1")])
    c = rig.serve("/c.xml", "C", [story("library_fire", "c1")])
    rig.write_config([a], interval="1s")
    daemon = rig.start_serving()
    wait_for("feed a fetched", lambda: rig.server.hits("/a.xml") >= 1)

    # adding a feed to the file: fetched on its schedule, no restart
    rig.write_config([a, b], interval="1s")
    wait_for("the added feed b fetched", lambda: rig.server.hits("/b.xml") >= 1)
    daemon.wait_log("config reloaded: 2 feeds (+1, -0)")

    # a change the file's stamp does not show (same size, old mtime) waits for SIGHUP
    stat = rig.cfg.stat()
    rig.write_config([a, c], interval="1s")
    assert rig.cfg.stat().st_size == stat.st_size
    os.utime(rig.cfg, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(0.6)  # three checks
    assert rig.server.hits("/c.xml") == 0
    daemon.signal(signal.SIGHUP)
    wait_for("feed c fetched after SIGHUP", lambda: rig.server.hits("/c.xml") >= 1)
    daemon.wait_log("config reloaded: 2 feeds (+1, -1)")

    # a broken edit: logged, the daemon keeps running with the feeds it had
    rig.cfg.write_text(rig.config_text([a, c], interval="1s") + "feeds: [oops\n", encoding="utf-8")
    daemon.wait_log("config reload failed")
    hits = rig.server.hits("/c.xml")
    wait_for(
        "feed c fetched again after the failed reload", lambda: rig.server.hits("/c.xml") > hits
    )
    assert daemon.alive() and rig.health()["status"] == "ok"
    assert daemon.stop() == 0, daemon.log


def test_json_log_format(rig: Rig) -> None:
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    rig.write_config([quay])
    result = rig.cli("run", "--once", "--log-format", "json")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    polls = [r for r in records if r["message"].startswith("poll: due=")]
    assert len(polls) == 1 and polls[0]["level"] == "info"
    assert "new_items=1" in polls[0]["message"]


def test_once_polls_once_writes_the_digest_and_exits_0(backend_rig: Rig) -> None:
    rig = backend_rig
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    river = rig.serve("/river.xml", "Riverside Post", [story("rail_strike", "r1")])
    rig.write_config([quay, river], interval="1h")
    once = rig.start("--once")
    assert once.wait(30) == 0, once.log
    assert once.log.count("poll: due=2 ") == 1
    assert rig.count("items") == 2
    assert (rig.server.hits("/quay.xml"), rig.server.hits("/river.xml")) == (1, 1)
    entries = parse_entries("atom", rig.digest.read_bytes())
    assert titles(entries) == {story("bridge", "q1").title, story("rail_strike", "r1").title}
    with pytest.raises(httpx.TransportError):
        rig.http.get("/healthz")  # --once never serves


def _listening_sockets(pid: int) -> set[str]:
    """Inodes of the TCP sockets `pid` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as f:
            for row in f.read().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "0A":  # TCP_LISTEN
                    listening.add(cols[9])
    return inodes & listening


def test_http_off_serves_nothing(rig: Rig) -> None:
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    rig.write_config([quay], http="off")
    daemon = rig.start()
    wait_for("the digest file", lambda: rig.digest.exists() and len(
        parse_entries("atom", rig.digest.read_bytes())) == 1)  # fmt: skip
    assert daemon.alive()
    if Path(f"/proc/{daemon.proc.pid}/fd").is_dir():
        assert _listening_sockets(daemon.proc.pid) == set()
    with pytest.raises(httpx.TransportError):
        rig.http.get("/healthz")
    assert "serving the digest" not in daemon.log
    assert daemon.stop() == 0, daemon.log


def test_a_busy_http_port_is_refused_with_a_clear_message(rig: Rig) -> None:
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    rig.write_config([quay])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", rig.port))
        taken.listen()
        daemon = rig.start()
        assert daemon.wait(30) == 2
    assert "cannot serve the digest on 127.0.0.1:" in daemon.log
    assert "Traceback" not in daemon.log
    again = rig.start_serving()  # the lock was released on the way out
    assert again.stop() == 0


# ---------------------------------------------------------------- the digest command


def test_digest_command_writes_a_file_or_stdout(rig: Rig) -> None:
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    rig.write_config([quay], interval="1h")
    assert rig.cli("run", "--once").returncode == 0

    out = rig.tmp / "out" / "digest.rss"
    out.parent.mkdir()
    result = rig.cli("digest", "--format", "rss", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert b"wrote rss digest" in result.stderr
    parsed = feedparser.parse(out.read_bytes())
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "rss20"
    assert [e.title for e in parsed.entries] == [story("bridge", "q1").title]
    assert parsed.entries[0].summary.startswith("<p>The Harbor Street bridge, which carries")
    assert "<p>Reported by 1 source</p>" in parsed.entries[0].summary

    printed = rig.cli("digest", "--format", "rss", "-o", "-")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == out.read_bytes()
    assert not (REPO / "-").exists()


# ---------------------------------------------------------------- robustness and reload details


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds parse workers in /proc")
def test_parsing_recovers_after_a_parse_worker_dies(rig: Rig) -> None:
    """A parse worker killed (OOM killer, a crash) breaks a ProcessPoolExecutor for good;
    the daemon must replace the pool instead of failing every later parse."""
    bridge = story("bridge", "a1")
    a = rig.serve("/a.xml", "A", [bridge])
    b = rig.serve("/b.xml", "B", [story("rail_strike", "b1")])
    # both new feeds are due in the first poll, and a poll of 2+ feeds starts the pool
    rig.write_config([a, b], interval="1s", parse_workers=1)
    daemon = rig.start_serving()
    wait_for("both feeds stored", lambda: rig.count("items") == 2)
    # children: forkserver + resource tracker; the forkserver's children are the workers
    workers = wait_for("a parse worker", lambda: [w for c in children(daemon.proc.pid)
                                                  for w in children(c)])  # fmt: skip
    for pid in workers:
        os.kill(pid, signal.SIGKILL)

    fire = story("library_fire", "a2")
    rig.serve("/a.xml", "A", [fire, bridge], etag='"v2"')
    wait_for("the new story despite the dead worker (pool never rebuilt: BrokenProcessPool)",
             lambda: fire.title in titles(rig.entries()), timeout=6)  # fmt: skip
    assert daemon.stop() == 0, daemon.log


def test_reloaded_check_every_is_applied_or_reported(rig: Rig) -> None:
    """A reloaded settings.check_every must not be silently ignored: the tick job takes
    the new interval (or, at least, the reload says it needs a restart)."""
    a = rig.serve("/a.xml", "A", [story("bridge", "a1")])
    b = rig.serve("/b.xml", "B", [story("rail_strike", "b1")])
    rig.write_config([a], check_every="2s", interval="1h")
    daemon = rig.start_serving()
    daemon.wait_log("daemon started")
    rig.write_config([a, {"url": b, "interval": "1s"}], check_every="0.2s", interval="1h")
    daemon.wait_log("config reloaded")
    wait_for("new feed b fetched", lambda: rig.server.hits("/b.xml") >= 1)
    if "settings.check_every changed" not in daemon.log:
        # applied: b is due again within ~1s and a 0.2s check finds it before the old 2s one
        wait_for("feed b refetched on the reloaded 0.2s check_every (still checking every 2s, "
                 "and no 'settings.check_every changed' warning)",
                 lambda: rig.server.hits("/b.xml") >= 2, timeout=1.5)  # fmt: skip
    assert daemon.stop() == 0, daemon.log


def test_a_poll_longer_than_check_every_logs_no_warnings(rig: Rig) -> None:
    """tick() skips itself while a poll runs; the job must not also be limited by
    APScheduler's max_instances=1, which logs a WARNING ("maximum number of running
    instances reached") every check_every while a poll is in flight."""
    slow = rig.serve("/slow.xml", "Slow Gazette", [story("bridge", "s1")], delay=1.5)
    rig.write_config([slow], interval="1s")
    daemon = rig.start_serving()
    daemon.wait_log("poll: due=1 ")
    assert daemon.stop() == 0, daemon.log
    warnings = [line for line in daemon.log.splitlines() if " WARNING " in line]
    assert warnings == [], "\n".join(warnings)


def test_reloaded_digest_settings_are_published_without_waiting_for_news(rig: Rig) -> None:
    """A reload that changes settings.digest (title, min_size, ...) or digest_path is
    published at once, not when some feed next brings news (quiet feeds: hours later)."""
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    rig.write_config([quay], interval="1s")
    daemon = rig.start_serving()
    wait_for("the story in the digest", lambda: len(rig.entries()) == 1)
    rig.write_config([quay], interval="1s", digest={"title": "Morning digest"})
    daemon.wait_log("config reloaded")
    wait_for(
        "the reloaded digest title served",
        lambda: (
            feedparser.parse(rig.http.get("/digest.atom").content).feed.title == "Morning digest"
        ),
        timeout=3,
    )
    assert daemon.stop() == 0, daemon.log


def test_per_host_from_a_reloaded_config_applies_without_a_false_restart_warning(rig: Rig) -> None:
    """The fetcher and its per-host limits are built from the current config at every
    poll, so a reloaded per_host/concurrency applies at the next poll; the reload must not
    log that it "takes effect after a restart"."""
    a = rig.serve("/a.xml", "A", [story("bridge", "a1")])
    b = rig.serve("/b.xml", "B", [story("rail_strike", "b1")], delay=0.6)
    c = rig.serve("/c.xml", "C", [story("library_fire", "c1")], delay=0.6)
    rig.write_config([a], interval="1h")
    daemon = rig.start_serving()
    daemon.wait_log("daemon started")
    # two slow feeds on one host, new in the same reload: both due in the reload's poll
    slow = [{"url": url, "interval": "1s"} for url in (b, c)]
    rig.write_config([a, *slow], interval="1h", per_host=1)
    daemon.wait_log("config reloaded")
    wait_for("b and c fetched", lambda: rig.server.hits("/b.xml") and rig.server.hits("/c.xml"))
    daemon.wait_log("poll: due=2 ")
    assert daemon.stop() == 0, daemon.log
    poll = next(line for line in daemon.log.splitlines() if "poll: due=2 " in line)
    duration = float(poll.rsplit("duration=", 1)[1].rstrip("s"))
    assert duration >= 1.1, f"per_host=1 should fetch b and c one after the other: {poll}"
    assert "settings.per_host changed: takes effect after a restart" not in daemon.log
