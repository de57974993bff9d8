"""OPML with other readers: exports shaped as Feedly, Inoreader, NetNewsWire and Miniflux
write them (tests/data/opml/) go in through the real `feeds import`, come out through the
real `feeds export`, and a third-party OPML parser (listparser) reads back the same feeds,
folders and titles; nested folders stay nested; after a fetch the export carries what
the database knows (the feed's own title, its site as htmlUrl)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import listparser
import pytest
from feedserver import FeedServer
from test_cli import run, write_config

from aggregator.config import FeedConfig, load_config
from aggregator.ingest.opml import parse_opml, render_opml

OPML_DIR = Path(__file__).parent / "data" / "opml"
READERS = ["feedly", "inoreader", "netnewswire", "miniflux", "nested"]

# What each export holds, as feeds.yaml records: folders are tags, a nested folder is
# its path, a feed in two folders has both, an unnamed feed (NetNewsWire writes text="",
# Miniflux the URL) gets no name so its own title shows.
EXPECTED = {
    "feedly": [
        FeedConfig("https://ars.example.com/feed/", "Ars Technica", ("Tech",)),
        FeedConfig("https://lab.example.net/rss", "Tom&Jerry's Lab", ("Tech",)),  # &amp;amp;
        FeedConfig("https://desk.example.org/world.xml", "World Desk", ("Tech", "News")),
        FeedConfig("http://gazette.example.co.uk/rss.xml", "Harbour Gazette", ("News",)),
    ],
    "inoreader": [
        FeedConfig("https://orbit.example.space/feed.atom", "Orbit Notes", ("Science",)),
        FeedConfig("https://journal.example.edu/rss", "Field Journal", ("Science", "Read later")),
        FeedConfig("https://europa.example.eu/rss?lang=fr&format=full", "Café Europa – Daily"),
    ],
    "netnewswire": [
        FeedConfig("https://notes.example.com/feeds/main", "Daring Notes"),
        FeedConfig("https://untitled.example.org/atom.xml"),
        FeedConfig("https://colours.example.com/feed/", "Six Colours", ("Apple",)),
        FeedConfig("https://pixel.example.net/feed.json", "Pixel & Paper", ("Apple",)),
    ],
    "miniflux": [
        FeedConfig("https://valley.example.com/wire.xml", "Valley Wire", ("All",)),
        FeedConfig("https://code.example.dev/index.xml", "Code & Coffee", ("Dev",)),
        FeedConfig("https://bare.example.io/feed", None, ("Dev",)),  # title was the URL
    ],
    "nested": [
        FeedConfig("https://kernel.example.org/weekly.rss", "Kernel Weekly", ("Tech",)),
        FeedConfig("https://colours.example.com/feed/", "Six Colours", ("Tech/Apple",)),
        FeedConfig("https://orchard.example.net/atom.xml", "Orchard Daily", ("Tech/Apple",)),
        FeedConfig("https://loose.example.org/feed.xml", "Loose Feed"),
    ],
}


def folders(parsed) -> dict[str, set[tuple[str, ...]]]:
    """Per feed URL, the folder paths listparser found it in (its `categories`)."""
    return {f.url: {tuple(c) for c in f.categories} for f in parsed.feeds}


def import_then_export(tmp_path: Path, reader: str) -> tuple[Path, str]:
    cfg = write_config(tmp_path, "feeds:\n")
    imported = run(cfg, None, "feeds", "import", str(OPML_DIR / f"{reader}.opml"))
    assert imported.returncode == 0, imported.stderr
    exported = run(cfg, tmp_path / "agg.db", "feeds", "export")
    assert exported.returncode == 0, exported.stderr
    return cfg, exported.stdout


@pytest.mark.parametrize("reader", READERS)
def test_reader_exports_import_with_their_folders(tmp_path: Path, reader: str) -> None:
    cfg, _ = import_then_export(tmp_path, reader)
    assert list(load_config(cfg).feeds) == EXPECTED[reader]


@pytest.mark.parametrize("reader", READERS)
def test_listparser_reads_our_export_as_it_reads_the_original(tmp_path: Path, reader: str) -> None:
    original = listparser.parse((OPML_DIR / f"{reader}.opml").read_bytes())
    _, text = import_then_export(tmp_path, reader)
    ours = listparser.parse(text.encode("utf-8"))
    assert not ours.bozo, ours.bozo_exception
    assert ours.version == "opml2"
    # the same feeds in the same folders: Tech/Apple as ['Tech', 'Apple'], both folders of
    # a feed listed twice
    assert folders(ours) == folders(original)
    names = {f.url: f.name or f.url for f in EXPECTED[reader]}  # unnamed: labelled by URL
    assert {f.url: f.title for f in ours.feeds} == names


def test_nested_folders_round_trip_as_nested_outlines(tmp_path: Path) -> None:
    cfg, text = import_then_export(tmp_path, "nested")
    root = ET.fromstring(text.encode("utf-8"))
    apple = root.find("body/outline[@text='Tech']/outline[@text='Apple']")
    assert apple is not None, text
    assert [o.get("xmlUrl") for o in apple] == [
        "https://colours.example.com/feed/",
        "https://orchard.example.net/atom.xml",
    ]
    assert [o.get("title") for o in root.findall("body/outline[@text='Tech']/outline")] == [
        "Kernel Weekly",
        "Apple",
    ]
    # and importing our own export gives back exactly what was imported
    again = tmp_path / "again"
    again.mkdir()
    (again / "export.opml").write_text(text, encoding="utf-8")
    cfg2 = write_config(again, "feeds:\n")
    result = run(cfg2, None, "feeds", "import", str(again / "export.opml"))
    assert result.returncode == 0, result.stderr
    assert load_config(cfg2).feeds == load_config(cfg).feeds


def test_feed_in_two_folders_is_listed_in_both(tmp_path: Path) -> None:
    _, text = import_then_export(tmp_path, "feedly")
    root = ET.fromstring(text.encode("utf-8"))
    for folder in ("Tech", "News"):
        urls = [o.get("xmlUrl") for o in root.findall(f"body/outline[@text='{folder}']/outline")]
        assert "https://desk.example.org/world.xml" in urls, (folder, text)


def test_export_after_fetch_has_own_titles_and_site_links(
    tmp_path: Path, feed_server: FeedServer, data_dir: Path
) -> None:
    feed_server.serve_file("/news.xml", data_dir / "rss20.xml")
    feed_server.serve_file("/tech.atom", data_dir / "atom10.xml")
    news, tech = feed_server.url("/news.xml"), feed_server.url("/tech.atom")
    cfg = write_config(
        tmp_path,
        f"feeds:\n  - {news}\n  - url: {tech}\n    name: My Tech\n    tags: [Tech/Reviews]\n",
    )
    db = tmp_path / "agg.db"
    assert run(cfg, db, "fetch").returncode == 0
    exported = run(cfg, db, "feeds", "export")
    assert exported.returncode == 0, exported.stderr

    parsed = listparser.parse(exported.stdout.encode("utf-8"))
    titles = {f.url: f.title for f in parsed.feeds}
    assert titles == {news: "Example News & Views", tech: "My Tech"}  # own title, then name
    assert folders(parsed) == {news: set(), tech: {("Tech", "Reviews")}}
    # listparser does not report htmlUrl of a feed outline: read the attribute itself
    outlines = {o.get("xmlUrl"): o for o in ET.fromstring(exported.stdout).iter("outline")}
    assert outlines[news].get("htmlUrl") == "https://news.example.com/"
    assert outlines[tech].get("htmlUrl") == "https://techreview.example.net/"

    # a reader importing it gets the title as a name; our own import does too
    again = parse_opml(exported.stdout.encode("utf-8"), "export.opml")
    assert [(f.url, f.name) for f in again] == [(news, "Example News & Views"), (tech, "My Tech")]


def test_unnamed_unfetched_feed_is_labelled_by_url_but_not_renamed_by_it() -> None:
    text = render_opml([FeedConfig("https://quiet.example.org/rss", tags=("Later",))])
    outline = ET.fromstring(text).find("body/outline/outline")
    assert outline is not None and outline.get("text") == "https://quiet.example.org/rss"
    assert parse_opml(text.encode("utf-8"), "export.opml") == [
        FeedConfig("https://quiet.example.org/rss", None, ("Later",))
    ]
