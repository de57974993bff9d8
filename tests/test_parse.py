"""Bytes -> RawFeed for every supported format, using the fixtures in tests/data."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.ingest.parse import looks_like_json_feed, parse_feed

XML = {"content-type": "application/xml"}
JSON = {"content-type": "application/feed+json"}


def parse_file(data_dir: Path, name: str, headers: dict[str, str] | None = None):
    if headers is None:
        headers = JSON if name.endswith(".json") else XML
    return parse_feed((data_dir / name).read_bytes(), headers)


def test_rss20(data_dir: Path) -> None:
    feed = parse_file(data_dir, "rss20.xml")
    assert (feed.format, feed.error, feed.warning) == ("rss20", None, None)
    assert feed.title == "Example News & Views"
    assert feed.link == "https://news.example.com/"
    assert feed.ttl == 3600  # <ttl>60</ttl> minutes
    assert [e.guid for e in feed.entries] == [
        "https://news.example.com/?p=10412",
        "https://news.example.com/?p=10407",
        "https://news.example.com/?p=10399",
        "https://news.example.com/2024/03/10/library-hours/",
    ]
    first = feed.entries[0]
    assert first.title == "City council approves \u201cgreen corridor\u201d plan for riverside"
    assert first.author == "Maria Okafor"
    assert first.published == datetime(2024, 3, 12, 9, 15, tzinfo=UTC)
    assert "<strong>green corridor</strong>" in first.content
    # content:encoded is longer than the description, so it wins
    assert "waited ten years" in feed.entries[2].content
    # +0100 offset converted to UTC
    assert feed.entries[3].published == datetime(2024, 3, 10, 11, 0, tzinfo=UTC)


def test_rss10_rdf(data_dir: Path) -> None:
    feed = parse_file(data_dir, "rss10.rdf", {"content-type": "application/rdf+xml"})
    assert (feed.format, feed.error) == ("rss10", None)
    assert feed.title == "Example Science Daily"
    assert [e.title for e in feed.entries] == [
        "Telescope finds signs of water vapour on nearby exoplanet",
        "Bees use the sun & landmarks together, study shows",
        "New process recovers 95% of lithium from used batteries",
    ]
    bees = feed.entries[1]
    assert bees.link == "https://science.example.org/news/2024/03/11/bee-navigation/"
    assert bees.author == "Samuel Ortiz"
    # feedparser reports dc:date as the updated time; normalize falls back to it
    assert (bees.published or bees.updated) == datetime(2024, 3, 11, 13, 20, tzinfo=UTC)


def test_atom10(data_dir: Path) -> None:
    feed = parse_file(data_dir, "atom10.xml", {"content-type": "application/atom+xml"})
    assert (feed.format, feed.error) == ("atom10", None)
    assert feed.title == "Example Tech Review"
    assert feed.link == "https://techreview.example.net/"
    assert [e.guid for e in feed.entries] == [
        "tag:techreview.example.net,2024:post-2231",
        "tag:techreview.example.net,2024:post-2229",
        "tag:techreview.example.net,2024:post-2224",
    ]
    gpu = feed.entries[1]
    assert gpu.link == "https://techreview.example.net/2024/03/11/gpu-delay"
    assert gpu.published == datetime(2024, 3, 11, 21, 30, tzinfo=UTC)
    assert gpu.updated == datetime(2024, 3, 11, 23, 2, tzinfo=UTC)
    assert "<li>Packaging capacity is the bottleneck</li>" in gpu.content  # CDATA content
    assert "412 contributors" in feed.entries[0].content  # content beats the shorter summary


def test_atom03(data_dir: Path) -> None:
    feed = parse_file(data_dir, "atom03.xml")
    assert (feed.format, feed.error) == ("atom03", None)
    assert feed.title == "Example Gardening Blog"
    assert len(feed.entries) == 3
    tomatoes, waiting, compost = feed.entries
    assert tomatoes.guid == "tag:garden.example.org,2024:entry-88"
    assert tomatoes.published == datetime(2024, 3, 10, 18, 30, tzinfo=UTC)  # <issued>
    assert "Sungold" in tomatoes.content
    assert waiting.author == "Ruth Abernethy"
    assert compost.content == "Two winters of side-by-side testing."  # summary only


def test_jsonfeed11(data_dir: Path) -> None:
    feed = parse_file(data_dir, "jsonfeed11.json")
    assert (feed.format, feed.error) == ("json11", None)
    assert (feed.title, feed.link) == ("Example Sports Wire", "https://sports.example.com/")
    derby, marathon, tennis = feed.entries
    assert derby.guid == "https://sports.example.com/p/5512"
    assert derby.author == "Aisha Bello"
    assert derby.published == datetime(2024, 3, 12, 21, 47, tzinfo=UTC)
    assert derby.updated == datetime(2024, 3, 12, 22, 10, tzinfo=UTC)
    assert "<strong>Lucas Moreau</strong>" in derby.content  # content_html beats summary
    assert marathon.author == "Tom Haddad"
    assert tennis.published == datetime(2024, 3, 10, 14, 30, tzinfo=UTC)
    assert "utm_source=jsonfeed" in tennis.link  # raw link; normalize cleans it


def test_jsonfeed10(data_dir: Path) -> None:
    feed = parse_file(data_dir, "jsonfeed10.json")
    assert (feed.format, feed.error) == ("json10", None)
    assert [e.guid for e in feed.entries] == [
        "2024-03-12-line4",
        "2024-03-11-fares",
        "2024-03-08-app",
    ]
    line4, fares, app = feed.entries
    assert line4.author == "Service Desk"
    assert fares.author is None
    assert app.author == "Digital Team"
    assert fares.content.startswith("Single fares go from $2.75")
    assert line4.published == datetime(2024, 3, 12, 11, 0, tzinfo=UTC)


def test_json_feed_detected_without_content_type(data_dir: Path) -> None:
    body = (data_dir / "jsonfeed11.json").read_bytes()
    assert looks_like_json_feed(body, {})
    assert not looks_like_json_feed((data_dir / "rss20.xml").read_bytes(), XML)
    # a JSON Feed served as application/xml whose "version" comes last (All This's feed)
    late = b'{"title": "t", "items": [' + b'{"id": "1", "content_text": "x"},' * 400 + b'{"id": "2"}], "version": "https://jsonfeed.org/version/1"}'
    assert looks_like_json_feed(late, XML)
    assert len(parse_feed(late, XML).entries) == 401
    assert parse_feed(body, {"Content-Type": "text/plain"}).format == "json11"


def test_html_page_is_an_error_that_says_html(data_dir: Path) -> None:
    feed = parse_file(data_dir, "not_a_feed.html", {"content-type": "text/html; charset=utf-8"})
    assert feed.entries == ()
    assert feed.error and "HTML page" in feed.error
    assert "feed link" in feed.error  # tells the user what to do


def test_broken_feed_keeps_entries_with_a_warning(data_dir: Path) -> None:
    feed = parse_file(data_dir, "broken.xml")
    assert feed.error is None
    assert feed.warning and feed.warning.startswith("malformed feed, entries recovered")
    assert [e.title for e in feed.entries][:2] == [
        "Shares in regional airline jump 12% on merger talk",
        "Central bank holds rates at 4.5%",
    ]
    assert feed.entries[0].guid == "https://business.example.com/2024/03/12/airline-merger"


@pytest.mark.parametrize("body", [b"", b"   \n  "])
def test_empty_body_is_an_error(body: bytes) -> None:
    feed = parse_feed(body, XML)
    assert feed.entries == ()
    assert feed.error and "empty" in feed.error


def test_garbage_and_entryless_documents_are_errors() -> None:
    assert "not a recognisable" in parse_feed(b"hello, world", {}).error
    assert "invalid JSON" in parse_feed(b"{not json", JSON).error
    assert "not a JSON Feed" in parse_feed(b'{"items": []}', JSON).error
    empty_json = b'{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": []}'
    assert "no items" in parse_feed(empty_json, JSON).error


def test_wrong_declared_encoding_is_recovered(data_dir: Path) -> None:
    feed = parse_file(data_dir, "wrong_encoding.xml")
    assert feed.error is None
    assert feed.entries[0].title == "New caf\u00e9 opens in the old bakery"
    assert "\u20ac1.80" in feed.entries[0].content
    assert (
        feed.entries[1].title
        == "Critic\u2019s choice: the best cr\u00e8me br\u00fbl\u00e9e in town"
    )
