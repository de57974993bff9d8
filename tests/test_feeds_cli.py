"""Managing feeds without an editor, through the real CLI against a real HTTP server on
127.0.0.1: `feeds add` checks the feed answers, or finds it from a site's page
(`<link rel="alternate">`), and refuses what is not a feed or is already followed;
`feeds remove` by URL, name or the feed's own title; `fetch --feed` fetches one feed.
feeds.yaml keeps every byte outside the entry edited, comments included."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
from feedserver import FeedServer, Route
from test_cli import run

from aggregator.config import FeedConfig, load_config

SAMPLE = """\
# My feeds -- hand-written, keep this header
settings:
    timeout: 5s   # four-space settings, on purpose
    parse_workers: 0

feeds:
  # --- news ---
  - url: {news}   # the local paper
    name: Local Paper
    tags: [news]
  - {tech}       # bare URL

  # --- maybe later ---
  # - url: https://someday.example.org/rss
# trailing comment
"""

HOMEPAGE = b"""<!DOCTYPE html>
<html><head>
  <title>A blog</title>
  <base href="/blog/">
  <link rel="stylesheet" href="style.css">
  <link rel="alternate" type="application/rss+xml" title="A blog &raquo; Comments Feed" href="comments/feed/">
  <link rel="alternate" type="application/rss+xml" title="A blog &raquo; Feed" href="feed/">
  <link rel="alternate" type="application/atom+xml" title="A blog (Atom)" href="/blog/atom.xml">
  <link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/2">
  <link rel="alternate" hreflang="fr" href="/fr/">
</head><body><h1>A blog</h1></body></html>
"""


@pytest.fixture
def site(tmp_path: Path, feed_server: FeedServer, data_dir: Path):
    """feeds.yaml (SAMPLE) following two served feeds, and a blog with a homepage."""
    feed_server.serve_file("/news.xml", data_dir / "rss20.xml")
    feed_server.serve_file("/tech.atom", data_dir / "atom10.xml")
    feed_server.set("/blog/", Route(body=HOMEPAGE, headers={"Content-Type": "text/html"}))
    feed_server.serve_file("/blog/feed/", data_dir / "rss20.xml")
    feed_server.serve_file("/blog/comments/feed/", data_dir / "no_guid.xml")
    feed_server.serve_file("/blog/atom.xml", data_dir / "atom10.xml")
    cfg = tmp_path / "feeds.yaml"
    original = SAMPLE.format(news=feed_server.url("/news.xml"), tech=feed_server.url("/tech.atom"))
    cfg.write_text(original, encoding="utf-8")
    return cfg, original, feed_server


def inserted_after_last_entry(original: str, entry: str) -> str:
    """`original` with `entry` where `feeds add` puts it: after the last entry's line."""
    marker = "       # bare URL\n"
    return original.replace(marker, marker + entry, 1)


def test_add_finds_the_feed_a_homepage_links_and_keeps_every_other_byte(site) -> None:
    cfg, original, server = site
    result = run(cfg, None, "feeds", "add", server.url("/blog/"), "--tags", "Tech/Apple,news")
    assert result.returncode == 0, result.stderr
    feed = server.url("/blog/feed/")  # `feed/` against <base href="/blog/">
    assert result.stdout == f"added\t{feed}\tExample News & Views\n"
    # the posts feed, not the comments feed listed before it; the others are offered
    assert f"found through the page {server.url('/blog/')}" in result.stderr
    assert f"the page also offers\t{server.url('/blog/comments/feed/')}" in result.stderr
    assert f"the page also offers\t{server.url('/blog/atom.xml')}" in result.stderr
    assert "wp-json" not in result.stderr  # an application/json alternate is not a feed
    assert server.hits("/blog/comments/feed/") == 0

    entry = f"  - url: {feed}\n    tags: [Tech/Apple, news]\n"
    assert cfg.read_text(encoding="utf-8") == inserted_after_last_entry(original, entry)
    assert load_config(cfg).feeds[-1] == FeedConfig(feed, None, ("Tech/Apple", "news"))

    # and removing it gives back the file exactly as it was
    removed = run(cfg, None, "feeds", "remove", feed)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout == f"removed\t{feed}\t\n"
    assert cfg.read_text(encoding="utf-8") == original


def test_add_a_feed_url_with_name_and_interval(site) -> None:
    cfg, original, server = site
    url = server.url("/blog/atom.xml")
    result = run(cfg, None, "feeds", "add", url, "--name", "Review: yes", "--interval", "90m")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"added\t{url}\tReview: yes\n"
    assert "Example Tech Review (atom10, 3 entries now)" in result.stderr
    entry = f"  - url: {url}\n    name: 'Review: yes'\n    interval: 90m\n"
    assert cfg.read_text(encoding="utf-8") == inserted_after_last_entry(original, entry)
    assert load_config(cfg).feeds[-1] == FeedConfig(url, "Review: yes", (), 5400)
    assert server.hits("/blog/") == 0


def test_add_tries_the_next_link_when_the_first_is_broken(
    tmp_path: Path, feed_server: FeedServer, data_dir: Path
) -> None:
    page = (b'<html><head><link rel="alternate" type="application/atom+xml" href="gone.xml">'
            b'<link rel="alternate" type="application/rss+xml" href="../rss.xml"></head></html>')  # fmt: skip
    feed_server.set(
        "/site/index.html", Route(body=page, headers={"Content-Type": "text/html; charset=utf-8"})
    )
    feed_server.serve_file("/rss.xml", data_dir / "rss20.xml")
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("feeds: []  # none yet\n", encoding="utf-8")
    result = run(cfg, None, "feeds", "add", feed_server.url("/site/index.html"))
    assert result.returncode == 0, result.stderr
    assert feed_server.hits("/site/gone.xml") == 1  # tried first, answered 404
    assert (
        cfg.read_text(encoding="utf-8")
        == f"feeds:  # none yet\n  - url: {feed_server.url('/rss.xml')}\n"
    )


def closed_port_url() -> tuple[socket.socket, str]:
    """A URL on 127.0.0.1 where nothing listens (the socket holds the port, unlistened)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}/feed.xml"


@pytest.mark.parametrize(
    ("path", "route", "why"),
    [
        ("/missing.xml", None, "HTTP 404"),
        ("/page.html", Route(body=b"<!doctype html><html><head><title>x</title></head></html>",
                             headers={"Content-Type": "text/html"}), "links no feed"),
        ("/notes.txt", Route(body=b"just some text\n", headers={"Content-Type": "text/plain"}),
         "not a feed"),
        ("/closed", None, "cannot connect"),
    ],
    ids=["404", "page-without-feed-links", "not-a-feed", "nothing-listening"],
)  # fmt: skip
def test_add_refuses_what_is_not_a_working_feed(
    site, path: str, route: Route | None, why: str
) -> None:
    cfg, original, server = site
    holder = None
    if path == "/closed":
        holder, url = closed_port_url()
    else:
        url = server.url(path)
        if route is not None:
            server.set(path, route)
    try:
        result = run(cfg, None, "feeds", "add", url)
    finally:
        if holder is not None:
            holder.close()
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"aggregator: {url}: "), result.stderr
    assert why in lines[0]
    assert cfg.read_text(encoding="utf-8") == original


def test_add_refuses_a_feed_already_followed(site) -> None:
    cfg, original, server = site
    shouting = server.url("/news.xml").replace("http://", "HTTP://")  # same feed
    result = run(cfg, None, "feeds", "add", shouting)
    assert result.returncode == 2
    assert "is already followed as 'Local Paper'; nothing changed" in result.stderr
    assert server.hits("/news.xml") == 0  # refused before any request
    # found through a page: the page's feed is already followed
    server.set("/paper/", Route(body=b'<html><head><link rel="alternate" type="application/rss+xml" '
                                     b'href="/news.xml"></head></html>', headers={"Content-Type": "text/html"}))  # fmt: skip
    result = run(cfg, None, "feeds", "add", server.url("/paper/"))
    assert result.returncode == 2
    assert f"{server.url('/news.xml')} is already followed" in result.stderr
    assert cfg.read_text(encoding="utf-8") == original


def test_remove_by_name_any_case_keeps_the_comments_around_it(site) -> None:
    cfg, original, server = site
    result = run(cfg, None, "feeds", "remove", "local PAPER")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed\t{server.url('/news.xml')}\tLocal Paper\n"
    assert "its stored items stay in the database" in result.stderr
    entry = f"  - url: {server.url('/news.xml')}   # the local paper\n    name: Local Paper\n    tags: [news]\n"
    assert entry in original
    assert cfg.read_text(encoding="utf-8") == original.replace(entry, "")


def test_remove_by_the_feeds_own_title_once_fetched(site, tmp_path: Path) -> None:
    cfg, original, server = site
    db = tmp_path / "agg.db"
    assert run(cfg, db, "fetch").returncode == 0
    result = run(cfg, db, "feeds", "remove", "example tech review")  # the Atom feed's <title>
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed\t{server.url('/tech.atom')}\tExample Tech Review\n"
    assert [f.url for f in load_config(cfg).feeds] == [server.url("/news.xml")]


def test_remove_refuses_unknown_and_ambiguous_names(site, tmp_path: Path) -> None:
    cfg, original, _ = site
    unknown = run(cfg, None, "feeds", "remove", "Nobody's Feed")
    assert unknown.returncode == 1
    assert 'no feed named or at "Nobody\'s Feed"' in unknown.stderr
    twins = tmp_path / "twins.yaml"
    twins.write_text("feeds:\n  - url: https://a.example/rss\n    name: Twin\n"
                     "  - url: https://b.example/rss\n    name: twin\n", encoding="utf-8")  # fmt: skip
    before = twins.read_text(encoding="utf-8")
    ambiguous = run(twins, None, "feeds", "remove", "Twin")
    assert ambiguous.returncode == 2
    assert (
        "'Twin' names 2 feeds (https://a.example/rss, https://b.example/rss); remove one by its URL"
        in ambiguous.stderr
    )
    assert twins.read_text(encoding="utf-8") == before
    assert cfg.read_text(encoding="utf-8") == original


def test_fetch_one_feed_by_name(site, tmp_path: Path) -> None:
    cfg, _, server = site
    db = tmp_path / "agg.db"
    result = run(cfg, db, "fetch", "--feed", "local paper")
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()[1:]]
    assert [r[4] for r in rows] == ["Local Paper"]
    assert (server.hits("/news.xml"), server.hits("/tech.atom")) == (1, 0)
    with sqlite3.connect(db) as conn:
        fetched = conn.execute(
            "SELECT DISTINCT f.url FROM items i JOIN feeds f ON f.id = i.feed_id"
        ).fetchall()
    conn.close()
    assert fetched == [(server.url("/news.xml"),)]

    by_url = run(cfg, db, "fetch", "--feed", server.url("/tech.atom"))
    assert by_url.returncode == 0, by_url.stderr
    assert (server.hits("/news.xml"), server.hits("/tech.atom")) == (1, 1)

    unknown = run(cfg, db, "fetch", "--feed", "nope")
    assert unknown.returncode == 2
    assert "no feed named or at 'nope'" in unknown.stderr
    assert (server.hits("/news.xml"), server.hits("/tech.atom")) == (1, 1)


def test_import_adds_lines_and_changes_no_other_byte(tmp_path: Path) -> None:
    cfg = tmp_path / "feeds.yaml"
    original = (
        "# My feeds\nsettings:\n    timeout: 5s   # four-space settings\n\nfeeds:\n"
        "  - url: https://a.example/rss   # the local paper\n    name:   Local Paper\n"
        "    tags: [ news,  local ]\n  - 'https://loose.example.org/feed.xml'   # quoted\n\n"
        "  # - url: https://someday.example.org/rss\n# trailing comment\n"
    )
    cfg.write_text(original, encoding="utf-8")
    opml = tmp_path / "subscriptions.opml"
    opml.write_text(
        '<?xml version="1.0"?><opml version="1.0"><body><outline text="Tech">'
        '<outline type="rss" text="Kernel Weekly" xmlUrl="https://kernel.example.org/weekly.rss"/>'
        '<outline type="rss" text="Loose" xmlUrl="https://loose.example.org/feed.xml"/>'
        '<outline type="rss" text="yes" xmlUrl="https://yes.example.net/atom.xml"/>'
        "</outline></body></opml>",
        encoding="utf-8",
    )
    result = run(cfg, None, "feeds", "import", str(opml))
    assert result.returncode == 0, result.stderr
    assert "already followed\thttps://loose.example.org/feed.xml" in result.stdout
    added = (
        "  - url: https://kernel.example.org/weekly.rss\n    name: Kernel Weekly\n    tags: [Tech]\n"
        "  - url: https://yes.example.net/atom.xml\n    name: 'yes'\n    tags: [Tech]\n"
    )
    marker = "   # quoted\n"
    assert cfg.read_text(encoding="utf-8") == original.replace(marker, marker + added)
    assert load_config(cfg).feeds[-1].name == "yes"  # quoted: PyYAML would read a bare yes as true


def test_first_add_creates_feeds_yaml(
    tmp_path: Path, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/feed.json", data_dir / "jsonfeed11.json")
    cfg = tmp_path / "feeds.yaml"
    result = run(cfg, None, "feeds", "add", feed_server.url("/feed.json"), "--tags", "later")
    assert result.returncode == 0, result.stderr
    assert (
        cfg.read_text(encoding="utf-8")
        == f"feeds:\n  - url: {feed_server.url('/feed.json')}\n    tags: [later]\n"
    )
