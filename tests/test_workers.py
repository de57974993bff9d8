"""Several workers on one PostgreSQL database (#17): real `aggregator run` processes
(scheduler.py) on a fresh database of the session's throwaway server (tests/pgserver.py),
polling a real local feed server (tests/feedserver.py) that serves 240 feeds carrying
copies of the same stories spread across them.

What must hold, checked from the database and the feed server: no item stored twice and
none lost; each feed fetched once per due time; every item in exactly one cluster whose
size and feed count match its members; the partition into clusters the same as one
`aggregator fetch` makes of the same feeds in an SQLite file; a worker killed mid-poll
loses nothing, and the feeds it held are fetched by the others once its lease ends; one
worker publishes at a time, and another takes over when it is killed.

Timing: deadlines are generous (a busy 2-core machine); nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest
from feedserver import FeedServer, Route
from test_daemon import REPO, Daemon, Story, child_env, free_port, rss, wait_for

from aggregator.config import dump_yaml, parse_config
from aggregator.errors import ConfigError
from aggregator.store import leases
from aggregator.store.database import Store
from aggregator.timeutil import from_iso, iso, utcnow

FEEDS = 240
ENTRIES = 5  # per feed: 1,200 entries, ~500 stories
COPIES = (1, 1, 2, 2, 3, 4)  # how many feeds carry a story (a random choice each)
POLL_WAIT = 180.0  # a cold poll of every feed by the workers, on a busy machine
# check often, fetch once an hour (so the cold poll is the only due time), four fetches at
# a time per worker (claims of 16 feeds), leases short enough for a test to see one end
WORKER = {
    "check_every": "0.2s",
    "interval": "1h",
    "timeout": "10s",
    "connect_timeout": "5s",
    "parse_workers": 0,
    "concurrency": 4,
    "per_host": 4,
    "lease": "6s",
    "http": "off",
}
Partition = frozenset[frozenset[tuple[str, str]]]


# ---------------------------------------------------------------- the feeds


@dataclass(frozen=True)
class Corpus:
    """Feed path -> its stories; the story each (feed path, guid) carries."""

    feeds: dict[str, list[Story]]
    labels: dict[tuple[str, str], int]

    @property
    def truth(self) -> Partition:
        groups: dict[int, set[tuple[str, str]]] = defaultdict(set)
        for entry, label in self.labels.items():
            groups[label].add(entry)
        return frozenset(frozenset(g) for g in groups.values())


def make_corpus(feeds: int = FEEDS, seed: int = 17) -> Corpus:
    """Stories of random words from a made-up vocabulary (two stories share no run of
    three words), each carried by 1-4 feeds: word for word, or with a byline added."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    vocabulary = sorted({"".join(rng.choices(syllables, k=rng.randint(2, 4))) for _ in range(5000)})
    free = {f: ENTRIES for f in range(feeds)}
    carried: dict[int, list[Story]] = defaultdict(list)
    labels = {}
    label = 0
    while free:
        label += 1
        title = " ".join(rng.choices(vocabulary, k=rng.randint(6, 9))).capitalize()
        body = tuple(
            " ".join(rng.choices(vocabulary, k=rng.randint(25, 40))) + "." for _ in range(3)
        )
        for n, f in enumerate(rng.sample(sorted(free), min(rng.choice(COPIES), len(free)))):
            paragraphs = (
                body if n % 2 == 0 else (f"By {rng.choice(vocabulary).capitalize()} staff", *body)
            )
            guid = f"feed{f}-{ENTRIES - free[f]}"
            carried[f].append(Story(guid, title, paragraphs, f"https://outlet{f}.example.com/{label}",
                                    hours_ago=rng.uniform(1, 20)))  # fmt: skip
            labels[(f"/feed{f}.xml", guid)] = label
            free[f] -= 1
            if not free[f]:
                del free[f]
    return Corpus({f"/feed{f}.xml": carried[f] for f in range(feeds)}, labels)


def serve(server: FeedServer, corpus: Corpus, delay: float = 0.0) -> list[dict]:
    """Serve every feed (with an ETag; `delay` seconds per answer); the feeds.yaml entries."""
    for path, stories in corpus.feeds.items():
        server.set(path, Route(body=rss(path.strip("/"), stories), etag='"v1"', delay=delay,
                               headers={"Content-Type": "application/rss+xml"}))  # fmt: skip
    return [{"url": server.url(path), "name": path.strip("/")} for path in corpus.feeds]


def write_config(path: Path, feeds: list[dict], **settings: Any) -> Path:
    path.write_text(
        dump_yaml({"settings": {**WORKER, **settings}, "feeds": feeds}), encoding="utf-8"
    )
    return path


# ---------------------------------------------------------------- reading a database


def pg_rows(url: str, sql: str, *params: Any) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params or None).fetchall()


ITEMS = "SELECT f.url, i.key, i.cluster_id FROM items i JOIN feeds f ON f.id = i.feed_id"


def partition(rows: list[tuple]) -> Partition:
    """(feed URL, item key, cluster id) rows as sets of (feed path, key), one per cluster."""
    groups: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for url, key, cluster in rows:
        groups[cluster].add((urlsplit(url).path, key))
    return frozenset(frozenset(g) for g in groups.values())


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus()


@pytest.fixture(scope="module")
def reference(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Partition:
    """The clusters one `aggregator fetch` makes of the same feeds in an SQLite file."""
    tmp = tmp_path_factory.mktemp("reference")
    with FeedServer() as server:
        cfg = write_config(
            tmp / "feeds.yaml", serve(server, corpus), digest_path=str(tmp / "d.xml")
        )
        done = subprocess.run(
            [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(tmp / "ref.db"), "fetch"],
            cwd=REPO, env=child_env(), capture_output=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    conn = sqlite3.connect(tmp / "ref.db")
    try:
        found = partition(conn.execute(ITEMS).fetchall())
    finally:
        conn.close()
    # the stories were made to be told apart: the single writer finds exactly them
    assert found == corpus.truth
    return found


# ---------------------------------------------------------------- the workers


class Workers:
    """`python scheduler.py --config CFG --db URL` processes on one database."""

    def __init__(self, tmp: Path, url: str, cfg: Path):
        self.tmp, self.url, self.cfg = tmp, url, cfg
        self.procs: list[Daemon] = []

    def start(self, n: int = 1) -> list[Daemon]:
        started = []
        for _ in range(n):
            argv = [sys.executable, "scheduler.py", "--config", str(self.cfg), "--db", self.url]
            started.append(Daemon(argv, self.tmp / f"worker-{len(self.procs)}.stderr"))
            self.procs.append(started[-1])
        for proc in started:
            proc.wait_log("daemon started", timeout=60)
        return started

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


@pytest.fixture
def workers(tmp_path: Path, postgres_url: str) -> Iterator[Workers]:
    group = Workers(tmp_path, postgres_url, tmp_path / "feeds.yaml")
    try:
        yield group
    finally:
        group.close()


def worker_of(proc: Daemon) -> str:
    """The worker id a daemon logs at start-up (host:pid:random)."""
    m = re.search(r"worker (\S+): claims due feeds", proc.log)
    assert m, proc.log
    return m.group(1)


def polled(proc: Daemon) -> int:
    """Feeds this worker polled (the `due=` of its poll lines)."""
    return sum(int(n) for n in re.findall(r"poll: due=(\d+)", proc.log))


def assert_stops(proc: Daemon) -> None:
    """SIGTERM: exit 0 within the daemon's promise, nothing logged as a crash."""
    assert proc.stop() == 0, proc.log
    assert "Traceback" not in proc.log, proc.log


def all_fetched(url: str, feeds: int = FEEDS) -> bool:
    return pg_rows(url, "SELECT count(DISTINCT feed_id) FROM fetch_log")[0][0] >= feeds


def check_store(url: str, corpus: Corpus, reference: Partition) -> None:
    """What every cold poll must leave, however many workers shared it."""
    items = pg_rows(url, ITEMS)
    entries = [(urlsplit(u).path, key) for u, key, _ in items]
    assert len(entries) == len(set(entries)), "an item was stored twice"
    assert set(entries) == set(corpus.labels), "items are missing"
    fetches = pg_rows(
        url,
        """SELECT f.url, count(l.id), min(l.outcome), max(l.outcome)
           FROM feeds f LEFT JOIN fetch_log l ON l.feed_id = f.id GROUP BY f.url""",
    )
    assert len(fetches) == FEEDS
    twice = [(u, n, lo, hi) for u, n, lo, hi in fetches if (n, lo, hi) != (1, "ok", "ok")]
    assert not twice, f"feeds not fetched exactly once (and fine): {twice[:5]}"
    unclustered = pg_rows(
        url,
        "SELECT count(*) FROM items i LEFT JOIN clusters c ON c.id = i.cluster_id WHERE c.id IS NULL",
    )
    assert unclustered == [(0,)], "every item belongs to exactly one existing cluster"
    sizes = pg_rows(
        url,
        """SELECT c.id, c.size, c.feed_count, count(i.id), count(DISTINCT i.feed_id)
           FROM clusters c LEFT JOIN items i ON i.cluster_id = c.id
           GROUP BY c.id, c.size, c.feed_count""",
    )
    wrong = [r for r in sizes if (r[1], r[2]) != (r[3], r[4])]
    assert not wrong, f"cluster sizes or feed counts differ from their members: {wrong[:5]}"
    assert pg_rows(url, "SELECT count(*) FROM feeds WHERE lease_owner IS NOT NULL") == [(0,)]
    assert partition(items) == reference


# ---------------------------------------------------------------- sharing the polling


@pytest.mark.parametrize("n", [2, 3])
def test_workers_share_a_cold_poll_and_cluster_as_one_writer(
    n: int, workers: Workers, feed_server: FeedServer, corpus: Corpus, reference: Partition
) -> None:
    feeds = serve(feed_server, corpus, delay=0.2)
    # all workers up before any feed exists, then the feeds at once (a config reload each)
    write_config(workers.cfg, [], digest_path=str(workers.tmp / "digest.xml"))
    procs = workers.start(n)
    write_config(workers.cfg, feeds, digest_path=str(workers.tmp / "digest.xml"))
    wait_for("every feed fetched", lambda: all_fetched(workers.url), POLL_WAIT)
    wait_for("the last poll lines", lambda: sum(polled(p) for p in procs) >= FEEDS, 30)

    check_store(workers.url, corpus, reference)
    assert all(feed_server.hits(path) == 1 for path in corpus.feeds), "a feed was requested twice"
    shares = [polled(p) for p in procs]
    assert sum(shares) == FEEDS and all(shares), f"each worker polls a share: {shares}"
    for proc in procs:
        assert re.search(r"batches=\d+ lock_wait=\d+\.\d+s", proc.log), proc.log
        assert_stops(proc)


def test_a_lease_outlasts_a_batch_slower_than_the_lease(
    workers: Workers, feed_server: FeedServer, corpus: Corpus
) -> None:
    """Claims of 8 feeds fetched two at a time, a second each: a batch takes ~4 s, twice a
    2 s lease; renewing it keeps the other worker off those feeds."""
    small = Corpus({p: s for p, s in list(corpus.feeds.items())[:24]}, {})
    feeds = serve(feed_server, small, delay=1.0)
    settings = {
        "concurrency": 2,
        "per_host": 2,
        "lease": "2s",
        "digest_path": str(workers.tmp / "d.xml"),
    }
    write_config(workers.cfg, [], **settings)
    procs = workers.start(2)
    write_config(workers.cfg, feeds, **settings)
    wait_for("every feed fetched", lambda: all_fetched(workers.url, len(feeds)), POLL_WAIT)
    wait_for("the last poll lines", lambda: sum(polled(p) for p in procs) >= len(feeds), 30)
    assert [p for p in small.feeds if feed_server.hits(p) != 1] == []
    counts = pg_rows(workers.url, "SELECT feed_id, count(*) FROM fetch_log GROUP BY feed_id")
    assert len(counts) == len(feeds) and {n for _, n in counts} == {1}
    for proc in procs:
        assert_stops(proc)


def test_a_killed_workers_feeds_are_fetched_after_its_lease_and_nothing_is_lost(
    workers: Workers, feed_server: FeedServer, corpus: Corpus, reference: Partition
) -> None:
    feeds = serve(feed_server, corpus, delay=0.3)
    write_config(workers.cfg, [], digest_path=str(workers.tmp / "digest.xml"))
    victim, *others = workers.start(3)
    write_config(workers.cfg, feeds, digest_path=str(workers.tmp / "digest.xml"))
    victim_id = worker_of(victim)

    def mid_poll() -> bool:
        held = pg_rows(workers.url, "SELECT count(*) FROM feeds WHERE lease_owner = %s", victim_id)
        return held[0][0] > 0 and pg_rows(workers.url, "SELECT count(*) FROM fetch_log")[0][0] >= 20

    wait_for("the worker to hold feeds mid-poll", mid_poll, POLL_WAIT)
    victim.proc.send_signal(signal.SIGKILL)
    victim.kill()
    # its sessions end (an open transaction rolls back); the two others keep 2 each
    sessions = """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                  AND backend_type = 'client backend' AND pid <> pg_backend_pid()"""
    wait_for(
        "the killed worker's sessions to end", lambda: pg_rows(workers.url, sessions) == [(4,)], 60
    )
    held = dict(
        pg_rows(workers.url, "SELECT id, lease_until FROM feeds WHERE lease_owner = %s", victim_id)
    )
    assert held, "the worker was killed between two claims: nothing to take over"

    wait_for("every feed fetched", lambda: all_fetched(workers.url), POLL_WAIT)
    for proc in others:
        assert proc.alive(), proc.log
    check_store(workers.url, corpus, reference)
    fetched = dict(pg_rows(workers.url, "SELECT feed_id, fetched_at FROM fetch_log"))
    early = {
        f: (until, fetched[f])
        for f, until in held.items()
        if from_iso(fetched[f]) < from_iso(until)
    }
    assert not early, f"feeds fetched before the killed worker's lease ended: {early}"
    for proc in others:
        assert_stops(proc)


# ---------------------------------------------------------------- publishing


def healthz(client: httpx.Client) -> dict | None:
    try:
        response = client.get("/healthz")
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def publish_locks(url: str) -> int:
    key_high, key_low = leases.PUBLISH_LOCK_KEY >> 32, leases.PUBLISH_LOCK_KEY & 0xFFFFFFFF
    return pg_rows(
        url,
        """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted
           AND classid = %s AND objid = %s AND objsubid = 1""",
        key_high, key_low,
    )[0][0]  # fmt: skip


def test_one_worker_publishes_and_another_takes_over_when_it_is_killed(
    workers: Workers, feed_server: FeedServer, corpus: Corpus
) -> None:
    small = Corpus({p: s for p, s in list(corpus.feeds.items())[:40]}, {})
    feeds = serve(feed_server, small)
    port = free_port()
    digest = workers.tmp / "digest.xml"
    write_config(workers.cfg, feeds, http=f"127.0.0.1:{port}", digest_path=str(digest))
    procs = workers.start(3)  # the same settings.http for all: only the publisher binds it
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, trust_env=False)
    try:
        wait_for("every feed fetched", lambda: all_fetched(workers.url, len(feeds)), POLL_WAIT)
        first = wait_for("the publisher to count every item",
                         lambda: (h := healthz(client)) and h["items"] == ENTRIES * len(feeds) and h)  # fmt: skip
        ids = {worker_of(p): p for p in procs}
        publisher = ids[first["worker"]]
        assert {w["id"] for w in first["workers"]} == set(ids)
        assert [w["id"] for w in first["workers"] if w["publisher"]] == [first["worker"]]
        assert publish_locks(workers.url) == 1
        assert [p for p in procs if f"worker {worker_of(p)} publishes the digest" in p.log] == [
            publisher
        ]
        assert all(
            f"polls; worker {first['worker']} publishes the digest" in p.log
            for p in procs
            if p is not publisher
        )
        assert digest.exists()

        publisher.proc.send_signal(signal.SIGKILL)
        publisher.kill()
        digest.unlink()
        second = wait_for("another worker to serve", lambda: (h := healthz(client)) and h.get("worker") not in (None, first["worker"]) and h, 60)  # fmt: skip
        heir = ids[second["worker"]]
        assert "publishes the digest (taking over)" in heir.log
        assert publish_locks(workers.url) == 1
        wait_for("the digest file written again", digest.exists)

        # a story stored by another process (`aggregator fetch`, not a worker poll): the
        # publisher republishes because the store's clusters changed
        path = next(iter(small.feeds))
        news = Story("late-1", "Harbour ferry returns after the winter", ("The ferry sails again from the old quay today, "
                     "its first crossing since the autumn storms closed the pier for repairs.",), "https://example.com/late-1")  # fmt: skip
        feed_server.set(path, Route(body=rss("late", [news, *small.feeds[path]]), etag='"v2"',
                                    headers={"Content-Type": "application/rss+xml"}))  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "aggregator", "--config", str(workers.cfg), "--db", workers.url,
             "fetch", "--feed", feed_server.url(path)],
            cwd=REPO, env=child_env(), capture_output=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()

        def listed() -> bool:
            body = client.get("/digest.json")
            return body.status_code == 200 and news.title in {
                i["title"] for i in json.loads(body.content)["items"]
            }

        wait_for("the new story in the served digest", listed, 30)
        assert news.title.encode() in digest.read_bytes()
        survivors = [p for p in procs if p is not publisher]
        assert {w["id"] for w in healthz(client)["workers"]} == {worker_of(p) for p in survivors}
        for proc in survivors:
            assert_stops(proc)
    finally:
        client.close()


# ---------------------------------------------------------------- the parts


@pytest.fixture
def store(db_target: Path | str) -> Iterator[Store]:
    s = Store.open(db_target)
    try:
        yield s
    finally:
        s.close()


def test_claims_are_disjoint_end_with_the_lease_and_are_released(
    store: Store, tmp_path: Path
) -> None:
    config = parse_config("feeds:\n" + "".join(f"  - https://example.com/{i}.xml\n" for i in range(10)),
                          tmp_path / "feeds.yaml")  # fmt: skip
    store.sync_feeds(config, utcnow())
    now = utcnow()
    store.conn.execute("UPDATE feeds SET next_fetch_at = ?", (iso(now),))
    a = leases.claim(store, "a", now, 60, 4)
    b = leases.claim(store, "b", now, 60, 4)
    c = leases.claim(store, "c", now, 60, 4)
    assert [len(a), len(b), len(c)] == [4, 4, 2]
    assert len({f.id for f in a + b + c}) == 10
    assert leases.claim(store, "d", now, 60, 4) == []
    assert leases.leases(store) == {"a": 4, "b": 4, "c": 2}
    # a result written ends the claim; a lease that ended is anyone's
    store.update_feed_state(a[0].id, next_fetch_at=now.replace(year=now.year + 1))
    assert leases.leases(store)["a"] == 3
    later = now.replace(year=now.year + 1)
    assert len(leases.claim(store, "d", later, 60, 10)) == 10  # every feed is due by then
    assert leases.release(store, "d") == 10 and leases.leases(store) == {}
    assert leases.renew(store, "a", later) == 0


def test_a_prune_that_removes_nothing_keeps_the_dedup_index(store: Store, tmp_path: Path) -> None:
    """The daily prune rebuilt the index even when nothing was old enough to go (12 s at
    100,000 items on PostgreSQL, with the daemon's polling waiting meanwhile)."""
    from aggregator.config import Config
    from aggregator.service.daemon import Daemon

    daemon = Daemon(
        Config(tmp_path / "feeds.yaml", parse_config("", tmp_path / "f.yaml").settings, ()), store
    )
    daemon.publishing = True  # on PostgreSQL: as the publisher, which prunes for every worker
    try:
        index = daemon.pipeline.clusterer.index
        asyncio.run(daemon.prune_job())
        assert daemon.pipeline.clusterer.index is index
    finally:
        daemon.pipeline.close()


def test_a_lock_session_is_named_after_its_worker_and_keeps_the_given_options() -> None:
    url = "postgresql://u:pw@db.example:5433/agg?sslmode=require&options=-c%20search_path%3Dagg"
    out = leases.lock_session_url(url, "host:12:abcdef")
    parts = dict(p.split("=", 1) for p in urlsplit(out).query.split("&"))
    assert out.startswith("postgresql://u:pw@db.example:5433/agg?")
    assert parts["sslmode"] == "require"
    assert parts["application_name"] == "aggregator%20host%3A12%3Aabcdef"
    assert parts["options"].startswith("-c%20search_path%3Dagg%20-c%20tcp_keepalives_idle%3D30")
    assert "+" not in out  # libpq does not read "+" as a space


def test_worker_ids_differ_and_name_the_host_and_process() -> None:
    a, b = leases.worker_id("h" * 100, 42), leases.worker_id("h" * 100, 42)
    assert a != b and a.startswith("h" * leases.HOST_CHARS + ":42:")
    assert len(leases.APPLICATION_PREFIX + a) <= 63  # PostgreSQL's application_name limit


def test_lease_is_a_duration_setting(tmp_path: Path) -> None:
    assert parse_config("settings:\n  lease: 90s\n", tmp_path / "f.yaml").settings.lease == 90
    assert parse_config("", tmp_path / "f.yaml").settings.lease == 600
    with pytest.raises(ConfigError, match="settings.lease"):
        parse_config("settings:\n  lease: 0s\n", tmp_path / "f.yaml")


# ---------------------------------------------------------------- bench/scale_out.py


@pytest.mark.bench_smoke
def test_scale_out_bench_quick() -> None:
    """bench/scale_out.py --quick runs end to end (figures are not asserted, counts are)."""
    done = subprocess.run(
        [sys.executable, "bench/scale_out.py", "--quick", "--json"],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert (report["feeds"], report["entries"], report["quick"]) == (200, 20, True)
    rows = {(r["backend"], r["workers"], r["phase"]): r for r in report["rows"]}
    assert set(rows) == {(b, n, p) for b, n in (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))
                         for p in ("cold", "steady")}  # fmt: skip
    for (backend, n, phase), r in rows.items():
        assert r["items"] == (200 * 20 if phase == "cold" else 20 * 5), r  # churn: 10% gain 5
        assert sum(r["shares"]) == 200 and len(r["shares"]) == n and r["poll_errors"] == 0, r
        assert r["wall_s"] > 0 and r["worker_cpu_s"] > 0 and r["cpu_ms_per_item"] > 0, r
        if backend == "sqlite":
            assert r["lock_wait_s"] is None and r["pg_cpu_s"] is None, r
        else:
            assert r["lock_wait_s"] >= 0 and r["pg_cpu_s"] > 0, r
