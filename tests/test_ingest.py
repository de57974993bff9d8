"""fetch -> parse -> normalise -> store through a real HTTP server and a real database.

Each test builds a Config with parse_config, opens a Store on `db_target` (an SQLite file
in tmp_path, then a fresh PostgreSQL database: every test here runs on both backends) and
runs `aggregator.service.app.fetch_all`, then reads the stored rows back.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from feedserver import FeedServer, Route

from aggregator.config import Config, dump_yaml, parse_config
from aggregator.service.app import fetch_all
from aggregator.service.poll import FeedOutcome, PollReport
from aggregator.service.schedule import JITTER
from aggregator.store.database import Store
from aggregator.timeutil import from_iso, utcnow

FAST = {"timeout": "2s", "connect_timeout": "2s", "parse_workers": 0, "interval": "1h"}
LAST_MODIFIED = "Tue, 12 Mar 2024 09:30:00 GMT"


def make_config(tmp_path: Path, feeds: list[Any], **settings: Any) -> Config:
    doc = {"settings": {**FAST, **settings}, "feeds": feeds}
    path = tmp_path / "feeds.yaml"
    text = dump_yaml(doc)
    path.write_text(text, encoding="utf-8")
    return parse_config(text, path)


@pytest.fixture
def store(db_target: Path | str) -> Iterator[Store]:
    s = Store.open(db_target)
    yield s
    s.close()


def feed_row(store: Store, url: str) -> dict[str, Any]:
    rows = list(store.query("SELECT * FROM feeds WHERE url = ?", [url]))
    assert len(rows) == 1
    return rows[0]


def items(store: Store, url: str) -> list[dict[str, Any]]:
    return list(
        store.query(
            "SELECT i.* FROM items i JOIN feeds f ON f.id = i.feed_id WHERE f.url = ? ORDER BY i.id",
            [url],
        )
    )


def fetch_log(store: Store, url: str) -> list[dict[str, Any]]:
    return list(
        store.query(
            "SELECT l.* FROM fetch_log l JOIN feeds f ON f.id = l.feed_id WHERE f.url = ? ORDER BY l.id",
            [url],
        )
    )


def searchable(store: Store, word: str) -> int:
    """Items the full-text index finds `word` in (FTS5 on SQLite, tsvector on PostgreSQL)."""
    if store.on_file:
        sql = "SELECT count(*) FROM items_fts WHERE items_fts MATCH ?"
    else:
        sql = "SELECT count(*) FROM items_search WHERE doc @@ search_query(?)"
    return store.conn.execute(sql, (word,)).fetchone()[0]


def only(report: PollReport) -> FeedOutcome:
    assert len(report.outcomes) == 1
    return report.outcomes[0]


def seconds_until(iso_text: str) -> float:
    when = from_iso(iso_text)
    assert when is not None
    return (when - utcnow()).total_seconds()


def fetch_one(tmp_path: Path, store: Store, url: str, **settings: Any) -> FeedOutcome:
    return only(fetch_all(make_config(tmp_path, [url], **settings), store))


# ---------------------------------------------------------------- happy path + conditional GET


def test_first_fetch_stores_items_and_feed_state(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/rss", data_dir / "rss20.xml", etag='"v1"', last_modified=LAST_MODIFIED)
    url = feed_server.url("/rss")
    outcome = fetch_one(tmp_path, store, url)
    assert (outcome.status, outcome.new, outcome.error) == ("new", 4, None)

    rows = items(store, url)
    assert [r["key"] for r in rows] == [
        "https://news.example.com/?p=10412",
        "https://news.example.com/?p=10407",
        "https://news.example.com/?p=10399",
        "https://news.example.com/2024/03/10/library-hours/",
    ]
    storm = rows[1]
    assert storm["canonical_url"] == "https://news.example.com/2024/03/11/storm-warning-coast/?id=7"
    assert storm["published_at"] == "2024-03-11T17:42:10Z"
    assert "amber warning" in storm["text"] and "<em>" not in storm["text"]

    feed = feed_row(store, url)
    assert (feed["status"], feed["title"], feed["format"]) == (
        "ok",
        "Example News & Views",
        "rss20",
    )
    assert (feed["etag"], feed["last_modified"]) == ('"v1"', LAST_MODIFIED)
    assert (feed["error_count"], feed["last_error"], feed["last_http_status"]) == (0, None, 200)
    assert feed["ttl_s"] == 3600
    assert 3600 * (1 - JITTER) - 10 < seconds_until(feed["next_fetch_at"]) <= 3600
    (log,) = fetch_log(store, url)
    assert (log["outcome"], log["http_status"], log["new_items"]) == ("ok", 200, 4)
    # the configured User-Agent went out
    assert feed_server.requests[0].headers["User-Agent"].startswith("aggregator/")
    # the run's last step put the new items in the search index (aggregator/store/migrations/sqlite/005)
    assert store.conn.execute("SELECT count(*) FROM search_pending").fetchone()[0] == 0
    assert searchable(store, "amber") == 1


def test_conditional_get_gives_304_and_writes_no_rows(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/rss", data_dir / "rss20.xml", etag='"v1"', last_modified=LAST_MODIFIED)
    url = feed_server.url("/rss")
    config = make_config(tmp_path, [url])
    assert only(fetch_all(config, store)).status == "new"
    assert "If-None-Match" not in feed_server.requests[0].headers

    outcome = only(fetch_all(config, store))
    assert (outcome.status, outcome.new, outcome.updated) == ("not_modified", 0, 0)
    second = feed_server.requests[1].headers
    assert second["If-None-Match"] == '"v1"'
    assert second["If-Modified-Since"] == LAST_MODIFIED
    assert len(items(store, url)) == 4
    assert [(r["outcome"], r["http_status"]) for r in fetch_log(store, url)] == [
        ("ok", 200),
        ("not_modified", 304),
    ]
    feed = feed_row(store, url)
    assert (feed["status"], feed["etag"], feed["error_count"]) == ("ok", '"v1"', 0)


def test_304s_are_recorded_in_batches_and_none_is_lost(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path, monkeypatch
) -> None:
    """304s change only fetch times, so the poller records them several per transaction:
    here 2 per batch, 5 feeds (two full batches during the run, the rest at its end)."""
    monkeypatch.setattr("aggregator.service.poll.NOT_MODIFIED_BATCH", 2)
    urls = []
    for n in range(5):
        feed_server.serve_file(f"/f{n}", data_dir / "rss20.xml", etag=f'"v{n}"')
        urls.append(feed_server.url(f"/f{n}"))
    config = make_config(tmp_path, urls)
    fetch_all(config, store)
    report = fetch_all(config, store)
    assert [o.status for o in report.outcomes] == ["not_modified"] * 5
    for url in urls:
        assert [r["outcome"] for r in fetch_log(store, url)] == ["ok", "not_modified"]
        feed = feed_row(store, url)
        assert feed["last_http_status"] == 304  # was 200
        assert 3600 * (1 - JITTER) - 10 < seconds_until(feed["next_fetch_at"]) <= 3600
    # feeds fetched together drift apart (up to 3 minutes of a 1h interval)
    assert len({feed_row(store, url)["next_fetch_at"] for url in urls}) > 1


def test_304s_of_a_cancelled_poll_are_still_recorded(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    """Daemon shutdown cancels a poll: the 304s already answered (buffered for a batch
    write) are written anyway, while one slow feed is still in flight."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from aggregator.ingest.fetch import Fetcher, make_client
    from aggregator.service.poll import Poller

    urls = []
    for n in range(6):
        feed_server.serve_file(f"/f{n}", data_dir / "rss20.xml", etag=f'"v{n}"')
        urls.append(feed_server.url(f"/f{n}"))
    config = make_config(tmp_path, urls, timeout="20s")
    fetch_all(config, store)  # stores the validators: the next poll gets 304s
    feed_server.serve_file("/f5", data_dir / "rss20.xml", etag='"v5"', delay=5.0)
    writer = ThreadPoolExecutor(1)
    done: list[FeedOutcome] = []

    async def poll_then_cancel() -> None:
        async with make_client(config.settings) as client:
            poller = Poller(config, store, Fetcher(client, config.settings), writer=writer)
            task = asyncio.ensure_future(poller.poll(store.feeds(active_only=True), done.append))
            while len(done) < 5:
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(poll_then_cancel())
    writer.shutdown(wait=True)
    assert [o.status for o in done] == ["not_modified"] * 5
    for url in urls[:5]:
        assert [r["outcome"] for r in fetch_log(store, url)] == ["ok", "not_modified"]
    assert [r["outcome"] for r in fetch_log(store, urls[5])] == ["ok"]  # cut off in flight


def test_feeds_in_flight_are_bounded(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path, monkeypatch
) -> None:
    """Back-pressure: no more than 2 x concurrency feeds are between fetch and write at
    once, so a cold poll of thousands of feeds does not hold every body in memory."""
    from aggregator.service.poll import Poller

    active, peak = 0, 0
    original = Poller.poll_feed

    async def counting(self, feed):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        try:
            return await original(self, feed)
        finally:
            active -= 1

    monkeypatch.setattr(Poller, "poll_feed", counting)
    urls = []
    for n in range(8):
        feed_server.serve_file(f"/f{n}", data_dir / "rss20.xml")
        urls.append(feed_server.url(f"/f{n}"))
    report = fetch_all(make_config(tmp_path, urls, concurrency=1), store)
    assert len(report.outcomes) == 8 and all(o.error is None for o in report.outcomes)
    assert peak == 2  # 2 x concurrency 1, though 8 feeds were due


def test_last_modified_alone_is_sent_back(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/rss", data_dir / "rss20.xml", last_modified=LAST_MODIFIED)
    url = feed_server.url("/rss")
    config = make_config(tmp_path, [url])
    fetch_all(config, store)
    assert only(fetch_all(config, store)).status == "not_modified"
    assert feed_server.requests[1].headers["If-Modified-Since"] == LAST_MODIFIED
    assert "If-None-Match" not in feed_server.requests[1].headers


# ---------------------------------------------------------------- server says wait / gone / error


def http_date(seconds_from_now: int) -> str:
    return email.utils.format_datetime(
        datetime.now(UTC) + timedelta(seconds=seconds_from_now), usegmt=True
    )


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, "120"), (503, "300"), (503, "http-date")],
)
def test_retry_after(
    tmp_path: Path, store: Store, feed_server: FeedServer, status: int, retry_after: str
) -> None:
    wait = 600 if retry_after == "http-date" else int(retry_after)
    header = http_date(600) if retry_after == "http-date" else retry_after
    feed_server.set("/busy", Route(status=status, body=b"busy", headers={"Retry-After": header}))
    url = feed_server.url("/busy")
    outcome = fetch_one(tmp_path, store, url)
    assert outcome.status == "retry_later"
    assert f"HTTP {status}" in outcome.error
    feed = feed_row(store, url)
    assert feed["last_http_status"] == status
    assert feed["error_count"] == 1
    assert f"HTTP {status}" in feed["last_error"]
    # the server's wait, not the 1h interval
    assert seconds_until(feed["next_fetch_at"]) == pytest.approx(wait, abs=5)
    assert fetch_log(store, url)[0]["outcome"] == "retry_later"


def test_410_marks_the_feed_dead(tmp_path: Path, store: Store, feed_server: FeedServer) -> None:
    feed_server.set("/gone", Route(status=410, body=b"gone"))
    url = feed_server.url("/gone")
    outcome = fetch_one(tmp_path, store, url)
    assert outcome.status == "gone"
    feed = feed_row(store, url)
    assert feed["status"] == "dead"
    assert "410 Gone" in feed["last_error"] and "feeds.yaml" in feed["last_error"]
    assert fetch_log(store, url)[0]["outcome"] == "gone"


@pytest.mark.parametrize(("status", "hint"), [(404, "not at this URL"), (500, "server failed")])
def test_errors_back_off_exponentially(
    tmp_path: Path, store: Store, feed_server: FeedServer, status: int, hint: str
) -> None:
    feed_server.set("/bad", Route(status=status, body=b"oops"))
    url = feed_server.url("/bad")
    config = make_config(tmp_path, [url], interval="10m")
    waits = []
    for attempt in (1, 2, 3):
        outcome = only(fetch_all(config, store))
        assert outcome.status == "error"
        feed = feed_row(store, url)
        assert feed["status"] == "error"
        assert feed["error_count"] == attempt
        assert feed["last_error"].startswith(f"HTTP {status}") and hint in feed["last_error"]
        waits.append(seconds_until(feed["next_fetch_at"]))
    assert waits == pytest.approx([600, 1200, 2400], abs=5)
    assert [r["outcome"] for r in fetch_log(store, url)] == ["error"] * 3
    assert items(store, url) == []


def test_success_after_errors_resets_error_count(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.set("/flaky", Route(status=500, body=b"oops"))
    url = feed_server.url("/flaky")
    config = make_config(tmp_path, [url])
    fetch_all(config, store)
    assert feed_row(store, url)["error_count"] == 1
    feed_server.serve_file("/flaky", data_dir / "atom10.xml")
    assert only(fetch_all(config, store)).status == "new"
    feed = feed_row(store, url)
    assert (feed["status"], feed["error_count"], feed["last_error"]) == ("ok", 0, None)


def test_validators_survive_a_network_error(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    # BUG (aggregator/ingest/fetch.py Fetcher._error, used by poll._store_failure): a network error
    # (timeout, refused connection) builds a FetchResult without etag/last_modified, and
    # _store_failure writes `etag=fetch.etag`, so the stored validators are wiped: the next
    # fetch after any hiccup is an unconditional GET of the whole feed.
    feed_server.serve_file("/rss", data_dir / "rss20.xml", etag='"v1"', last_modified=LAST_MODIFIED)
    url = feed_server.url("/rss")
    config = make_config(tmp_path, [url], timeout="1s")
    assert only(fetch_all(config, store)).status == "new"
    feed_server.serve_file("/rss", data_dir / "rss20.xml", etag='"v1"', last_modified=LAST_MODIFIED,
                           delay=2.0)  # fmt: skip
    assert only(fetch_all(config, store)).status == "error"
    feed_server.serve_file("/rss", data_dir / "rss20.xml", etag='"v1"', last_modified=LAST_MODIFIED)
    outcome = only(fetch_all(config, store))
    assert feed_server.requests[-1].headers.get("If-None-Match") == '"v1"'
    assert outcome.status == "not_modified"


# ---------------------------------------------------------------- redirects, timeouts, limits


def test_permanent_redirect_is_followed_and_recorded(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.set("/old", Route(status=301, redirect_to="/new"))
    feed_server.serve_file("/new", data_dir / "atom10.xml")
    url = feed_server.url("/old")
    outcome = fetch_one(tmp_path, store, url)
    assert (outcome.status, outcome.new) == ("new", 3)
    assert outcome.moved_to == feed_server.url("/new")
    feed = feed_row(store, url)  # the feed keeps its configured URL; the move is reported
    assert feed["moved_to"] == feed_server.url("/new")
    assert len(items(store, url)) == 3


def test_temporary_redirect_is_not_a_move(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.set("/old", Route(status=302, redirect_to="/new"))
    feed_server.serve_file("/new", data_dir / "atom10.xml")
    url = feed_server.url("/old")
    outcome = fetch_one(tmp_path, store, url)
    assert (outcome.status, outcome.moved_to) == ("new", None)
    assert feed_row(store, url)["moved_to"] is None


def test_redirect_loop(tmp_path: Path, store: Store, feed_server: FeedServer) -> None:
    feed_server.set("/a", Route(status=302, redirect_to="/b"))
    feed_server.set("/b", Route(status=302, redirect_to="/a"))
    url = feed_server.url("/a")
    outcome = fetch_one(tmp_path, store, url, max_redirects=3)
    assert outcome.status == "error"
    assert "more than 3 redirects" in outcome.error
    assert "redirect" in feed_row(store, url)["last_error"]
    assert feed_server.hits("/a") + feed_server.hits("/b") == 4  # first request + 3 hops


def test_timeout(tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path) -> None:
    feed_server.serve_file("/slow", data_dir / "rss20.xml", delay=3.0)
    url = feed_server.url("/slow")
    outcome = fetch_one(tmp_path, store, url, timeout="1s")
    assert outcome.status == "error"
    assert outcome.elapsed < 2.5
    error = feed_row(store, url)["last_error"]
    assert "settings.timeout" in error or "timed out" in error, error
    assert items(store, url) == []


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip-bomb"])
def test_body_over_max_bytes(
    tmp_path: Path, store: Store, feed_server: FeedServer, compressed: bool
) -> None:
    big = b"<rss version='2.0'><channel>" + b" " * 5000 + b"</channel></rss>"
    feed_server.set(
        "/big", Route(body=big, gzip=compressed, headers={"Content-Type": "application/xml"})
    )
    url = feed_server.url("/big")
    outcome = fetch_one(tmp_path, store, url, max_bytes="1KB")
    assert outcome.status == "error"
    assert "max_bytes" in outcome.error and "1,000 bytes" in outcome.error
    assert "max_bytes" in feed_row(store, url)["last_error"]


def test_gzip_body_is_ingested(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/gz", data_dir / "rss10.rdf", gzip=True)
    url = feed_server.url("/gz")
    outcome = fetch_one(tmp_path, store, url)
    assert (outcome.status, outcome.new) == ("new", 3)
    assert feed_server.requests[0].headers.get("Accept-Encoding", "").find("gzip") >= 0
    assert items(store, url)[1]["title"] == "Bees use the sun & landmarks together, study shows"


def test_connection_refused(tmp_path: Path, store: Store) -> None:
    with FeedServer() as srv:
        url = srv.url("/feed")  # a port nobody listens on once the server stops
    outcome = fetch_one(tmp_path, store, url)
    assert outcome.status == "error"
    assert "cannot connect" in outcome.error


# ---------------------------------------------------------------- documents


def test_wrong_declared_encoding_gives_correct_text(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/food", data_dir / "wrong_encoding.xml")
    url = feed_server.url("/food")
    outcome = fetch_one(tmp_path, store, url)
    assert (outcome.status, outcome.new) == ("new", 3)
    rows = items(store, url)
    assert rows[0]["title"] == "New caf\u00e9 opens in the old bakery"
    assert (
        "\u201ca neighbourhood caf\u00e9, nothing fancy\u201d \u2013 and espresso costs \u20ac1.80."
        in rows[0]["text"]
    )
    assert feed_row(store, url)["title"] == "Le Petit Caf\u00e9 \u2013 Example Food News"


def test_html_page_is_an_error(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/home", data_dir / "not_a_feed.html")
    url = feed_server.url("/home")
    outcome = fetch_one(tmp_path, store, url)
    assert outcome.status == "error"
    feed = feed_row(store, url)
    assert (feed["status"], feed["error_count"], feed["last_http_status"]) == ("error", 1, 200)
    assert "HTML page" in feed["last_error"]
    assert items(store, url) == []


def test_empty_body_is_an_error(tmp_path: Path, store: Store, feed_server: FeedServer) -> None:
    feed_server.set("/empty", Route(body=b"", headers={"Content-Type": "application/rss+xml"}))
    url = feed_server.url("/empty")
    outcome = fetch_one(tmp_path, store, url)
    assert outcome.status == "error"
    assert "empty" in outcome.error


def test_broken_feed_is_ingested_with_a_warning(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/broken", data_dir / "broken.xml")
    url = feed_server.url("/broken")
    outcome = fetch_one(tmp_path, store, url)
    assert outcome.status == "new" and outcome.new >= 2
    assert outcome.warning and "malformed" in outcome.warning
    feed = feed_row(store, url)
    assert feed["status"] == "ok"
    assert "malformed" in feed["warning"]


def test_entries_without_ids_are_not_duplicated(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    body = (data_dir / "no_guid.xml").read_bytes()
    feed_server.set(
        "/parish", Route(body=body, etag='"v1"', headers={"Content-Type": "application/rss+xml"})
    )
    url = feed_server.url("/parish")
    config = make_config(tmp_path, [url])
    assert (only(fetch_all(config, store)).new) == 4
    rows = items(store, url)
    assert len(rows) == 4
    undated = next(r for r in rows if r["url"] == "https://parish.example.org/news/spring-fete")
    # no date: the time it was first seen (fetch time and write time may straddle a second)
    gap = from_iso(undated["first_seen_at"]) - from_iso(undated["published_at"])
    assert timedelta(0) <= gap <= timedelta(seconds=2)
    assert next(r for r in rows if r["url"] is None)["key"].startswith("hash:")

    assert only(fetch_all(config, store)).status == "not_modified"
    # the server's ETag changes (a rebuilt page, same entries): the body is parsed again
    feed_server.set(
        "/parish", Route(body=body, etag='"v2"', headers={"Content-Type": "application/rss+xml"})
    )
    outcome = only(fetch_all(config, store))
    assert (outcome.status, outcome.new, outcome.updated, outcome.unchanged) == (
        "unchanged",
        0,
        0,
        4,
    )
    assert [r["id"] for r in items(store, url)] == [r["id"] for r in rows]
    assert feed_row(store, url)["etag"] == '"v2"'
    assert [r["outcome"] for r in fetch_log(store, url)] == ["ok", "not_modified", "ok"]


def json_feed(text: str) -> bytes:
    return json.dumps({
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Changing",
        "items": [
            {"id": "a", "title": "Stays the same", "content_text": "Nothing new here."},
            {"id": "b", "title": "Developing story", "content_text": text,
             "date_published": "2024-03-12T10:00:00Z"},
        ],
    }).encode()  # fmt: skip


def test_changed_entry_is_updated_in_place(
    tmp_path: Path, store: Store, feed_server: FeedServer
) -> None:
    feed_server.set("/live.json", Route(body=json_feed("Early reports."), etag='"1"'))
    url = feed_server.url("/live.json")
    config = make_config(tmp_path, [url])
    assert only(fetch_all(config, store)).new == 2
    before = {r["key"]: r for r in items(store, url)}

    feed_server.set("/live.json", Route(body=json_feed("Full details now confirmed."), etag='"2"'))
    outcome = only(fetch_all(config, store))
    assert (outcome.status, outcome.new, outcome.updated, outcome.unchanged) == ("updated", 0, 1, 1)
    after = {r["key"]: r for r in items(store, url)}
    assert len(after) == 2
    assert after["b"]["id"] == before["b"]["id"]
    assert after["b"]["text"] == "Full details now confirmed."
    assert after["b"]["content_hash"] != before["b"]["content_hash"]
    assert after["b"]["first_seen_at"] == before["b"]["first_seen_at"]
    assert after["a"] == before["a"]
    assert fetch_log(store, url)[-1]["updated_items"] == 1


def test_removed_feed_becomes_inactive_and_keeps_items(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/one", data_dir / "rss20.xml")
    feed_server.serve_file("/two", data_dir / "atom03.xml")
    one, two = feed_server.url("/one"), feed_server.url("/two")
    fetch_all(make_config(tmp_path, [one, two]), store)
    assert len(items(store, two)) == 3

    report = fetch_all(make_config(tmp_path, [one]), store)
    assert [o.feed.url for o in report.outcomes] == [one]
    assert feed_row(store, two)["active"] == 0
    assert feed_row(store, one)["active"] == 1
    assert len(items(store, two)) == 3
    assert feed_server.hits("/two") == 1  # not fetched again


def test_default_process_pool_and_one_failure_does_not_stop_others(
    tmp_path: Path, store: Store, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/json", data_dir / "jsonfeed11.json")
    feed_server.serve_file("/json10", data_dir / "jsonfeed10.json")
    feed_server.serve_file("/atom", data_dir / "atom03.xml")
    feed_server.set("/missing", Route(status=404, body=b"no"))
    urls = [feed_server.url(p) for p in ("/json", "/json10", "/atom", "/missing")]
    config = make_config(tmp_path, urls, parse_workers=2)
    assert config.settings.parse_workers == 2
    report = fetch_all(config, store)
    by_url = {o.feed.url: o for o in report.outcomes}
    assert [by_url[u].status for u in urls] == ["new", "new", "new", "error"], {
        u: o.error for u, o in by_url.items()
    }
    assert (report.new_items, report.errors) == (9, 1)
    rows = items(store, urls[0])
    assert rows[2]["canonical_url"] == "https://sports.example.com/2024/03/10/tennis-qualifier"
    assert rows[0]["author"] == "Aisha Bello"
    assert feed_row(store, urls[1])["format"] == "json10"
