"""Checks that the test HTTP server (tests/feedserver.py) itself behaves."""

import time
from pathlib import Path

import httpx
import pytest
from feedserver import FeedServer, Route


def test_unknown_path_is_404(feed_server: FeedServer) -> None:
    r = httpx.get(feed_server.url("/nope"))
    assert r.status_code == 404
    assert feed_server.hits("/nope") == 1


def test_bytes_route_defaults_to_xml(feed_server: FeedServer) -> None:
    feed_server.set("/feed", b"<rss/>")
    r = httpx.get(feed_server.url("/feed"))
    assert (r.status_code, r.content) == (200, b"<rss/>")
    assert r.headers["content-type"] == "application/xml"


def test_head_has_headers_but_no_body(feed_server: FeedServer) -> None:
    feed_server.set("/feed", b"<rss/>")
    r = httpx.head(feed_server.url("/feed"))
    assert r.status_code == 200
    assert r.headers["content-length"] == "6"
    assert r.content == b""
    assert feed_server.requests[-1].method == "HEAD"


def test_etag_and_last_modified_give_304(feed_server: FeedServer) -> None:
    lm = "Tue, 12 Mar 2024 09:30:00 GMT"
    feed_server.set("/feed", Route(body=b"<rss/>", etag='"v1"', last_modified=lm))
    url = feed_server.url("/feed")

    first = httpx.get(url)
    assert first.status_code == 200
    assert (first.headers["etag"], first.headers["last-modified"]) == ('"v1"', lm)

    assert httpx.get(url, headers={"If-None-Match": '"v1"'}).status_code == 304
    assert httpx.get(url, headers={"If-None-Match": 'W/"v1"'}).status_code == 304
    assert httpx.get(url, headers={"If-Modified-Since": lm}).status_code == 304
    assert httpx.get(url, headers={"If-None-Match": '"v0"'}).status_code == 200
    assert feed_server.hits("/feed") == 5
    assert feed_server.requests[1].headers["If-None-Match"] == '"v1"'


def test_gzip(feed_server: FeedServer) -> None:
    feed_server.set("/feed", Route(body=b"<rss>" + b"x" * 1000 + b"</rss>", gzip=True))
    r = httpx.get(feed_server.url("/feed"))
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) < 1000
    assert r.content == b"<rss>" + b"x" * 1000 + b"</rss>"  # httpx decoded it


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect(feed_server: FeedServer, status: int) -> None:
    feed_server.set("/old", Route(status=status, redirect_to="/new"))
    feed_server.set("/new", b"<rss/>")
    r = httpx.get(feed_server.url("/old"), follow_redirects=True)
    assert r.status_code == 200
    assert r.url == feed_server.url("/new")
    assert [h.status_code for h in r.history] == [status]


def test_delay_triggers_client_timeout(feed_server: FeedServer) -> None:
    feed_server.set("/slow", Route(body=b"<rss/>", delay=1.0))
    start = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        httpx.get(feed_server.url("/slow"), timeout=0.2)
    assert time.monotonic() - start < 0.9


def test_serve_file_and_query_routing(feed_server: FeedServer, data_dir: Path) -> None:
    feed_server.serve_file("/feed.json", data_dir / "jsonfeed11.json", etag='"j"')
    r = httpx.get(feed_server.url("/feed.json?x=1"))  # query ignored when route has none
    assert r.headers["content-type"] == "application/feed+json"
    assert r.json()["version"] == "https://jsonfeed.org/version/1.1"
    assert feed_server.hits("/feed.json") == 1
    assert feed_server.hits("/feed.json?x=1") == 1


def test_context_manager_stops_server() -> None:
    with FeedServer() as srv:
        srv.set("/a", b"a")
        url = srv.url("/a")
        assert httpx.get(url).content == b"a"
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=1)
