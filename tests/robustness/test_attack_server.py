"""The digest server under attack (issue #12, items 4 and 7): idle and slow connections must
not starve the daemon of threads or descriptors, feed values are capped at normalising, and
the web page is served from a cached render. Each test failed before its fix.

Real servers on 127.0.0.1, real fetches into a real SQLite file, the real daemon as a
subprocess (with a low RLIMIT_NOFILE, so a few hundred connections reach its limits)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from feedserver import FeedServer, Route
from test_daemon import Daemon, Rig, rss, story, wait_for

from aggregator.config import Config, parse_config
from aggregator.ingest.normalize import ELLIPSIS, MAX_AUTHOR, MAX_LINK, MAX_TITLE
from aggregator.publish import webview
from aggregator.publish.connections import ConnectionLimits
from aggregator.publish.pagecache import PAGE_MAX_AGE
from aggregator.publish.publisher import DigestCache, publish
from aggregator.publish.serve import DigestServer
from aggregator.service.app import fetch_all
from aggregator.store.database import Store

MB = 1_000_000


# ---------------------------------------------------------------- caps at normalising


def _rss(channel_title: str, items: list[tuple[str, str, str, str]]) -> bytes:
    """(guid, title, author, link) items, with dc:creator authors."""
    parts = ['<?xml version="1.0" encoding="utf-8"?>',
             '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>',
             f"<title>{channel_title}</title><link>https://example.com/</link>"]  # fmt: skip
    for guid, title, author, link in items:
        parts.append(f"<item><guid>{guid}</guid><title>{title}</title><dc:creator>{author}</dc:creator>"
                     f"<link>{link}</link><description>Some text of {guid}.</description></item>")  # fmt: skip
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def _config(tmp_path: Path, url: str) -> Config:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"settings:\n  http: 'off'\n  parse_workers: 0\n  digest_path: {tmp_path / 'digest.xml'}\n"
                   f"feeds:\n  - {url}\n")  # fmt: skip
    return parse_config(cfg.read_text(), cfg)


def test_megabyte_titles_authors_and_links_are_stored_at_the_caps(
    tmp_path, feed_server: FeedServer
) -> None:
    """A 1 MB title is cut at a word's end with an ellipsis, an author likewise, a link over
    MAX_LINK is dropped (a cut one would lead elsewhere), a feed's title is capped too; a
    cut never separates a letter from its combining mark."""
    marked = "q\u0307" * 600  # q + combining dot above: no precomposed form, two code points each
    body = _rss("Feed " * (MB // 5), [
        ("big", "Word " * (MB // 5), "Author " * (MB // 7), "https://example.com/" + "a" * MB),
        ("marks", marked, "Jo Doe", "https://example.com/fine"),
        ("plain", "An ordinary headline", "Ann Other", "https://example.com/plain?id=1"),
    ])  # fmt: skip
    feed_server.set("/big.xml", Route(body=body, headers={"Content-Type": "application/rss+xml"}))
    store = Store.open(tmp_path / "agg.db")
    try:
        report = fetch_all(_config(tmp_path, feed_server.url("/big.xml")), store)
        assert report.errors == 0, [o.error for o in report.outcomes]
        rows = {
            r[0]: r[1:]
            for r in store.conn.execute("SELECT key, title, author, url, canonical_url FROM items")
        }
        feed_title = store.conn.execute("SELECT title FROM feeds").fetchone()[0]
    finally:
        store.close()
    title, author, url, canonical = rows["big"]
    assert len(title) <= MAX_TITLE and title.endswith("Word" + ELLIPSIS), (len(title), title[-20:])
    assert len(title) > MAX_TITLE - 10  # cut at the cap, not far before it
    assert len(author) <= MAX_AUTHOR and author.endswith("Author" + ELLIPSIS), (
        len(author),
        author[-20:],
    )
    assert url is None and canonical is None  # over MAX_LINK: dropped
    assert len(feed_title) <= MAX_TITLE and feed_title.endswith(ELLIPSIS)
    assert rows["marks"][0] == "q\u0307" * 499 + ELLIPSIS  # 999 characters would end on a bare q
    assert rows["plain"] == ("An ordinary headline", "Ann Other", "https://example.com/plain?id=1",
                             "https://example.com/plain?id=1")  # fmt: skip
    assert MAX_LINK >= 8_190  # a link any common web server accepts is kept


# ---------------------------------------------------------------- the page's render


@contextlib.contextmanager
def counting_renders() -> Iterator[list[int]]:
    """Counts calls of webview.render_page in every thread started meanwhile (the server's
    are started inside), whatever module calls it."""
    code = webview.render_page.__code__
    count = [0]
    lock = threading.Lock()

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            with lock:
                count[0] += 1

    threading.setprofile(profile)
    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


def _published(
    tmp_path: Path, server: FeedServer, stories: list
) -> tuple[Config, Store, DigestCache]:
    """A real fetch of the stories into a real store, published into a DigestCache."""
    server.set(
        "/quay.xml",
        Route(body=rss("Quay Times", stories), headers={"Content-Type": "application/rss+xml"}),
    )
    config = _config(tmp_path, server.url("/quay.xml"))
    store = Store.open(tmp_path / "agg.db")
    assert fetch_all(config, store).errors == 0
    cache = DigestCache()
    publish(config, store, datetime.now(UTC), cache)
    return config, store, cache


def test_the_page_is_rendered_once_per_publish_not_per_request(
    tmp_path, feed_server: FeedServer
) -> None:
    config, store, cache = _published(tmp_path, feed_server, [story("bridge", "q1")])
    try:
        with counting_renders() as renders:
            server = DigestServer(("127.0.0.1", 0), cache).start()
            try:
                with httpx.Client(base_url=server.base_url, trust_env=False, timeout=30) as client:
                    pages = [client.get("/") for _ in range(10)]  # one kept-alive connection
                with ThreadPoolExecutor(20) as pool:  # and 20 at once, each on its own
                    pages += pool.map(lambda _: httpx.get(server.base_url + "/", trust_env=False, timeout=30),
                                      range(20))  # fmt: skip
                assert {p.status_code for p in pages} == {200}
                assert (
                    len({p.content for p in pages}) == 1
                    and b"Harbor Street bridge" in pages[0].content
                )
                assert renders[0] == 1, f"{renders[0]} renders for 30 requests"

                news = rss("Quay Times", [story("bridge", "q1"), story("library_fire", "q2")])
                feed_server.set("/quay.xml", Route(body=news, etag='"v2"',
                                                   headers={"Content-Type": "application/rss+xml"}))  # fmt: skip
                assert fetch_all(config, store).errors == 0
                publish(config, store, datetime.now(UTC), cache)  # a new digest: one more render
                after = [
                    httpx.get(server.base_url + "/", trust_env=False, timeout=30) for _ in range(5)
                ]
                assert all(b"library" in p.content.lower() for p in after)
                assert renders[0] == 2, f"{renders[0]} renders after one publish"
            finally:
                server.stop()
    finally:
        store.close()


def test_a_cached_page_is_refreshed_when_its_relative_times_would_be_stale(
    tmp_path, feed_server: FeedServer
) -> None:
    """The page says "5m ago": a render is served for PAGE_MAX_AGE, then rendered again,
    even when nothing was published (the daemon may not publish for an hour). Filtered
    pages are cached per filter."""
    _, store, cache = _published(tmp_path, feed_server, [story("bridge", "q1")])
    now = [datetime.now(UTC)]
    server = DigestServer(("127.0.0.1", 0), cache, clock=lambda: now[0]).start()
    try:
        with httpx.Client(base_url=server.base_url, trust_env=False, timeout=30) as client:
            first = client.get("/")
            for _ in range(3):
                client.get("/")
                client.get("/?min_size=2")
            assert server.pages.renders == 2  # "/" and "/?min_size=2"
            now[0] += timedelta(seconds=PAGE_MAX_AGE - 1)
            assert client.get("/").content == first.content and server.pages.renders == 2
            now[0] += timedelta(seconds=2)
            client.get("/")
            assert server.pages.renders == 3
            assert (
                client.get(
                    "/", headers={"If-None-Match": client.get("/").headers["ETag"]}
                ).status_code
                == 304
            )
    finally:
        server.stop()
        store.close()


# ---------------------------------------------------------------- connections


def _open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing (non-blocking connects: a server that stopped
    accepting must not hang the test)."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)


def _until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (failing if it does not
    within 10 s)."""
    s.settimeout(10)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        raise AssertionError("a connection was kept past the idle timeout") from None
    return data


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line in /proc/PID/limits")


LOW_LIMIT = (128, 256)  # soft, hard RLIMIT_NOFILE of the daemon below
_LIMITED = ("import resource, runpy, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({}, {})); "
            "sys.argv[0] = 'scheduler.py'; runpy.run_path('scheduler.py', run_name='__main__')")  # fmt: skip


def test_400_idle_connections_hold_no_thread_and_leave_descriptors_for_polling(rig: Rig) -> None:
    """A daemon with 128 descriptors (soft; 256 hard): it raises its soft limit to the hard
    one; 400 idle connections then add no thread, the server closes the ones idle longest
    to keep its descriptor reserve, /healthz still answers and the next poll still works."""
    a = rig.serve("/a.xml", "Quay Times", [story("bridge", "a1")])
    b = rig.serve("/b.xml", "Riverside Post", [story("rail_strike", "b1")])
    rig.write_config([a, b], interval="1s")
    argv = [sys.executable, "-c", _LIMITED.format(*LOW_LIMIT), *rig._paths()]
    daemon = Daemon(argv, rig.tmp / "limited.stderr")
    rig.daemons.append(daemon)
    wait_for("the daemon to answer /healthz", lambda: rig._up(daemon), timeout=30)
    wait_for("both feeds in the digest", lambda: len(rig.entries()) == 2, timeout=30)
    pid = daemon.proc.pid
    assert _open_files_limit(pid) == (LOW_LIMIT[1], LOW_LIMIT[1])  # soft raised to hard
    threads_before = _threads(pid)

    idle = _open_idle(rig.port, 400)
    try:
        # a fresh client still gets an answer while they are all open
        health = wait_for("/healthz amid 400 idle connections",
                          lambda: _healthz(rig.port), timeout=30)  # fmt: skip
        assert health["status"] == "ok"
        threads_after = _threads(pid)
        assert threads_after <= threads_before + 5, (threads_before, threads_after)
        # the server keeps its reserve (half of 256 here) by closing the longest idle
        closed: set[int] = set()

        def enough_closed() -> bool:
            closed.update(i for i, s in enumerate(idle) if i not in closed and _closed_by_server(s))
            return len(closed) >= 400 - LOW_LIMIT[1] // 2

        wait_for("the server to close idle connections past its reserve", enough_closed, timeout=30)

        # and polling has descriptors: a new story is fetched and published
        rig.serve(
            "/a.xml",
            "Quay Times",
            [story("bridge", "a1"), story("library_fire", "a2")],
            etag='"v2"',
        )
        wait_for("the new story in the digest", lambda: len(rig.entries()) == 3, timeout=30)
    finally:
        for s in idle:
            s.close()
    assert "Too many open files" not in daemon.log
    health = rig.health()
    assert health["feeds_failing"] == 0
    assert health["http"]["closed_idle_for_room"] >= 400 - LOW_LIMIT[1] // 2
    assert health["http"]["max_connections"] < LOW_LIMIT[1] // 2  # the reserve is kept
    assert daemon.stop() == 0


def _healthz(port: int) -> dict | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False, timeout=5)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


@pytest.fixture
def small_server(tmp_path, feed_server: FeedServer) -> Iterator[DigestServer]:
    """The real server object over a real published digest, with a 1 s idle timeout."""
    _, store, cache = _published(tmp_path, feed_server, [story("bridge", "q1")])
    server = DigestServer(
        ("127.0.0.1", 0), cache, limits=ConnectionLimits(idle_timeout=1.0)
    ).start()
    try:
        yield server
    finally:
        server.stop()
        store.close()


def test_idle_kept_alive_and_slowly_sent_connections_are_closed_after_the_timeout(
    small_server: DigestServer,
) -> None:
    """With a 1 s timeout: a connection that sends nothing, one kept alive after an answer,
    and one sending its headers a line every 0.2 s (slowloris) are all closed; a request
    sent in time is answered."""
    port = small_server.httpd.server_address[1]
    idle = socket.create_connection(("127.0.0.1", port))
    kept = socket.create_connection(("127.0.0.1", port))
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    slow = socket.create_connection(("127.0.0.1", port))
    slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    lines = 0
    while time.monotonic() - started < 20:  # the server should end it long before
        try:
            slow.sendall(b"X-Slow-%d: y\r\n" % lines)
        except OSError:
            break
        lines += 1
        slow.setblocking(False)
        if _closed_by_server(slow):
            break
        slow.setblocking(True)
        time.sleep(0.2)
    assert lines >= 5, "the slow client was cut before its timeout"  # a second of trickling
    assert time.monotonic() - started < 20, "a client trickling its headers was never closed"
    assert _until_closed(idle) == b""
    assert _until_closed(kept).startswith(b"HTTP/1.1 200 OK")  # answered, then closed
    assert small_server.httpd.timed_out >= 3
    with httpx.Client(base_url=small_server.base_url, trust_env=False, timeout=10) as client:
        assert client.get("/healthz").status_code == 200


def test_past_the_connection_cap_the_longest_idle_is_closed_and_a_full_server_says_503(
    tmp_path, feed_server: FeedServer
) -> None:
    """max_connections 4, one worker: a fifth client closes the longest idle connection and
    is answered; when all four are in requests (a filter query that waits), a fifth gets a
    503 with Retry-After at once, and the four are answered when the query returns."""
    _, store, cache = _published(tmp_path, feed_server, [story("bridge", "q1")])
    release = threading.Event()

    def slow_query(where):
        release.wait(30)
        return cache.snapshot()

    limits = ConnectionLimits(workers=1, max_connections=4)
    server = DigestServer(("127.0.0.1", 0), cache, slow_query, limits=limits).start()
    port = server.httpd.server_address[1]
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        wait_for("4 connections accepted", lambda: server.httpd.open == 4)
        assert (
            httpx.get(server.base_url + "/healthz", trust_env=False, timeout=10).status_code == 200
        )
        idle[0].settimeout(10)
        assert idle[0].recv(1) == b""  # the oldest idle one made room
        for s in idle:
            s.close()
        wait_for("the idle ones closed", lambda: server.httpd.open == 0)

        busy = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        for i, s in enumerate(busy):  # each a distinct filter, so each waits in the query
            s.sendall(b"GET /?q=x%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
        wait_for(
            "4 requests in progress", lambda: server.httpd.open == 4 and not server.httpd._waiting
        )
        refused = socket.create_connection(("127.0.0.1", port))
        refused.settimeout(10)
        answer = refused.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in answer
        release.set()
        for s in busy:
            s.settimeout(30)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            s.close()
    finally:
        release.set()
        server.stop()
        store.close()
