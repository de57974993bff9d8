"""Cases from the outside round of faults and hostile inputs (issue #12) that are fixed so
far; each failed before its fix. Real HTTP server, real fetch, real SQLite, a real daemon."""

from __future__ import annotations

import sqlite3

from feedserver import FeedServer, Route
from test_daemon import Rig, story, wait_for

from aggregator.config import parse_config
from aggregator.service.app import fetch_all
from aggregator.store.database import Store

HIDDEN = "\u2066\u2067\u2068\u2069\ufffe\uffff"  # bidi isolates, noncharacters


def _fetch(tmp_path, server: FeedServer, path: str, body: bytes, ctype: str) -> Store:
    server.set(path, Route(body=body, headers={"Content-Type": ctype}))
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(f"settings:\n  http: 'off'\n  parse_workers: 0\nfeeds:\n  - {server.url(path)}\n")
    store = Store.open(tmp_path / "agg.db")
    report = fetch_all(parse_config(cfg.read_text(), cfg), store)
    assert report.errors == 0, [o.error for o in report.outcomes]
    return store


def test_bidi_isolates_and_noncharacters_do_not_survive(tmp_path, feed_server: FeedServer) -> None:
    title = f"Council {HIDDEN}approves budget"
    body = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T{HIDDEN}</title>'
            f"<item><guid>1</guid><title>{title}</title><description>Text{HIDDEN} here</description></item>"
            "</channel></rss>").encode()  # fmt: skip
    store = _fetch(tmp_path, feed_server, "/bidi.xml", body, "application/rss+xml")
    try:
        stored_title, text = store.conn.execute("SELECT title, text FROM items").fetchone()
        assert stored_title == "Council approves budget" and text == "Text here"
        assert not any(c in stored_title + text for c in HIDDEN)
    finally:
        store.close()


def test_a_json_integer_of_5000_digits_does_not_fail_the_feed(tmp_path, feed_server: FeedServer) -> None:
    doc = ('{"version": "https://jsonfeed.org/version/1.1", "title": "Big", "items": ['
           '{"id": "1", "title": "First", "content_text": "one", "_count": ' + "9" * 5000 + "},"
           '{"id": "2", "title": "Second", "content_text": "two"}]}')  # fmt: skip
    store = _fetch(tmp_path, feed_server, "/big.json", doc.encode(), "application/feed+json")
    try:
        assert [r[0] for r in store.conn.execute("SELECT title FROM items ORDER BY id")] == ["First", "Second"]
    finally:
        store.close()


def test_an_empty_feeds_yaml_is_refused_on_reload(rig: Rig) -> None:
    a = rig.serve("/a.xml", "A", [story("bridge", "a1")])
    b = rig.serve("/b.xml", "B", [story("rail_strike", "b1")])
    rig.write_config([a, b], interval="1s")
    daemon = rig.start_serving()
    wait_for("both feeds fetched", lambda: rig.server.hits("/a.xml") and rig.server.hits("/b.xml"))
    rig.cfg.write_text("", encoding="utf-8")  # an editor that truncated the file
    daemon.wait_log("config reload refused")
    hits = rig.server.hits("/a.xml")
    wait_for("feed a still fetched", lambda: rig.server.hits("/a.xml") > hits)
    conn = sqlite3.connect(f"file:{rig.db}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM feeds WHERE active = 1").fetchone()[0] == 2
    finally:
        conn.close()
    assert "config reloaded: 0 feeds" not in daemon.log
    assert daemon.stop() == 0


def test_utf16_surrogates_keep_the_rest_of_the_feed(tmp_path, feed_server: FeedServer) -> None:
    """A pair written as two character references (Java escapers) and a lone half in XML;
    lone halves in a JSON Feed's title, url, id, text and feed title."""
    rss = (b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
           b"<item><guid>1</guid><title>Smile &#55357;&#56832; now</title><description>x &#xD83D; y</description></item>"
           b"<item><guid>2</guid><title>Second</title><description>two</description></item></channel></rss>")  # fmt: skip
    store = _fetch(tmp_path, feed_server, "/s.xml", rss, "application/rss+xml")
    try:
        rows = store.conn.execute("SELECT title, text FROM items ORDER BY id").fetchall()
        assert rows == [("Smile \U0001f600 now", "x \ufffd y"), ("Second", "two")]
    finally:
        store.close()
    doc = ('{"version": "https://jsonfeed.org/version/1.1", "title": "Feed \\ud83d", "items": ['
           '{"id": "a\\ud83d", "url": "https://e.example/\\ud83d", "title": "Hi \\ud83d\\ude00 \\ude00", "content_text": "t \\ud83d"},'
           '{"id": "b", "title": "Other", "content_text": "fine"}]}')  # fmt: skip
    (tmp_path / "j").mkdir()
    store = _fetch(tmp_path / "j", feed_server, "/s.json", doc.encode(), "application/feed+json")
    try:
        rows = store.conn.execute("SELECT title, text FROM items ORDER BY id").fetchall()
        assert rows == [("Hi \U0001f600 \ufffd", "t \ufffd"), ("Other", "fine")]
    finally:
        store.close()


def test_an_undated_item_keeps_its_first_seen_publish_time_when_it_changes(tmp_path, feed_server: FeedServer) -> None:
    import time

    def rss(text: str) -> bytes:
        return ('<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
                f"<item><guid>u1</guid><title>Undated post</title><description>{text}</description></item>"
                "</channel></rss>").encode()  # fmt: skip

    store = _fetch(tmp_path, feed_server, "/u.xml", rss("first version"), "application/rss+xml")
    try:
        (first,) = store.conn.execute("SELECT published_at FROM items").fetchone()
    finally:
        store.close()
    time.sleep(1.1)  # times are stored to the second
    store = _fetch(tmp_path, feed_server, "/u.xml", rss("second version, edited"), "application/rss+xml")
    try:
        text, published, changed = store.conn.execute("SELECT text, published_at, changed_at FROM items").fetchone()
        assert text == "second version, edited" and changed > first
        assert published == first  # not the time of the fetch that saw the edit
    finally:
        store.close()
