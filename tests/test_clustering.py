"""The dedup stage in the pipeline: one test per clustering rule, through a real local HTTP
server, a real database and `aggregator.service.app.fetch_all` (and the real CLI at the end).

Feeds are RSS 2.0 documents built from the hand-written articles in tests/data/dedup/;
each test reads the clusters back from the database. The database is `db_target`: every
test that stores runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path

import pytest
from feedserver import FeedServer

from aggregator.config import Config, dump_yaml, parse_config
from aggregator.service.app import Pipeline, fetch_all
from aggregator.service.clustering import Clusterer
from aggregator.service.poll import PollReport
from aggregator.store.database import Store
from aggregator.timeutil import from_iso, utcnow

DATA = Path(__file__).parent / "data" / "dedup"
ROOT = Path(__file__).resolve().parents[1]
FAST = {"timeout": "5s", "connect_timeout": "5s", "parse_workers": 0, "interval": "1h"}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# ---------------------------------------------------------------- articles and copies


def article(name: str) -> tuple[str, list[str]]:
    """(headline, paragraphs) of a fixture article."""
    headline, _, body = (DATA / f"{name}.txt").read_text(encoding="utf-8").partition("\n")
    return headline.strip(), [p.strip() for p in body.split("\n\n") if p.strip()]


def as_html(paragraphs: list[str]) -> str:
    return "".join(f"<p>{escape(p, quote=False)}</p>\n" for p in paragraphs)


def as_text(paragraphs: list[str]) -> str:
    return "\n\n".join(paragraphs)


def syndicated(name: str, headline: str, outlet: str) -> str:
    """A copy as another site republishes it: byline, the article, then WordPress chrome."""
    _, paragraphs = article(name)
    return (
        f"<p><em>By {outlet} staff</em></p>\n"
        + as_html(paragraphs)
        + f"<p>The post <a href='https://{outlet.lower()}.example.org/x'>{escape(headline)}</a>"
        f" appeared first on {outlet}.</p>\n"
        "<h3>Leave a Reply</h3><p>Your email address will not be published. Required fields"
        " are marked *</p><p>Comment</p><p>Name *</p>"
    )


def summary(name: str, n_words: int = 40, marker: str = " […] Read more") -> str:
    """The first `n_words` words of the article, as a truncating feed shows them."""
    _, paragraphs = article(name)
    return " ".join(" ".join(paragraphs).split()[:n_words]) + marker


QUOTE_LINK = '<a href="https://x.example.net/quotes">said</a>'


def html_copy(name: str) -> str:
    """The article with markup, links, entities and a photo caption."""
    _, paragraphs = article(name)
    first, *rest = paragraphs
    marked = first.replace(" the ", " <strong>the</strong> ", 1)
    return (
        "<figure><img src='https://img.example.net/1.jpg' alt=''>"
        "<figcaption>Photo: Archive &amp; Co.</figcaption></figure>\n"
        f"<div class='entry'><p>{marked}</p>\n"
        + "".join(f"<p>{escape(p, quote=False).replace('said', QUOTE_LINK, 1)}</p>" for p in rest)
        + "</div><script>track('view');</script>"
    )


# ---------------------------------------------------------------- feeds, config, database


@dataclass(frozen=True)
class Entry:
    guid: str
    title: str
    body: str | None  # HTML or text; None for title-only feeds
    link: str
    published: datetime


def rss(title: str, entries: list[Entry]) -> bytes:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>https://{title.lower()}.example.com/</link>",
        "<description>test feed</description>",
    ]
    for e in entries:
        parts.append("<item>")
        parts.append(f'<guid isPermaLink="false">{escape(e.guid)}</guid>')
        parts.append(f"<title>{escape(e.title)}</title><link>{escape(e.link)}</link>")
        parts.append(f"<pubDate>{format_datetime(e.published, usegmt=True)}</pubDate>")
        if e.body is not None:
            parts.append(f"<description>{escape(e.body)}</description>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode()


def ago(hours: float) -> datetime:
    return utcnow() - timedelta(hours=hours)


class World:
    """Feeds served by `feed_server`, a feeds.yaml listing them, and the database."""

    def __init__(self, tmp_path: Path, server: FeedServer, store: Store, **dedup: object):
        self.tmp_path = tmp_path
        self.server = server
        self.store = store
        self.dedup = dedup
        self.names: list[str] = []

    def feed(self, name: str, *entries: Entry) -> None:
        """Serve (or replace) feed `name`."""
        self.server.set(f"/{name}.xml", rss(name, list(entries)))
        if name not in self.names:
            self.names.append(name)

    def config(self) -> Config:
        settings: dict[str, object] = dict(FAST)
        if self.dedup:
            settings["dedup"] = dict(self.dedup)
        doc = {
            "settings": settings,
            "feeds": [{"url": self.server.url(f"/{n}.xml"), "name": n} for n in self.names],
        }
        path = self.tmp_path / "feeds.yaml"
        text = dump_yaml(doc)
        path.write_text(text, encoding="utf-8")
        return parse_config(text, path)

    def fetch(self) -> PollReport:
        report = fetch_all(self.config(), self.store)
        assert report.errors == 0, [o.error for o in report.outcomes]
        return report

    def ids(self) -> dict[tuple[str, str], int]:
        """(feed name, guid) -> item id."""
        return {
            (feed, key): item_id
            for item_id, feed, key in self.store.conn.execute(
                "SELECT i.id, f.name, i.key FROM items i JOIN feeds f ON f.id = i.feed_id"
            )
        }

    def cluster_of(self, feed: str, guid: str) -> int:
        row = self.store.conn.execute(
            "SELECT i.cluster_id FROM items i JOIN feeds f ON f.id = i.feed_id "
            "WHERE f.name = ? AND i.key = ?",
            (feed, guid),
        ).fetchone()
        assert row is not None, f"no item {guid} in {feed}"
        assert row[0] is not None, f"item {guid} in {feed} has no cluster"
        return row[0]

    def partition(self) -> set[frozenset[int]]:
        groups: dict[int, set[int]] = defaultdict(set)
        for item_id, cluster_id in self.store.conn.execute("SELECT id, cluster_id FROM items"):
            assert cluster_id is not None
            groups[cluster_id].add(item_id)
        return {frozenset(g) for g in groups.values()}


@pytest.fixture
def store(db_target: Path | str) -> Iterator[Store]:
    s = Store.open(db_target)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def world(tmp_path: Path, feed_server: FeedServer, store: Store) -> World:
    return World(tmp_path, feed_server, store)


def check_bookkeeping(store: Store) -> None:
    """Every item is in a cluster; every cluster's stored stats match its members:
    size, distinct feeds, first/last published, representative = earliest published."""
    conn = store.conn
    assert conn.execute("SELECT count(*) FROM items WHERE cluster_id IS NULL").fetchone()[0] == 0
    clusters = conn.execute(
        "SELECT id, size, feed_count, first_seen, last_seen, representative_id FROM clusters"
    ).fetchall()
    for cid, size, feed_count, first, last, rep in clusters:
        members = conn.execute(
            "SELECT id, feed_id, published_at FROM items WHERE cluster_id = ? "
            "ORDER BY published_at, id",
            (cid,),
        ).fetchall()
        assert size == len(members) > 0, f"cluster {cid}"
        assert feed_count == len({m[1] for m in members}), f"cluster {cid}"
        assert first == members[0][2] and last == max(m[2] for m in members), f"cluster {cid}"
        assert rep == members[0][0], f"cluster {cid}: representative is not the earliest"
    referenced = {r[0] for r in conn.execute("SELECT DISTINCT cluster_id FROM items")}
    assert referenced == {c[0] for c in clusters}


def link(host: str, slug: str) -> str:
    return f"https://{host}.example.com/2026/{slug}"


# ---------------------------------------------------------------- exact shortcuts


def test_same_canonical_link_joins_even_without_similar_text(world: World) -> None:
    """A title-only entry cannot be compared with a full article (char vs word shingles),
    but both link to the same page once tracking parameters are gone."""
    title, paragraphs = article("bridge")
    url = link("quaytimes", "harbor-bridge")
    world.feed("a", Entry("a1", title, as_html(paragraphs), url + "?utm_source=rss&utm_medium=feed", ago(5)))
    world.feed("b", Entry("b1", "Bridge closing", None, url + "?fbclid=XYZ#comments", ago(4)))
    world.fetch()
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1")
    check_bookkeeping(world.store)


def test_root_url_check_agrees_with_urlsplit() -> None:
    """_useful_url skips urlsplit for the usual absolute link; it must decide as
    urlsplit's path would, for odd links too (seeded fuzz)."""
    import random
    from urllib.parse import urlsplit

    from aggregator.service.clustering import _useful_url

    def reference(url: str) -> str | None:
        return url if url and urlsplit(url).path not in ("", "/") else None

    parts = ["https://", "http://", "HTTPS://", "", "//", "host", "h.example.com", "/", "?", "#",
             "a", "/x", "?q=1", "#f", ":80", "u:p@", "\t", " ", "://", "\\", "%2F", ";p", "\r", "\n"]  # fmt: skip
    rng = random.Random(7)
    for _ in range(50_000):
        url = "".join(rng.choice(parts) for _ in range(rng.randint(0, 8)))
        assert _useful_url(url) == reference(url), repr(url)
    assert _useful_url("https://quaytimes.example.com/2026/bridge") is not None
    assert _useful_url("https://portal.example.com/?utm_source=rss") is None
    assert _useful_url("http://[bad/") == "http://[bad/"  # urlsplit raises: a feed must not fail on it


def test_same_content_hash_joins(world: World) -> None:
    title, paragraphs = article("rail_strike")
    world.feed("a", Entry("a1", title, as_html(paragraphs), link("westline", "strike"), ago(5)))
    world.feed("b", Entry("b1", title.upper(), as_text(paragraphs), link("wire", "x-1"), ago(4)))
    world.fetch()
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1")


def test_root_links_do_not_join_different_stories(world: World) -> None:
    """Some feeds link every entry to their home page; that is not the same story."""
    home = "https://portal.example.com/"
    title_a, body_a = article("bridge")
    title_b, body_b = article("library_fire")
    world.feed("a", Entry("a1", title_a, as_html(body_a), home, ago(5)))
    world.feed("b", Entry("b1", title_b, as_html(body_b), home + "?utm_source=rss", ago(4)))
    world.fetch()
    assert world.cluster_of("a", "a1") != world.cluster_of("b", "b1")


# ---------------------------------------------------------------- near-duplicates


def test_syndicated_copy_with_new_headline_and_boilerplate(world: World) -> None:
    title, paragraphs = article("bridge")
    world.feed("a", Entry("a1", title, as_html(paragraphs), link("quaytimes", "bridge"), ago(6)))
    world.feed("b", Entry(
        "b1", "Harbor Street crossing shut until November for deck repairs",
        syndicated("bridge", "Harbor Street crossing shut", "Riverside Post"),
        link("riversidepost", "crossing-shut"), ago(3),
    ))  # fmt: skip
    world.fetch()
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1")
    check_bookkeeping(world.store)


@pytest.mark.parametrize("marker", [" …", " […] Read more", "... <a href='https://x.example.com/more'>Continue reading</a>"])
def test_truncated_copy_joins_the_full_article(world: World, marker: str) -> None:
    title, paragraphs = article("library_fire")
    world.feed("a", Entry("a1", title, as_html(paragraphs), link("millbrook", "fire"), ago(6)))
    world.feed("b", Entry("b1", "Millbrook library fire: maps saved", summary("library_fire", 40, marker),
                          link("countywire", "fire-summary"), ago(5)))  # fmt: skip
    world.fetch()
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1")


def test_html_and_plain_text_copies_join(world: World) -> None:
    title, paragraphs = article("rail_strike")
    world.feed("a", Entry("a1", title, html_copy("rail_strike"), link("westline", "vote"), ago(6)))
    world.feed("b", Entry("b1", title, as_text(paragraphs), link("wire", "rail-vote"), ago(5)))
    world.fetch()
    hashes = {r[0] for r in world.store.conn.execute("SELECT content_hash FROM items")}
    assert len(hashes) == 2  # the caption makes them differ: the similarity path decides
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1")


@pytest.mark.parametrize(
    "first, second",
    [
        ("market_wrap_1", "market_wrap_2"),  # one template, other day's numbers
        ("match_1", "match_2"),  # one template, other teams
        ("library_fire", "library_fire_other"),  # one event, two independent write-ups
    ],
)
def test_templated_and_independent_write_ups_stay_apart(world: World, first: str, second: str) -> None:
    for n, (name, feed) in enumerate(((first, "a"), (second, "b"))):
        title, paragraphs = article(name)
        world.feed(feed, Entry(f"{feed}1", title, as_html(paragraphs), link(feed, name), ago(6 - n)))
    world.fetch()
    assert world.cluster_of("a", "a1") != world.cluster_of("b", "b1")
    assert world.store.count("clusters") == 2


def test_title_only_feeds_same_headline_with_trivial_changes(world: World) -> None:
    world.feed("a", Entry("a1", "Rail workers vote for three-day strike over driverless trains plan",
                          None, link("a", "1"), ago(5)))  # fmt: skip
    world.feed("b", Entry("b1", "Rail Workers Vote For 3-Day Strike Over Driverless Trains Plan - Westline Today",
                          None, link("b", "1"), ago(4)))  # fmt: skip
    world.fetch()
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1")


def test_title_only_feeds_unrelated_headlines_stay_apart(world: World) -> None:
    world.feed("a", Entry("a1", "Rail workers vote for three-day strike over driverless trains plan",
                          None, link("a", "1"), ago(5)))  # fmt: skip
    world.feed("b", Entry("b1", "Bus drivers vote for three-day strike over pay offer",
                          None, link("b", "1"), ago(4)))  # fmt: skip
    world.feed("c", Entry("c1", "Fire guts reading room of Millbrook public library",
                          None, link("c", "1"), ago(3)))  # fmt: skip
    world.fetch()
    assert len({world.cluster_of(f, f"{f}1") for f in "abc"}) == 3


# ---------------------------------------------------------------- changes over time


def test_changed_item_is_re_signed_and_moves(world: World) -> None:
    bridge_t, bridge_p = article("bridge")
    strike_t, strike_p = article("rail_strike")
    fire_t, fire_p = article("library_fire")
    match_t, match_p = article("match_1")
    # a1 is the earliest bridge report, so it represents the bridge cluster at first
    world.feed(
        "a",
        Entry("a1", bridge_t, as_html(bridge_p), link("a", "story-1"), ago(9)),
        Entry("a2", fire_t, as_html(fire_p), link("a", "story-2"), ago(8)),
    )
    world.feed(
        "b",
        Entry("b1", "Bridge shut for repairs", syndicated("bridge", "Bridge shut", "Wire"), link("b", "bridge"), ago(7)),
        Entry("b2", strike_t, as_html(strike_p), link("b", "strike"), ago(6)),
    )  # fmt: skip
    world.fetch()
    ids = world.ids()
    bridge = world.cluster_of("a", "a1")
    fire = world.cluster_of("a", "a2")
    assert world.cluster_of("b", "b1") == bridge
    rep = world.store.conn.execute("SELECT representative_id FROM clusters WHERE id = ?", (bridge,))
    assert rep.fetchone()[0] == ids["a", "a1"]

    # same guids, new content: a1 now carries the strike story, a2 a match report
    world.feed(
        "a",
        Entry("a1", "Westline strike: what it means for Easter travel", syndicated("rail_strike", "Strike", "A"),
              link("a", "story-1"), ago(9)),
        Entry("a2", match_t, as_html(match_p), link("a", "story-2"), ago(8)),
    )  # fmt: skip
    report = world.fetch()
    assert report.updated_items == 2 and report.new_items == 0
    assert world.ids() == ids  # updated in place, same rows
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b2")
    assert world.cluster_of("b", "b1") == bridge
    size, rep = world.store.conn.execute(
        "SELECT size, representative_id FROM clusters WHERE id = ?", (bridge,)
    ).fetchone()
    assert (size, rep) == (1, ids["b", "b1"])
    # the fire cluster lost its only member: it is gone, a2 is in a new cluster
    assert world.store.conn.execute("SELECT count(*) FROM clusters WHERE id = ?", (fire,)).fetchone()[0] == 0
    assert world.cluster_of("a", "a2") not in (fire, bridge)
    # the stored signature is the new one
    sig_size = world.store.conn.execute(
        "SELECT size FROM signatures WHERE item_id = ?", (ids["a", "a2"],)
    ).fetchone()[0]
    assert sig_size == Clusterer(world.config().settings.dedup).signer.sign(match_t, "\n".join(match_p)).size
    check_bookkeeping(world.store)


def test_moved_item_is_found_by_later_copies_only_under_its_new_content(world: World) -> None:
    bridge_t, bridge_p = article("bridge")
    strike_t, strike_p = article("rail_strike")
    world.feed("a", Entry("a1", bridge_t, as_html(bridge_p), link("a", "1"), ago(9)))
    world.fetch()
    world.feed("a", Entry("a1", strike_t, as_html(strike_p), link("a", "1"), ago(9)))
    world.fetch()
    world.feed("b", Entry("b1", "Bridge closing", syndicated("bridge", "Bridge", "B"), link("b", "1"), ago(2)))
    world.feed("c", Entry("c1", "Strike vote", syndicated("rail_strike", "Strike", "C"), link("c", "1"), ago(2)))
    world.fetch()
    assert world.cluster_of("c", "c1") == world.cluster_of("a", "a1")
    assert world.cluster_of("b", "b1") != world.cluster_of("a", "a1")
    check_bookkeeping(world.store)


def test_repost_under_a_new_guid_joins(world: World) -> None:
    title, paragraphs = article("bridge")
    first = Entry("p-100", title, as_html(paragraphs), link("a", "bridge"), ago(20))
    world.feed("a", first)
    world.fetch()
    repost = Entry("p-217", "UPDATED: " + title, as_html(paragraphs), link("a", "bridge-2"), ago(1))
    world.feed("a", repost, first)
    world.fetch()
    assert world.cluster_of("a", "p-100") == world.cluster_of("a", "p-217")
    size, feeds = world.store.conn.execute("SELECT size, feed_count FROM clusters").fetchone()
    assert (size, feeds) == (2, 1)


def test_cluster_bookkeeping(world: World) -> None:
    """The earliest *published* copy represents the cluster, whatever order feeds arrive in."""
    title, paragraphs = article("rail_strike")
    world.feed(
        "a",
        Entry("a1", title, as_html(paragraphs), link("a", "1"), ago(3)),
        # one feed's second entry of the story: its title adds to the first's (entries of one
        # feed with unrelated titles are different entries, aggregator/dedup/evidence.py)
        Entry("a2", title + ": the full story", summary("rail_strike", 45, " …"), link("a", "2"), ago(2)),
    )
    world.feed("b", Entry("b1", "Westline drivers back walkout", syndicated("rail_strike", "x", "B"),
                          link("b", "1"), ago(10)))  # fmt: skip
    world.feed("c", Entry("c1", title, as_text(paragraphs), link("c", "1"), ago(1)))
    world.fetch()
    ids = world.ids()
    assert len({world.cluster_of(f, g) for f, g in ids}) == 1
    size, feed_count, first, last, rep = world.store.conn.execute(
        "SELECT size, feed_count, first_seen, last_seen, representative_id FROM clusters"
    ).fetchone()
    assert (size, feed_count, rep) == (4, 3, ids["b", "b1"])
    pub = dict(world.store.conn.execute("SELECT id, published_at FROM items").fetchall())
    assert first == pub[ids["b", "b1"]] and last == pub[ids["c", "c1"]]
    assert from_iso(last) - from_iso(first) == timedelta(hours=9)
    similarity = world.store.conn.execute(
        "SELECT similarity FROM items WHERE id = ?", (ids["b", "b1"],)
    ).fetchone()[0]
    assert 0 < similarity <= 1
    check_bookkeeping(world.store)


# ---------------------------------------------------------------- recluster and restart


def mixed_feeds(world: World) -> dict[str, set[tuple[str, str]]]:
    """~30 items over 5 feeds: copies of four stories plus negatives. Returns the gold
    clusters of the multi-item stories as sets of (feed, guid)."""
    names = ["bridge", "rail_strike", "library_fire", "match_1"]
    negatives = ["library_fire_other", "market_wrap_1", "market_wrap_2", "match_2"]
    feeds: dict[str, list[Entry]] = defaultdict(list)
    gold: dict[str, set[tuple[str, str]]] = defaultdict(set)
    hour = 30.0

    def add(feed: str, story: str, title: str, body: str | None, slug: str) -> None:
        nonlocal hour
        guid = f"{feed}-{len(feeds[feed]) + 1}"
        feeds[feed].append(Entry(guid, title, body, link(feed, slug), ago(hour)))
        gold[story].add((feed, guid))
        hour -= 0.5

    for name in names:
        title, paragraphs = article(name)
        add("wire", name, title, as_html(paragraphs), name)
        add("post", name, f"{title.split(':')[0]} (updated)", syndicated(name, title, "Post"), name)
        add("digest", name, title, summary(name, 42, " […] Read more"), name)
        add("plain", name, title, as_text(paragraphs), name + "-txt")
        add("radio", name, title, None, name + "-headline")  # title-only: joins no body
    for name in negatives:
        title, paragraphs = article(name)
        add("wire", name, title, as_html(paragraphs), name)
    # copies of the negatives: each must join its own template twin, not the other day's
    add("digest", "market_wrap_2", article("market_wrap_2")[0], summary("market_wrap_2", 40, " …"), "w2")
    add("digest", "match_2", article("match_2")[0], summary("match_2", 45, " …"), "m2")
    add("post", "market_wrap_1", "Markets: chips lead gains", syndicated("market_wrap_1", "x", "Post"), "w1")
    add("plain", "library_fire_other", article("library_fire_other")[0],
        as_text(article("library_fire_other")[1]), "fire-2")  # fmt: skip
    add("radio", "strike-headline", "Rail Workers Vote For Three-Day Strike Over Driverless Trains Plan", None, "s2")
    add("radio", "other-headline", "Council approves new cycle lanes on Quay Square", None, "cycle")
    for feed, entries in feeds.items():
        world.feed(feed, *entries)
    return gold


def test_recluster_rebuilds_the_same_partition(world: World) -> None:
    mixed_feeds(world)
    world.fetch()
    before = world.partition()
    assert world.store.count("items") == 30
    assert any(len(g) >= 4 for g in before) and sum(len(g) == 1 for g in before) >= 4
    count = Clusterer(world.config().settings.dedup).recluster(world.store)
    assert count == len(before) == world.store.count("clusters")
    assert world.partition() == before
    check_bookkeeping(world.store)


def test_mixed_feeds_give_the_expected_clusters(world: World) -> None:
    gold = mixed_feeds(world)
    world.fetch()
    ids = world.ids()
    by_cluster: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for key in ids:
        by_cluster[world.cluster_of(*key)].add(key)
    got = {frozenset(g) for g in by_cluster.values()}
    # A title-only entry is a different kind of item from a full article (char vs word
    # shingles), so each "radio" headline stands apart from its story's articles; the two
    # strike headlines (same words, other casing) are one cluster.
    radio = {story: {m for m in members if m[0] == "radio"} for story, members in gold.items()}
    expected = {frozenset(gold[s] - radio[s]) for s in gold if gold[s] - radio[s]}
    expected.add(frozenset(radio["rail_strike"] | radio["strike-headline"]))
    for story in ("bridge", "library_fire", "match_1", "other-headline"):
        expected.add(frozenset(radio[story]))
    assert got == expected


def test_index_rebuild_finds_copies_after_a_restart(world: World) -> None:
    title, paragraphs = article("bridge")
    world.feed("a", Entry("a1", title, as_html(paragraphs), link("a", "1"), ago(5)))
    world.fetch()
    settings = world.config().settings.dedup

    fresh = Clusterer(settings)
    assert fresh.load(world.store, utcnow()) == 1
    copy = syndicated("bridge", "Bridge", "B")
    sig = fresh.signer.sign("Crossing shut until November", "\n".join(paragraphs))
    rows = fresh.index.matches(sig, int(utcnow().timestamp()))
    assert [int(fresh.index.item_ids[r]) for r, _ in rows] == [world.ids()["a", "a1"]]
    # outside the window nothing is loaded
    assert Clusterer(settings).load(world.store, utcnow() + timedelta(seconds=settings.window + 60)) == 0

    # fetch_all starts a new pipeline (as the daemon does after a restart): the copy,
    # with another link and text, can only be found through the rebuilt index
    world.feed("b", Entry("b1", "Crossing shut until November", copy, link("b", "1"), ago(1)))
    world.fetch()
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1")


def test_index_rebuild_after_lede_num_perm_change(world: World) -> None:
    """Changing settings.dedup.lede_num_perm in feeds.yaml must not break the next fetch:
    stored signatures with the old lede length should be skipped (like a num_perm change),
    not crash the index rebuild."""
    title, paragraphs = article("bridge")
    world.feed("a", Entry("a1", title, as_html(paragraphs), link("a", "1"), ago(5)))
    world.fetch()
    world.dedup = {"lede_num_perm": 32}
    settings = world.config().settings.dedup
    assert Clusterer(settings).load(world.store, utcnow()) == 0  # a1 needs re-signing
    world.feed("b", Entry("b1", "Bridge closing", syndicated("bridge", "x", "B"), link("b", "1"), ago(1)))
    world.fetch()  # fetch_all rebuilds the index first: must not raise
    assert world.store.count("items") == 2


def test_index_rebuild_keeps_new_signatures_next_to_old_ones(world: World) -> None:
    """After a num_perm change (without recluster) items signed with the new setting must
    still be loaded at start-up, even when the same batch holds old signatures."""
    strike_t, strike_p = article("rail_strike")
    world.feed("a", Entry("a1", strike_t, as_html(strike_p), link("a", "1"), ago(5)))
    world.fetch()  # signed with 128 permutations
    world.dedup = {"num_perm": 64}
    title, paragraphs = article("bridge")
    world.feed("b", Entry("b1", title, as_html(paragraphs), link("b", "1"), ago(4)))
    world.fetch()  # b1 signed with 64
    settings = world.config().settings.dedup
    fresh = Clusterer(settings)
    loaded = fresh.load(world.store, utcnow())
    assert loaded == 1  # b1; a1 needs re-signing


def test_fetch_builds_the_index_only_when_a_new_item_needs_it(world: World, monkeypatch) -> None:
    """`aggregator fetch` does not rebuild the dedup index at start-up: a poll that
    brings nothing new never builds it, and the first new item builds it before it is
    placed, so it still joins the story stored by an earlier run."""
    title, paragraphs = article("bridge")
    world.feed("a", Entry("a1", title, as_html(paragraphs), link("a", "1"), ago(5)))
    world.fetch()
    loads: list[int] = []
    original = Clusterer.load
    monkeypatch.setattr(Clusterer, "load", lambda self, *a: loads.append(1) or original(self, *a))
    world.fetch()  # nothing new
    assert loads == []
    world.feed("b", Entry("b1", "Bridge shut", syndicated("bridge", "x", "B"), link("b", "1"), ago(1)))
    world.fetch()
    assert loads == [1]
    assert world.cluster_of("b", "b1") == world.cluster_of("a", "a1")


def test_running_pipeline_after_a_recluster_uses_current_clusters(world: World) -> None:
    """The daemon keeps one Pipeline (and its in-memory index) across polls while a user
    may run `aggregator recluster` in another process. Clusters are then renumbered; the
    next copy must join the story's current cluster, not a stale id from the index
    (which here no longer exists: FOREIGN KEY constraint failed, and the whole poll raised)."""
    entries = []
    for i, name in enumerate(["market_wrap_1", "market_wrap_2", "bridge"]):
        title, paragraphs = article(name)
        entries.append(Entry(f"a{i}", title, as_html(paragraphs), link("a", name), ago(5 - i)))
    world.feed("a", *entries)
    config = world.config()
    pipeline = Pipeline.start(config, world.store)  # the daemon
    asyncio.run(pipeline.poll())
    # `aggregator recluster --threshold 0.1` in another process: the two wraps merge, so
    # the bridge story's cluster gets another id
    Clusterer(replace(config.settings.dedup, threshold=0.1)).recluster(world.store)
    bridge = world.cluster_of("a", "a2")
    world.feed("b", Entry("b1", "Bridge shut", syndicated("bridge", "x", "B"), link("b", "1"), ago(1)))
    pipeline.config = world.config()
    asyncio.run(pipeline.poll())
    assert world.cluster_of("b", "b1") == bridge
    check_bookkeeping(world.store)


def test_exact_shortcut_after_a_restart(world: World) -> None:
    """The exact keys are kept in the in-memory index: after a restart (index rebuilt
    from the database) a title-only entry still joins the article it links to, and an
    item with the same content under another link joins too."""
    title, paragraphs = article("bridge")
    url = link("quaytimes", "harbor-bridge")
    world.feed("a", Entry("a1", title, as_html(paragraphs), url, ago(5)))
    world.fetch()
    # each fetch_all is a new process: the index is rebuilt from the stored items
    world.feed("b", Entry("b1", "Bridge closing", None, url + "?utm_source=rss", ago(4)))
    world.fetch()
    world.feed("c", Entry("c1", title, as_text(paragraphs), link("wire", "x-9"), ago(3)))
    world.fetch()
    assert world.cluster_of("a", "a1") == world.cluster_of("b", "b1") == world.cluster_of("c", "c1")
    catalog = ("SELECT name FROM sqlite_master WHERE type = 'index'" if world.store.on_file
               else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")  # fmt: skip
    names = {r[0] for r in world.store.conn.execute(catalog)}
    assert "items_first_seen" in names  # the query sees the indexes there are
    assert not names & {"items_canonical_url", "items_content_hash"}  # migration 007


def test_running_pipeline_indexes_items_another_process_stored(world: World) -> None:
    """`aggregator fetch` in another process while the daemon runs: the daemon's index
    did not see those items, and catches up before placing its own, so a copy (exact or
    near) still joins them."""
    title, paragraphs = article("bridge")
    strike_t, strike_p = article("rail_strike")
    world.feed("a", Entry("a0", strike_t, as_html(strike_p), link("a", "0"), ago(9)))
    daemon = Pipeline.start(world.config(), world.store)
    asyncio.run(daemon.poll())
    # another process stores two stories the daemon has not seen
    world.feed("o", Entry("o1", title, as_html(paragraphs), link("o", "bridge"), ago(5)),
               Entry("o2", "Library fire", as_html(article("library_fire")[1]), link("o", "fire"), ago(5)))  # fmt: skip
    world.fetch()
    world.feed("b", Entry("b1", "Crossing shut until November", syndicated("bridge", "x", "B"),
                          link("b", "1"), ago(1)),
               Entry("b2", "Fire", None, link("o", "fire") + "?utm_source=x", ago(1)))  # fmt: skip
    daemon.config = world.config()
    asyncio.run(daemon.poll())
    assert world.cluster_of("b", "b1") == world.cluster_of("o", "o1")
    assert world.cluster_of("b", "b2") == world.cluster_of("o", "o2")
    assert world.cluster_of("a", "a0") not in {world.cluster_of("o", "o1"), world.cluster_of("o", "o2")}
    check_bookkeeping(world.store)


# ---------------------------------------------------------------- CLI end to end


def run(cfg: Path, db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


def test_cli_end_to_end(world: World, tmp_path: Path, db_target: Path | str) -> None:
    mixed_feeds(world)
    cfg = tmp_path / "feeds.yaml"
    world.config()  # writes cfg
    db = db_target  # world.store stays empty: only the CLI writes here

    fetched = run(cfg, db, "fetch")
    assert fetched.returncode == 0, fetched.stderr
    assert "30 new items" in fetched.stderr

    listed = run(cfg, db, "clusters", "list", "--json", "--min-size", "2", "--since", "30d")
    assert listed.returncode == 0, listed.stderr
    clusters = json.loads(listed.stdout)
    assert clusters and all(c["size"] >= 2 for c in clusters)
    for c in clusters:
        assert set(c) == {"id", "size", "feeds", "title", "url", "first_seen", "last_seen", "items"}
        assert isinstance(c["id"], int) and c["size"] == len(c["items"])
        assert 1 <= c["feeds"] <= c["size"]
        assert ISO_Z.match(c["first_seen"]) and ISO_Z.match(c["last_seen"])
        assert c["first_seen"] <= c["last_seen"]
        for item in c["items"]:
            assert set(item) == {"id", "feed", "title", "url", "published", "similarity", "link"}
            assert ISO_Z.match(item["published"])
            assert item["similarity"] is None or 0 <= item["similarity"] <= 1
        rep = c["items"][0]  # members are listed earliest first: the representative
        assert (c["title"], c["url"], rep["similarity"]) == (rep["title"], rep["url"], 1.0)
        assert c["first_seen"] == rep["published"]
    last_seen = [c["last_seen"] for c in clusters]
    assert last_seen == sorted(last_seen, reverse=True)  # newest first

    first = clusters[0]
    shown = run(cfg, db, "clusters", "show", str(first["id"]), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == first

    plain = run(cfg, db, "clusters", "show", str(first["id"]))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith(f"cluster {first['id']}: {first['title']}")
    feeds = f"{first['feeds']} feed" + ("" if first["feeds"] == 1 else "s")
    assert f"{first['size']} items from {feeds}" in plain.stdout
    for item in first["items"]:
        assert item["url"] in plain.stdout

    reclustered = run(cfg, db, "recluster", "--threshold", "0.6")
    assert reclustered.returncode == 0, reclustered.stderr
    m = re.search(r"(\d+) items in (\d+) clusters", reclustered.stdout)
    assert m and int(m.group(1)) == 30 and 1 <= int(m.group(2)) <= 30

    missing = run(cfg, db, "clusters", "show", "999999")
    assert missing.returncode != 0
    assert "no cluster 999999" in missing.stderr
    assert "Traceback" not in missing.stderr
