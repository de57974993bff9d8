"""Helpers of the daemon robustness tests (test_crash, test_concurrency, test_misuse):
a farm of local feeds that change on demand, the real daemon and CLI as subprocesses,
and the invariants the database must satisfy whatever happened to the daemon.

Everything random is drawn from a `random.Random` the test seeds, so a failing run can be
replayed exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path
from random import Random
from typing import Any

from feedserver import FeedServer, Route

from aggregator.config import dump_yaml
from aggregator.timeutil import utcnow

REPO = Path(__file__).resolve().parents[2]

try:  # the suite's end-of-session summary (conftest.py), when it is there
    from harness import FIGURES
except ImportError:  # pragma: no cover - the other half of the suite is optional here
    FIGURES: dict[str, str] = {}


def record(name: str, value: str) -> None:
    """A figure worth keeping: printed now and in the end-of-session summary."""
    FIGURES[name] = value
    print(f"\nrobustness figure: {name}: {value}", flush=True)


def child_env() -> dict[str, str]:
    """This checkout importable, no AGGREGATOR_* or proxy settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for key in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# ---------------------------------------------------------------- a farm of changing feeds

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "da", "pe", "gor", "tan",
              "bel", "cor", "dun", "fal", "hin", "jor", "mar", "nor", "pol", "quin", "ros",
              "sel", "tur", "val", "wen", "zor")  # fmt: skip


def vocabulary(rng: Random, size: int = 800) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))))
    return sorted(words)


@dataclass
class Story:
    """One news story; feeds carry copies of it (another guid, headline, footer...)."""

    id: int
    title: str
    paragraphs: list[str]


@dataclass
class Entry:
    guid: str
    title: str
    paragraphs: list[str]
    link: str
    published: datetime


@dataclass
class Feed:
    index: int
    fmt: str  # rss | atom
    entries: list[Entry] = field(default_factory=list)
    version: int = 0

    @property
    def path(self) -> str:
        return f"/feed{self.index:02d}.{'xml' if self.fmt == 'rss' else 'atom'}"

    @property
    def outlet(self) -> str:
        return f"Outlet {self.index:02d}"


class FeedFarm:
    """`count` feeds of `low`-`high` entries drawn from a shared pool of stories, so most
    stories are carried by several feeds; `mutate` adds, edits and drops entries."""

    def __init__(self, server: FeedServer, rng: Random, count: int = 50, low: int = 20,
                 high: int = 40, pool: int = 200):  # fmt: skip
        self.server = server
        # a killed daemon resets connections mid-request on purpose: no tracebacks for that
        httpd = getattr(server, "_httpd", None)
        if httpd is not None:
            httpd.handle_error = lambda request, client_address: None
        self.rng = rng
        self.words = vocabulary(rng)
        self.low, self.high = low, high
        self.stories: list[Story] = [self._new_story() for _ in range(pool)]
        self.feeds = [Feed(i, "rss" if i % 2 == 0 else "atom") for i in range(count)]
        self._serial = 0
        now = utcnow()
        for feed in self.feeds:
            for story in rng.sample(self.stories, rng.randint(low, high)):
                age = timedelta(hours=rng.uniform(1, 72))
                feed.entries.append(self._copy(feed, story, now - age))
            feed.entries.sort(key=lambda e: e.published)
            self.publish(feed)

    # -- text

    def _sentence(self, n: int) -> str:
        return " ".join(self.rng.choice(self.words) for _ in range(n))

    def _new_story(self) -> Story:
        title = self._sentence(self.rng.randint(6, 10)).capitalize()
        paragraphs = [self._sentence(self.rng.randint(25, 45)).capitalize() + "."
                      for _ in range(self.rng.randint(3, 5))]  # fmt: skip
        return Story(len(getattr(self, "stories", ())), title, paragraphs)

    def _copy(self, feed: Feed, story: Story, published: datetime) -> Entry:
        """A feed's copy of a story: sometimes a new headline, a dropped paragraph, a
        footer, or the wire's own link (which takes the exact-URL shortcut)."""
        self._serial += 1
        rng = self.rng
        title = story.title if rng.random() < 0.7 else f"{story.title} {rng.choice(self.words)}"
        paragraphs = list(story.paragraphs)
        if len(paragraphs) > 3 and rng.random() < 0.3:
            del paragraphs[rng.randrange(1, len(paragraphs))]
        if rng.random() < 0.3:
            paragraphs.append(f"This story was reported by {feed.outlet} staff.")
        link = (f"https://wire.example/story/{story.id}" if rng.random() < 0.2
                else f"https://outlet{feed.index:02d}.example/news/{story.id}-{self._serial}")  # fmt: skip
        guid = f"urn:outlet{feed.index:02d}:s{story.id}:e{self._serial}"
        return Entry(guid, title, paragraphs, link, published)

    # -- serving

    def render(self, feed: Feed) -> bytes:
        if feed.fmt == "rss":
            parts = ['<?xml version="1.0" encoding="utf-8"?>', '<rss version="2.0"><channel>',
                     f"<title>{feed.outlet}</title><link>https://outlet{feed.index:02d}.example/</link>",
                     "<description>robustness test feed</description>"]  # fmt: skip
            for e in reversed(feed.entries):
                body = "".join(f"<p>{escape(p)}</p>" for p in e.paragraphs)
                parts.append(
                    f'<item><guid isPermaLink="false">{escape(e.guid)}</guid>'
                    f"<title>{escape(e.title)}</title><link>{escape(e.link)}</link>"
                    f"<pubDate>{format_datetime(e.published, usegmt=True)}</pubDate>"
                    f"<description>{escape(body)}</description></item>"
                )
            parts.append("</channel></rss>")
        else:
            updated = max(e.published for e in feed.entries).strftime("%Y-%m-%dT%H:%M:%SZ")
            parts = ['<?xml version="1.0" encoding="utf-8"?>',
                     '<feed xmlns="http://www.w3.org/2005/Atom">',
                     f"<title>{feed.outlet}</title><id>urn:outlet:{feed.index}</id>",
                     f'<link href="https://outlet{feed.index:02d}.example/"/><updated>{updated}</updated>']  # fmt: skip
            for e in reversed(feed.entries):
                stamp = e.published.strftime("%Y-%m-%dT%H:%M:%SZ")
                body = "".join(f"<p>{escape(p)}</p>" for p in e.paragraphs)
                parts.append(
                    f"<entry><id>{escape(e.guid)}</id><title>{escape(e.title)}</title>"
                    f'<link href="{escape(e.link)}"/><published>{stamp}</published>'
                    f'<updated>{stamp}</updated><content type="html">{escape(body)}</content></entry>'
                )
            parts.append("</feed>")
        return "\n".join(parts).encode("utf-8")

    def publish(self, feed: Feed) -> None:
        feed.version += 1
        ctype = "application/rss+xml" if feed.fmt == "rss" else "application/atom+xml"
        self.server.set(feed.path, Route(body=self.render(feed), etag=f'"v{feed.version}"',
                                         headers={"Content-Type": ctype}))  # fmt: skip

    def urls(self) -> list[str]:
        return [self.server.url(f.path) for f in self.feeds]

    def served(self) -> dict[tuple[str, str], str]:
        """(feed URL, guid) -> title of every entry served right now."""
        return {(self.server.url(f.path), e.guid): e.title for f in self.feeds for e in f.entries}

    # -- change

    def mutate(self, share: float = 0.3) -> int:
        """Change a random subset of feeds: new entries (copies of known stories or new
        stories), an edited entry now and then, the oldest entries falling off the end.
        Returns how many feeds changed."""
        rng = self.rng
        chosen = rng.sample(self.feeds, max(1, round(len(self.feeds) * share)))
        now = utcnow()
        for feed in chosen:
            for _ in range(rng.randint(1, 3)):
                if rng.random() < 0.4:
                    self.stories.append(self._new_story())
                    story = self.stories[-1]
                else:
                    story = rng.choice(self.stories[-60:])
                feed.entries.append(self._copy(feed, story, now))
            if rng.random() < 0.3:  # an edit: same guid, changed text (and headline)
                e = rng.choice(feed.entries)
                words = e.paragraphs[0].split()
                for _ in range(5):
                    words[rng.randrange(len(words))] = rng.choice(self.words)
                e.paragraphs[0] = " ".join(words)
                e.title = f"{e.title.split(' (updated')[0]} (updated {feed.version})"
            while len(feed.entries) > self.high:
                feed.entries.pop(0)
            self.publish(feed)
        return len(chosen)


# ---------------------------------------------------------------- config, daemon, CLI


def write_config(path: Path, feeds: list[str], **settings: Any) -> None:
    base = {"interval": "1s", "check_every": "0.2s", "http": "off", "parse_workers": 2,
            "timeout": "10s", "connect_timeout": "5s", "per_host": 8,
            "digest_path": str(path.parent / "digest.xml")}  # fmt: skip
    doc = {"settings": {**base, **settings}, "feeds": feeds}
    path.write_text(dump_yaml(doc), encoding="utf-8")


class DaemonProcess:
    """`python scheduler.py --config CFG --db DB --log-format json` in its own session (so
    the parse workers it leaves behind can be found); stderr goes to a file."""

    def __init__(self, cfg: Path, db: Path, log: Path, *args: str):
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed in wait()
        argv = [sys.executable, "scheduler.py", "--config", str(cfg), "--db", str(db),
                "--log-format", "json", *args]  # fmt: skip
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log,
                                     start_new_session=True)  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def records(self) -> list[dict]:
        """The JSON log lines (a line cut by SIGKILL is skipped)."""
        out = []
        for line in self.text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL to the daemon process only (what the OOM killer or `kill -9` does)."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.wait(10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(15)

    def leftovers(self, grace: float = 1.0) -> list[int]:
        """Processes of the daemon's session still running `grace` seconds after it died
        (forkserver, parse workers)."""
        deadline = time.monotonic() + grace
        while True:
            pids = session_pids(self.pid)
            if not pids or time.monotonic() > deadline:
                return pids
            time.sleep(0.05)

    def reap(self) -> None:
        """End what the daemon's session left behind (processes this test started)."""
        for pid in session_pids(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            pids.append(int(entry.name))
    return pids


@dataclass
class CliRun:
    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str
    elapsed: float


def run_cli(cfg: Path, db: Path | None, *args: str, timeout: float = 60) -> CliRun:
    """`python -m aggregator --config CFG [--db DB] ARGS`, to completion."""
    argv = [sys.executable, "-m", "aggregator", "--config", str(cfg)]
    if db is not None:
        argv += ["--db", str(db)]
    started = time.monotonic()
    done = subprocess.run([*argv, *args], cwd=REPO, env=child_env(), capture_output=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
    return CliRun(tuple(args), done.returncode, done.stdout,
                  done.stderr.decode("utf-8", errors="replace"), time.monotonic() - started)  # fmt: skip


# ---------------------------------------------------------------- reading the database


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def crash_copy(db: Path, into: Path) -> Path:
    """A copy of the database and its WAL as the crash left them, so reading it (which may
    replay the WAL) does not change what the restarted daemon finds."""
    into.mkdir(parents=True, exist_ok=True)
    for stale in into.iterdir():
        stale.unlink()
    target = into / db.name
    shutil.copyfile(db, target)
    wal = db.with_name(db.name + "-wal")
    if wal.exists():
        shutil.copyfile(wal, target.with_name(target.name + "-wal"))
    return target


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def has_schema(db: Path) -> bool:
    """Whether the migrations have been committed (a kill during start-up may precede them)."""
    conn = connect(db)
    try:
        return bool(conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone())  # fmt: skip
    finally:
        conn.close()


def committed_keys(db: Path) -> set[tuple[str, str]]:
    """(feed URL, entry key) of every item stored."""
    conn = connect(db)
    try:
        return set(
            conn.execute("SELECT f.url, i.key FROM items i JOIN feeds f ON f.id = i.feed_id")
        )
    finally:
        conn.close()


def invariants(db: Path) -> dict[str, list]:
    """Every broken invariant of a database at rest, as {name: offending rows}; empty when
    the database is sound."""
    conn = connect(db)
    try:
        checks: dict[str, str] = {
            "items without a cluster":
                "SELECT id FROM items WHERE cluster_id IS NULL",
            "items in a missing cluster":
                "SELECT i.id, i.cluster_id FROM items i LEFT JOIN clusters c ON c.id = i.cluster_id "
                "WHERE i.cluster_id IS NOT NULL AND c.id IS NULL",
            "clusters whose size - pruned != members":
                "SELECT c.id, c.size, c.pruned, count(i.id) FROM clusters c "
                "LEFT JOIN items i ON i.cluster_id = c.id GROUP BY c.id "
                "HAVING c.size - c.pruned != count(i.id)",
            "clusters whose feed_count != distinct feeds (nothing pruned)":
                "SELECT c.id, c.feed_count, count(DISTINCT i.feed_id) FROM clusters c "
                "JOIN items i ON i.cluster_id = c.id WHERE c.pruned = 0 GROUP BY c.id "
                "HAVING c.feed_count != count(DISTINCT i.feed_id)",
            "clusters whose representative is not a member":
                "SELECT c.id, c.representative_id FROM clusters c "
                "LEFT JOIN items r ON r.id = c.representative_id "
                "WHERE r.id IS NULL OR r.cluster_id != c.id",
            "clusters whose representative is not the earliest member":
                "SELECT c.id FROM clusters c WHERE c.representative_id != ("
                "SELECT id FROM items i WHERE i.cluster_id = c.id ORDER BY published_at, id LIMIT 1)",
            "empty clusters":
                "SELECT c.id FROM clusters c WHERE NOT EXISTS "
                "(SELECT 1 FROM items i WHERE i.cluster_id = c.id)",
            "duplicate items (feed_id, key)":
                "SELECT feed_id, key, count(*) FROM items GROUP BY feed_id, key HAVING count(*) > 1",
            "items without a signature":
                "SELECT i.id FROM items i LEFT JOIN signatures s ON s.item_id = i.id "
                "WHERE s.item_id IS NULL",
            "signatures of missing items":
                "SELECT s.item_id FROM signatures s LEFT JOIN items i ON i.id = s.item_id "
                "WHERE i.id IS NULL",
            "new items missing from the fetch log (sum(new_items) != count(items))":
                "SELECT (SELECT coalesce(sum(new_items), 0) FROM fetch_log), "
                "(SELECT count(*) FROM items) WHERE (SELECT coalesce(sum(new_items), 0) "
                "FROM fetch_log) != (SELECT count(*) FROM items)",
        }  # fmt: skip
        found: dict[str, list] = {}
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        if integrity != ["ok"]:
            found["PRAGMA integrity_check"] = integrity[:20]
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
        if fk:
            found["PRAGMA foreign_key_check"] = fk[:20]
        try:
            conn.execute("INSERT INTO items_fts (items_fts) VALUES ('integrity-check')")
        except sqlite3.DatabaseError as exc:
            found["items_fts integrity-check"] = [str(exc)]
        for name, sql in checks.items():
            rows = conn.execute(sql).fetchall()
            if rows:
                found[name] = rows[:20]
        return found
    finally:
        conn.close()


def poll_lines(records: list[dict]) -> Iterator[dict[str, str]]:
    """The fields of each `poll: due=... new_items=...` log line."""
    for r in records:
        message = r.get("message", "")
        if message.startswith("poll: "):
            yield dict(part.split("=", 1) for part in message[6:].split())
