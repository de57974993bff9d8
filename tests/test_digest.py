"""The digest feed: one entry per cluster in Atom, RSS and JSON Feed, well-formed and inert
whatever the source feeds contained."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest

from aggregator.errors import ConfigError
from aggregator.files import write_atomically
from aggregator.publish.digest import (
    CONTENT_TYPES,
    FORMATS,
    DigestMeta,
    entry_id,
    render,
    render_atom,
    render_json,
    render_rss,
)
from aggregator.store.queries import ClusterView, MemberView

A = "{http://www.w3.org/2005/Atom}"
NOW = datetime(2026, 11, 25, 13, 0, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 25, 8, 0, 0, tzinfo=UTC)
META = DigestMeta(self_url="http://127.0.0.1:8080/digest.atom", site_url="http://127.0.0.1:8080/")
OUTLETS = ("BBC", "Guardian", "Reuters", "AP", "Al Jazeera", "NPR", "DW")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<div style="width: expression(alert(1))">css</div>',
    "<b><i>unbalanced",
    "bell\x00\x07\x1b[31m red",
]


def member(i: int, feed: str, title: str = "", url: str | None = None) -> MemberView:
    return MemberView(
        id=i,
        feed=feed,
        title=title or f"{feed} headline {i}",
        url=url if url is not None else f"https://{i}.example.com/story?a=1&b=2",
        published=T0 + timedelta(minutes=i),
        similarity=None,
    )


def cluster(cid: int, members: list[MemberView], title: str = "Big story") -> ClusterView:
    return ClusterView(
        id=cid,
        size=len(members),
        feeds=len({m.feed for m in members}),
        title=title,
        url=members[0].url,
        first_seen=members[0].published,
        last_seen=members[-1].published,
        items=tuple(members),
        updated=members[-1].published + timedelta(minutes=1),
    )


@pytest.fixture
def clusters() -> list[ClusterView]:
    big = cluster(7, [member(i, name) for i, name in enumerate(OUTLETS, start=1)])
    # two items from one outlet: one source, not two
    solo = cluster(8, [member(20, "Local Paper"), member(21, "Local Paper")], title="Council meets")
    return [big, solo]


# ---------------------------------------------------------------- helpers


def atom_root(data: bytes) -> ET.Element:
    return ET.fromstring(data)  # strict: raises on anything not well-formed


def one(parent: ET.Element, tag: str) -> ET.Element:
    found = parent.findall(A + tag)
    assert len(found) == 1, f"{parent.tag} has {len(found)} <{tag}>"
    return found[0]


def is_absolute_iri(value: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$", value))


def check_rfc4287(root: ET.Element) -> None:
    """The RFC 4287 rules a digest can break."""
    assert root.tag == A + "feed"
    assert is_absolute_iri(one(root, "id").text)
    one(root, "title")
    assert RFC3339.match(one(root, "updated").text)
    assert one(one(root, "author"), "name").text
    for link in root.findall(A + "link"):
        assert link.get("href")
    for entry in root.findall(A + "entry"):
        assert is_absolute_iri(one(entry, "id").text)
        one(entry, "title")
        assert RFC3339.match(one(entry, "updated").text)
        for published in entry.findall(A + "published"):
            assert RFC3339.match(published.text)
        content = entry.findall(A + "content")
        assert len(content) <= 1
        alternates = [
            ln for ln in entry.findall(A + "link") if ln.get("rel", "alternate") == "alternate"
        ]
        assert content or alternates
        assert len(entry.findall(A + "summary")) <= 1


class MarkupAudit(HTMLParser):
    """Every element and attribute in an HTML fragment, and whether tags balance."""

    VOID = {"br", "hr", "img", "input", "meta", "link"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.open: list[str] = []
        self.balanced = True
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend(attrs)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open.pop() != tag:
            self.balanced = False

    def handle_data(self, data):
        self.text.append(data)


def audit(fragment: str) -> MarkupAudit:
    parser = MarkupAudit()
    parser.feed(fragment)
    parser.close()
    return parser


def assert_inert(fragment: str) -> None:
    found = audit(fragment)
    assert set(found.tags) <= {"p", "ul", "li", "a"}, found.tags
    assert {name for name, _ in found.attrs} <= {"href"}, found.attrs
    for _, value in found.attrs:
        assert urlsplit(value).scheme in ("http", "https"), value
    assert found.balanced and not found.open


def parse_all(clusters: list[ClusterView]) -> dict[str, bytes]:
    return {fmt: render(clusters, fmt, META, NOW) for fmt in FORMATS}


# ---------------------------------------------------------------- structure


def test_atom_is_well_formed_rfc4287(clusters):
    data = render_atom(clusters, META, NOW)
    root = atom_root(data)
    check_rfc4287(root)
    assert one(root, "id").text == "urn:aggregator:digest"
    assert one(one(root, "author"), "name").text == "aggregator"
    assert one(root, "generator").text == "aggregator"
    links = {ln.get("rel"): ln.get("href") for ln in root.findall(A + "link")}
    assert links == {"self": META.self_url, "alternate": META.site_url}
    # feed updated is the newest entry, not the clock
    assert one(root, "updated").text == "2026-11-25T08:22:00Z"
    parsed = feedparser.parse(data)
    assert parsed.bozo == 0 and parsed.version == "atom10"


def test_rss_is_well_formed(clusters):
    data = render_rss(clusters, replace(META, self_url="http://127.0.0.1:8080/digest.rss"), NOW)
    root = ET.fromstring(data)
    channel = root.find("channel")
    assert root.get("version") == "2.0"
    for tag in ("title", "link", "description", "lastBuildDate"):
        assert channel.find(tag) is not None, tag
    assert channel.find("lastBuildDate").text == "Wed, 25 Nov 2026 08:22:00 GMT"
    self_link = channel.find(A + "link")
    assert self_link.get("rel") == "self" and self_link.get("href").endswith("digest.rss")
    guids = [item.find("guid") for item in channel.findall("item")]
    assert [g.get("isPermaLink") for g in guids] == ["false", "false"]
    assert b"CDATA" not in data
    parsed = feedparser.parse(data)
    assert parsed.bozo == 0 and parsed.version == "rss20"
    assert parsed.entries[0].published_parsed[:6] == (2026, 11, 25, 8, 1, 0)


def test_json_feed_shape(clusters):
    feed = json.loads(render_json(clusters, META, NOW))
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert feed["feed_url"] == META.self_url and feed["home_page_url"] == META.site_url
    first = feed["items"][0]
    assert set(first) == {
        "id", "url", "title", "content_html", "content_text",
        "date_published", "date_modified", "_aggregator",
    }  # fmt: skip
    assert first["date_published"] == "2026-11-25T08:01:00Z"
    assert first["date_modified"] == "2026-11-25T08:08:00Z"
    ext = first["_aggregator"]
    assert ext["sources"] == 7
    assert [m["feed"] for m in ext["members"]] == list(OUTLETS)
    assert set(ext["members"][0]) == {"feed", "title", "url", "published"}
    assert ext["members"][0]["published"] == "2026-11-25T08:01:00Z"


def test_same_entries_in_every_format(clusters):
    docs = parse_all(clusters)
    atom = feedparser.parse(docs["atom"])
    rss = feedparser.parse(docs["rss"])
    items = json.loads(docs["json"])["items"]
    expected = [
        (entry_id(META, 7), "Big story", "https://1.example.com/story?a=1&b=2"),
        (entry_id(META, 8), "Council meets", "https://20.example.com/story?a=1&b=2"),
    ]
    assert [(e.id, e.title, e.link) for e in atom.entries] == expected
    assert [(e.id, e.title, e.link) for e in rss.entries] == expected
    assert [(i["id"], i["title"], i["url"]) for i in items] == expected
    # the body is the same HTML everywhere
    atom_html = [c.text for c in atom_root(docs["atom"]).iter(A + "content")]
    rss_html = [d.text for d in ET.fromstring(docs["rss"]).iter("description")][1:]
    assert atom_html == rss_html == [i["content_html"] for i in items]


def test_body_lists_every_member(clusters):
    items = json.loads(render_json(clusters, META, NOW))["items"]
    big, solo = items
    assert big["content_text"] == (
        "Reported by 7 sources: BBC, Guardian, Reuters, AP, Al Jazeera, NPR, DW"
    )
    body = audit(big["content_html"])
    text = "".join(body.text)
    assert "Reported by 7 sources" in text
    for i, name in enumerate(OUTLETS, start=1):
        assert f"{name}: {name} headline {i} (2026-11-25T08:0{i}:00Z)" in text
    assert [v for _, v in body.attrs] == [
        f"https://{i}.example.com/story?a=1&b=2" for i in range(1, 8)
    ]
    assert solo["content_text"] == "Reported by 1 source: Local Paper"
    assert solo["_aggregator"]["sources"] == 1


def test_reported_by_in_atom(clusters):
    data = render_atom(clusters, META, NOW)
    parsed = feedparser.parse(data)
    assert "Reported by 7 sources" in parsed.entries[0].content[0].value
    assert parsed.entries[0].summary.startswith("Reported by 7 sources: BBC, Guardian")
    assert "Reported by 1 source" in parsed.entries[1].content[0].value


def test_entry_id_is_stable_when_a_member_joins(clusters):
    big = clusters[0]
    grown = cluster(7, [*big.items, member(9, "Le Monde")])
    before = atom_root(render_atom([big], META, NOW)).find(f"{A}entry/{A}id").text
    after_root = atom_root(render_atom([grown], META, NOW))
    assert after_root.find(f"{A}entry/{A}id").text == before == "urn:aggregator:digest:cluster:7"
    assert after_root.find(f"{A}entry/{A}updated").text > "2026-11-25T08:08:00Z"
    assert "Reported by 8 sources" in after_root.find(f"{A}entry/{A}content").text


def test_empty_digest_uses_now():
    for fmt in FORMATS:
        data = render([], fmt, DigestMeta(), NOW)
        if fmt == "json":
            assert json.loads(data)["items"] == []
        else:
            assert feedparser.parse(data).bozo == 0
    root = atom_root(render_atom([], DigestMeta(), NOW))
    check_rfc4287(root)
    assert one(root, "updated").text == "2026-11-25T13:00:00Z"
    assert root.findall(A + "link") == []


def test_unknown_format():
    with pytest.raises(ConfigError, match="atom, rss, json"):
        render([], "html", META, NOW)
    assert set(CONTENT_TYPES) == set(FORMATS)


def test_naive_and_offset_times_become_utc():
    cest = datetime(2026, 11, 25, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    m = replace(member(1, "BBC"), published=cest)
    c = replace(cluster(1, [m]), first_seen=datetime(2026, 11, 25, 9, 0), updated=None)
    item = json.loads(render_json([c], META, NOW))["items"][0]
    assert item["date_published"] == "2026-11-25T09:00:00Z"
    assert item["date_modified"] == "2026-11-25T10:00:00Z"  # updated falls back to last_seen
    assert item["_aggregator"]["members"][0]["published"] == "2026-11-25T10:00:00Z"


# ---------------------------------------------------------------- hostile content


@pytest.fixture
def hostile() -> list[ClusterView]:
    members = [member(i, feed=h, title=h) for i, h in enumerate(HOSTILE, start=1)]
    members.append(member(10, "Evil", "click me", url="javascript:alert(1)"))
    members.append(member(11, "Evil", "data", url="data:text/html,<script>alert(1)</script>"))
    members.append(member(12, "Evil", "spaced", url=" JaVa\tScRiPt:alert(1)"))
    members.append(member(13, "Evil", "relative", url="/relative/path"))
    bad = ClusterView(
        id=66,
        size=len(members),
        feeds=6,
        title="<script>alert(1)</script>\x00\x07\x1b <img src=x onerror=alert(1)> <b><i>",
        url="javascript:alert(1)",
        first_seen=T0,
        last_seen=T0,
        items=tuple(members),
    )
    return [bad]


def test_hostile_atom_is_well_formed_and_inert(hostile):
    data = render_atom(hostile, META, NOW)
    for ch in (b"\x00", b"\x07", b"\x1b"):
        assert ch not in data
    root = atom_root(data)
    check_rfc4287(root)
    assert feedparser.parse(data).bozo == 0
    entry = root.find(A + "entry")
    assert entry.find(A + "link") is None  # javascript: representative link dropped
    content = entry.find(A + "content")
    assert content.get("type") == "html"
    assert_inert(content.text)
    assert "javascript" not in content.text.lower()
    assert "data:" not in content.text
    # the hostile strings are still there, as text a reader shows
    shown = "".join(audit(content.text).text)
    assert "<script>alert(1)</script>" in shown
    assert "<img src=x onerror=alert(1)>" in shown
    assert "expression(alert(1))" in shown
    assert entry.find(A + "title").get("type") == "text"


def test_hostile_rss_and_json_are_well_formed_and_inert(hostile):
    rss = render_rss(hostile, META, NOW)
    assert feedparser.parse(rss).bozo == 0
    description = ET.fromstring(rss).find("channel/item/description").text
    assert_inert(description)
    assert ET.fromstring(rss).find("channel/item/link") is None

    raw = render_json(hostile, META, NOW)
    text = raw.decode("utf-8")
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]|\\u00(0[0-8bcef]|1[0-9a-f])", text)
    item = json.loads(raw)["items"][0]
    assert "url" not in item
    assert_inert(item["content_html"])
    urls = [m["url"] for m in item["_aggregator"]["members"]]
    assert urls[-4:] == [None, None, None, None]
    assert item["title"].startswith("<script>alert(1)</script> <img")  # plain text, cleaned


def test_hostile_text_in_feed_meta():
    meta = DigestMeta(title="Mine\x00 <b>", feed_id="urn:aggregator:digest")
    data = render_atom([], meta, NOW)
    root = atom_root(data)
    assert one(root, "title").text == "Mine <b>"


# ---------------------------------------------------------------- writing


def test_write_atomically_replaces_and_leaves_no_temp_files(tmp_path: Path, clusters):
    target = tmp_path / "digest.atom"
    target.write_bytes(b"old content")
    data = render_atom(clusters, META, NOW)
    write_atomically(target, data)
    assert target.read_bytes() == data
    assert os.listdir(tmp_path) == ["digest.atom"]
    write_atomically(target, b"again")
    assert target.read_bytes() == b"again"
    assert os.listdir(tmp_path) == ["digest.atom"]


def test_write_atomically_new_file_is_readable(tmp_path: Path):
    target = tmp_path / "digest.json"
    write_atomically(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert target.stat().st_mode & 0o044  # group/other may read: it is served


def test_write_atomically_failure_keeps_old_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "digest.rss"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["digest.rss"]
