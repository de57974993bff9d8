"""The digest server under attack (issue #12, items 4 and 7): idle and slow connections must
not starve the daemon of threads or descriptors, feed values are capped at normalising, and
the web page is served from a cached render. Each test failed before its fix.

Real servers on 127.0.0.1, real fetches into a real SQLite file, the real daemon as a
subprocess (with a low RLIMIT_NOFILE, so a few hundred connections reach its limits)."""

from __future__ import annotations

from pathlib import Path

from feedserver import FeedServer, Route

from aggregator.app import fetch_all
from aggregator.config import Config, parse_config
from aggregator.normalize import ELLIPSIS, MAX_AUTHOR, MAX_LINK, MAX_TITLE
from aggregator.store import Store

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
