"""OPML import/export and merging imported feeds into feeds.yaml."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.config import FeedConfig, parse_config
from aggregator.errors import ConfigError
from aggregator.feeds_file import add_feeds as add_feeds_to_config_file
from aggregator.ingest.opml import parse_opml, parse_opml_import, render_opml

NOW = datetime(2024, 11, 4, 9, 30, tzinfo=UTC)


@pytest.fixture
def opml_bytes(data_dir: Path) -> bytes:
    return (data_dir / "subscriptions.opml").read_bytes()


def by_url(feeds: list[FeedConfig]) -> dict[str, FeedConfig]:
    return {feed.url: feed for feed in feeds}


def test_parse_reads_urls_in_every_spelling(opml_bytes: bytes) -> None:
    feeds = parse_opml(opml_bytes, "subscriptions.opml")
    assert [f.url for f in feeds] == [
        "https://loose.example.org/feed.xml",
        "https://news.example.com/world.rss",
        "https://europa.example.eu/rss",  # xmlurl
        "http://notes.example.net/atom.xml",  # XMLURL
        "https://code.example.dev/index.xml",  # url= on a type="rss" outline
    ]  # the type="link" homepage is not a feed


def test_parse_names_decode_entities(opml_bytes: bytes) -> None:
    feeds = by_url(parse_opml(opml_bytes, "subscriptions.opml"))
    assert feeds["https://loose.example.org/feed.xml"].name == "Loose Feed"
    assert feeds["https://news.example.com/world.rss"].name == "World & Politics"
    # title wins over text; the double-escaped &amp;eacute; is decoded too
    assert feeds["https://europa.example.eu/rss"].name == "Café Europa \u2013 Daily"
    assert feeds["http://notes.example.net/atom.xml"].name == "Tom\u2019s Notes"
    assert feeds["https://code.example.dev/index.xml"].name == "<Code> & Coffee"


def test_parse_tags_from_nested_folders_and_category(opml_bytes: bytes) -> None:
    feeds = by_url(parse_opml(opml_bytes, "subscriptions.opml"))
    assert feeds["https://loose.example.org/feed.xml"].tags == ()
    # a nested folder is one tag, its path; so is each slash path of `category`
    assert feeds["https://europa.example.eu/rss"].tags == ("News/Europe", "eu", "politics/policy")
    assert feeds["http://notes.example.net/atom.xml"].tags == ("News",)
    # listed under News and again (upper-case host) under Tech: one feed, both tags
    assert feeds["https://news.example.com/world.rss"].tags == ("News", "Tech")


def test_parse_collects_bad_urls(opml_bytes: bytes) -> None:
    result = parse_opml_import(opml_bytes, "subscriptions.opml")
    assert [(r.url, r.name) for r in result.rejected] == [
        ("gopher://gopher.example.org/feed", "Old Gopher Feed")
    ]
    assert "http://" in result.rejected[0].problem
    assert all(f.url != "gopher://gopher.example.org/feed" for f in result.feeds)


def test_render_then_parse_round_trips(opml_bytes: bytes) -> None:
    feeds = parse_opml(opml_bytes, "subscriptions.opml")
    feeds.append(FeedConfig(url="https://q.example/?a=1&b=2", name='Quotes "and" <tags>'))
    text = render_opml(feeds, title="Mine & yours", now=NOW)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<opml version="2.0">')
    assert "<title>Mine &amp; yours</title>" in text
    assert "<dateCreated>Mon, 04 Nov 2024 09:30:00 GMT</dateCreated>" in text
    assert 'xmlUrl="https://q.example/?a=1&amp;b=2"' in text
    assert parse_opml(text.encode("utf-8"), "export.opml") == feeds
    assert render_opml(feeds, title="Mine & yours", now=NOW) == text


def test_render_lists_a_feed_in_the_folder_of_each_tag() -> None:
    feeds = [
        FeedConfig(url="https://a.example/feed", tags=("tech", "ai")),
        FeedConfig(url="https://b.example/feed", name="B"),
        FeedConfig(url="https://c.example/feed", tags=("tech",)),
    ]
    text = render_opml(feeds, now=NOW)
    assert text.count('<outline text="tech" title="tech">') == 1
    assert text.count('<outline text="ai" title="ai">') == 1
    assert text.count('xmlUrl="https://a.example/feed"') == 2  # as Feedly and Inoreader do
    assert 'category="/tech,/ai"' in text
    assert '<outline type="rss" text="B" title="B" xmlUrl="https://b.example/feed" />' in text


SAMPLE_CONFIG = """\
# Feeds I follow -- keep this comment
settings:
    interval: 30m  # poll every half hour

feeds:
  - https://news.example.com/world.rss
  - url: https://blog.example.org/atom.xml  # a friend
    tags: [friends]
"""


def test_add_feeds_keeps_comments_and_skips_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(SAMPLE_CONFIG, encoding="utf-8")
    new = [
        FeedConfig(url="HTTPS://NEWS.EXAMPLE.COM/world.rss", name="World"),  # duplicate
        FeedConfig(url="https://new.example.net/rss", name="New: one", tags=("a", "b c")),
        FeedConfig(url="https://bare.example.net/rss"),
        FeedConfig(url="https://new.example.net/rss"),  # duplicate within the batch
    ]
    added, skipped = add_feeds_to_config_file(path, new)
    assert added == [new[1], new[2]]
    assert skipped == [new[0], new[3]]

    text = path.read_text(encoding="utf-8")
    assert text.startswith(SAMPLE_CONFIG)  # comments, blank line and 4-space settings kept
    assert "interval: 30m  # poll every half hour" in text
    assert "  - url: https://bare.example.net/rss\n" in text
    config = parse_config(text, path)
    assert config.feeds[2:] == (
        FeedConfig(url="https://new.example.net/rss", name="New: one", tags=("a", "b c")),
        FeedConfig(url="https://bare.example.net/rss"),
    )
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_add_feeds_creates_list_and_file(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    add_feeds_to_config_file(path, [FeedConfig(url="https://a.example/feed")])
    assert path.read_text(encoding="utf-8").startswith("# nothing yet\n")
    assert [f.url for f in parse_config(path.read_text(), path).feeds] == ["https://a.example/feed"]

    fresh = tmp_path / "new.yaml"
    add_feeds_to_config_file(fresh, [FeedConfig(url="https://a.example/feed", tags=("x",))])
    assert parse_config(fresh.read_text(), fresh).feeds[0].tags == ("x",)


def test_add_feeds_restores_file_when_result_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(SAMPLE_CONFIG, encoding="utf-8")
    with pytest.raises(ConfigError, match="feeds.yaml"):
        add_feeds_to_config_file(path, [FeedConfig(url="ftp://files.example/feed")])
    assert path.read_text(encoding="utf-8") == SAMPLE_CONFIG
    assert list(tmp_path.iterdir()) == [path]


def test_add_nothing_new_leaves_file_untouched(tmp_path: Path) -> None:
    path = tmp_path / "feeds.yaml"
    path.write_text(SAMPLE_CONFIG, encoding="utf-8")
    before = path.stat().st_mtime_ns
    added, skipped = add_feeds_to_config_file(
        path, [FeedConfig(url="https://news.example.com/world.rss")]
    )
    assert (added, len(skipped)) == ([], 1)
    assert path.stat().st_mtime_ns == before


@pytest.mark.parametrize(
    "data",
    [
        b"<opml version='2.0'><body><outline xmlUrl='https://a.example/'></body>",
        b"not xml at all",
        b"<rss version='2.0'><channel/></rss>",
        b"<opml version='2.0'><head/></opml>",
    ],
)
def test_invalid_opml_names_the_file(data: bytes) -> None:
    with pytest.raises(
        ConfigError, match=r"^broken\.opml: not a valid OPML file: .*export it again"
    ):
        parse_opml(data, "broken.opml")


@pytest.mark.parametrize(
    "data",
    [
        b'<?xml version="1.0"?>\n<!DOCTYPE opml [<!ENTITY lol "lol">]>\n'
        b'<opml version="2.0"><body><outline text="&lol;" xmlUrl="https://a.example/"/></body></opml>',
        '<!DOCTYPE opml SYSTEM "file:///etc/passwd"><opml version="2.0"><body/></opml>'.encode(
            "utf-16"
        ),
    ],
)
def test_dtd_and_entities_are_refused(data: bytes) -> None:
    with pytest.raises(ConfigError, match=r"evil\.opml: .*DOCTYPE"):
        parse_opml(data, "evil.opml")
