"""The story tier's read side (#15): `aggregator stories list|show`, the digest grouped by
story (`digest --group`), the web page's "Other coverage" and the demo's, over feeds
fetched from the local server by the real CLI. Stories are made with SQL (clusters.story_id),
as the clustering would make them, so these tests do not depend on how it does; they run on
SQLite and on PostgreSQL (conftest.py: `db_target`)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, replace
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import feedparser
import pytest
from feedserver import FeedServer, Route
from test_cli import run, write_config
from test_daemon import rss, story
from test_search_stats import sql

from aggregator.config import DigestSettings
from aggregator.demo import print_stories
from aggregator.publish.publisher import load_digest, page_snapshot
from aggregator.publish.webview import parse_filter, render_page
from aggregator.store.database import Store
from aggregator.store.story_queries import list_stories
from aggregator.timeutil import utcnow

FIRE = story("library_fire", "q1", hours_ago=3)
FIRE_COPY = story("library_fire", "r1", title="Millbrook library gutted by overnight fire", hours_ago=2.5)
OTHER = story("library_fire_other", "v1", hours_ago=2)  # the same fire in other words
BRIDGE, BRIDGE_COPY = story("bridge", "q2", hours_ago=4), story("bridge", "r2", hours_ago=3.5)
STRIKE = story("rail_strike", "q3", hours_ago=1)
OUTLETS = {  # path: (name, tags, stories)
    "/quay.xml": ("Quay Times", ["local"], [FIRE, BRIDGE, STRIKE]),
    "/river.xml": ("Riverside Post", ["world"], [FIRE_COPY, BRIDGE_COPY]),
    "/valley.xml": ("Valley Wire", ["wire"], [OTHER]),
}
# Later, two more outlets carry the other write-up: its cluster has the most outlets and
# becomes the story's lead.
LATER = {
    "/hill.xml": ("Hill Gazette", ["local"], [story("library_fire_other", "h1", title="Millbrook blaze: a human chain saves the archive")]),
    "/moor.xml": ("Moor Herald", ["local"], [story("library_fire_other", "m1", title="Townspeople rescue library archive from fire")]),
}  # fmt: skip
SCORE = 0.42


@dataclass
class World:
    cfg: Path
    db: Path | str
    server: FeedServer

    def cli(self, *args: str):
        result = run(self.cfg, self.db, *args)
        assert result.returncode == 0, result.stderr
        return result

    def cluster(self, guid: str) -> int:
        return sql(self.db, "SELECT cluster_id FROM items WHERE key = ?", guid)[0][0]

    def fetch(self, outlets: dict) -> None:
        for path, (name, _, stories) in outlets.items():
            self.server.set(path, Route(body=rss(name, stories), headers={"Content-Type": "application/rss+xml"}))
        feeds = "".join(
            f"  - url: {self.server.url(path)}\n    name: {name}\n    tags: [{', '.join(tags)}]\n"
            for path, (name, tags, _) in outlets.items()
        )
        self.cfg.write_text(self.cfg.read_text().split("feeds:\n")[0] + "feeds:\n" + feeds)
        self.cli("fetch")
        self.make_stories()

    def make_stories(self) -> None:
        """The fire's two write-ups are one story (the fire cluster's id); every other
        cluster is a story of its own, the strike's with story_id NULL (its own id too)."""
        fire, other = self.cluster("q1"), self.cluster("v1")
        sql(self.db, "UPDATE clusters SET story_id = id, story_score = NULL")
        sql(self.db, "UPDATE clusters SET story_id = ?, story_score = ? WHERE id = ?", fire, SCORE, other)
        sql(self.db, "UPDATE clusters SET story_id = NULL WHERE id = ?", self.cluster("q3"))

    def ids(self) -> tuple[int, int, int, int]:
        return self.cluster("q1"), self.cluster("v1"), self.cluster("q2"), self.cluster("q3")


@pytest.fixture
def world(tmp_path: Path, feed_server: FeedServer, db_target: Path | str) -> World:
    w = World(write_config(tmp_path, "feeds:\n"), db_target, feed_server)
    w.fetch(OUTLETS)
    fire, other, bridge, strike = w.ids()
    assert len({fire, other, bridge, strike}) == 4 and w.cluster("r1") == fire and w.cluster("r2") == bridge
    return w


def tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


# ---------------------------------------------------------------- the CLI


def test_stories_list_shows_the_lead_and_counts_the_whole_story(world: World) -> None:
    fire, other, bridge, strike = world.ids()
    rows = tsv(world.cli("stories", "list", "--since", "all").stdout)
    assert rows[0] == ["id", "clusters", "outlets", "size", "first seen", "title"]
    assert [r[:4] + r[5:] for r in rows[1:]] == [[str(fire), "2", "3", "3", FIRE.title]]  # --min-clusters 2
    assert rows[1][4] == json.loads(world.cli("stories", "show", str(fire), "--json").stdout)["first_seen"]

    every = tsv(world.cli("stories", "list", "--since", "all", "--min-clusters", "1").stdout)[1:]
    assert sorted(int(r[0]) for r in every) == sorted([fire, bridge, strike])  # NULL story_id: its own
    assert [r[0] for r in every] == [str(strike), str(fire), str(bridge)]  # newest first

    [listed] = json.loads(world.cli("stories", "list", "--since", "all", "--json").stdout)
    assert (listed["id"], listed["clusters"], listed["outlets"], listed["size"]) == (fire, 2, 3, 3)
    assert (listed["lead"]["id"], listed["lead"]["story_score"]) == (fire, None)
    assert [(o["id"], o["story_score"], o["title"]) for o in listed["others"]] == [(other, SCORE, OTHER.title)]
    assert {m["feed"] for m in listed["lead"]["items"]} == {"Quay Times", "Riverside Post"}

    # the cluster filters apply to the lead: Valley Wire carried only the other coverage
    assert listed_ids(world, "--feed", "Quay Times") == [fire]
    assert listed_ids(world, "--feed", "Valley Wire") == [] and listed_ids(world, "--tag", "wire") == []
    assert listed_ids(world, "--tag", "world") == [fire] and listed_ids(world, "--query", "Millbrook") == [fire]
    assert listed_ids(world, "--min-size", "3") == []  # the lead has 2 items
    assert listed_ids(world, "--since", "1h") == []  # the story's latest report is 2 h old
    recent = world.cli("stories", "list", "--since", "1h")  # an empty answer says why
    assert tsv(recent.stdout) == [rows[0]] and "1 older story of 2+ clusters not shown" in recent.stderr


def listed_ids(world: World, *args: str) -> list[int]:
    """The ids `stories list --since all --json ARGS` lists."""
    return [s["id"] for s in json.loads(world.cli("stories", "list", "--since", "all", "--json", *args).stdout)]


def test_stories_show_lists_the_lead_then_the_other_coverage(world: World) -> None:
    fire, other, _, _ = world.ids()
    lines = world.cli("stories", "show", str(fire)).stdout.splitlines()
    assert lines[0] == f"story {fire}: {FIRE.title}"
    assert lines[1].startswith("3 items in 2 clusters from 3 outlets, first seen 20")
    rows = tsv("\n".join(lines[2:]))
    assert rows[0] == ["cluster", "role", "size", "feeds", "match", "outlets", "title", "url"]
    assert [r[:7] for r in rows[1:]] == [
        [str(fire), "lead", "2", "2", "", "Quay Times, Riverside Post", FIRE.title],
        [str(other), "other", "1", "1", f"{SCORE:.2f}", "Valley Wire", OTHER.title],
    ]
    shown = json.loads(world.cli("stories", "show", str(fire), "--json").stdout)
    assert set(shown) == {"id", "title", "url", "size", "clusters", "outlets", "first_seen", "last_seen", "lead", "others"}
    assert shown["url"] == FIRE.link and [o["id"] for o in shown["others"]] == [other]

    elsewhere = run(world.cfg, world.db, "stories", "show", str(other))  # a cluster of another story
    assert elsewhere.returncode == 1 and f"cluster {other} is in story {fire}" in elsewhere.stderr
    missing = run(world.cfg, world.db, "stories", "show", "99999")
    assert missing.returncode == 1 and "no story 99999" in missing.stderr
    filtered = run(world.cfg, world.db, "stories", "show", str(fire), "--feed", "Valley Wire")
    assert filtered.returncode == 1 and "--feed Valley Wire" in filtered.stderr
    assert world.cli("stories", "show", str(fire), "--tag", "world").stdout.startswith(f"story {fire}:")


# ---------------------------------------------------------------- the digest


def digest(world: World, fmt: str, *args: str) -> list[dict]:
    """The entries of `aggregator digest --format FMT -o - ARGS`: id, title, link, content."""
    body = world.cli("digest", "--format", fmt, "-o", "-", "--since", "all", *args).stdout
    if fmt == "json":
        return [{"id": i["id"], "title": i["title"], "link": i.get("url"), "content": i["content_html"],
                 "text": i["content_text"], "ext": i["_aggregator"]} for i in json.loads(body)["items"]]  # fmt: skip
    parsed = feedparser.parse(body.encode())
    assert not parsed.bozo, parsed.bozo_exception
    return [{"id": e.id, "title": e.title, "link": e.get("link"),
             "content": e.content[0].value if "content" in e else e.summary} for e in parsed.entries]  # fmt: skip


class Links(HTMLParser):
    """The links of an HTML fragment: [(href, text)], and its text."""

    def __init__(self, fragment: str):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._href: str | None = None
        self.feed(fragment)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs)["href"]

    def handle_endtag(self, tag):
        self._href = None

    def handle_data(self, data):
        self.text.append(data)
        if self._href:
            self.links.append((self._href, data))


def after(fragment: str, heading: str) -> str:
    assert heading in fragment, fragment
    return fragment.split(heading, 1)[1]


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_digest_by_story_has_other_coverage_and_by_cluster_is_as_before(world: World, fmt: str) -> None:
    fire, other, bridge, strike = world.ids()
    prefix = "urn:aggregator:digest"
    stories = {e["id"]: e for e in digest(world, fmt)}  # settings.digest.group: stories
    assert set(stories) == {f"{prefix}:story:{n}" for n in (fire, bridge, strike)}
    entry = stories[f"{prefix}:story:{fire}"]
    assert (entry["title"], entry["link"]) == (FIRE.title, FIRE.link)
    assert "Reported by 3 sources" in entry["content"]
    lead_part, other_part = entry["content"].split("Other coverage", 1)
    assert {t for _, t in Links(lead_part).links} == {FIRE.title, FIRE_COPY.title}
    assert Links(other_part).links == [(OTHER.link, OTHER.title)]
    assert "Valley Wire" in "".join(Links(other_part).text)
    assert "Other coverage" not in stories[f"{prefix}:story:{bridge}"]["content"]
    if fmt == "json":
        assert entry["ext"]["story"] == fire and entry["ext"]["sources"] == 3
        assert entry["ext"]["other_coverage"] == [
            {"cluster": other, "outlets": ["Valley Wire"], "title": OTHER.title, "url": OTHER.link}
        ]
        assert f"Other coverage:\nValley Wire: {OTHER.title}" in entry["text"]

    clusters = digest(world, fmt, "--group", "clusters")
    assert {e["id"] for e in clusters} == {f"{prefix}:cluster:{n}" for n in (fire, other, bridge, strike)}
    assert not any("Other coverage" in e["content"] for e in clusters)
    assert all("story" not in e["ext"] for e in clusters) if fmt == "json" else True
    # a story of one cluster says what that cluster's entry says
    alone = next(e for e in clusters if e["id"] == f"{prefix}:cluster:{bridge}")
    assert stories[f"{prefix}:story:{bridge}"]["content"] == alone["content"]

    # the setting, overridden either way by --group
    world.cfg.write_text(world.cfg.read_text().replace("settings:\n", "settings:\n  digest:\n    group: clusters\n"))
    assert [e["id"] for e in digest(world, fmt)] == [e["id"] for e in clusters]
    assert [e["id"] for e in digest(world, fmt, "--group", "stories")] == list(stories)


def test_a_storys_entry_keeps_its_id_when_the_lead_changes(world: World) -> None:
    fire, other, _, _ = world.ids()
    entry_id = f"urn:aggregator:digest:story:{fire}"
    before = {fmt: {e["id"]: e for e in digest(world, fmt)} for fmt in ("atom", "rss", "json")}
    world.fetch({**OUTLETS, **LATER})  # the other write-up's cluster now has 3 outlets
    assert world.cluster("h1") == world.cluster("m1") == other
    [shown] = json.loads(world.cli("stories", "list", "--since", "all", "--json").stdout)
    assert (shown["id"], shown["lead"]["id"], [o["id"] for o in shown["others"]]) == (fire, other, [fire])
    assert shown["outlets"] == 5
    assert listed_ids(world, "--feed", "Valley Wire") == [fire]  # the filters follow the new lead
    assert listed_ids(world, "--feed", "Quay Times") == [] and listed_ids(world, "--min-size", "3") == [fire]
    for fmt in ("atom", "rss", "json"):
        now = {e["id"]: e for e in digest(world, fmt)}
        assert set(now) == set(before[fmt]), fmt  # no entry came or went: the same ids
        assert (before[fmt][entry_id]["title"], now[entry_id]["title"]) == (FIRE.title, OTHER.title)
        assert Links(after(now[entry_id]["content"], "Other coverage")).links == [(FIRE.link, FIRE.title)]
        assert "Reported by 5 sources" in now[entry_id]["content"]


# ---------------------------------------------------------------- the web page


def test_web_page_shows_other_coverage_and_filters_on_any_cluster(world: World) -> None:
    fire, other, bridge, strike = world.ids()
    settings = replace(DigestSettings(), window=float("inf"))
    now = utcnow() + timedelta(minutes=1)
    store = Store.open(world.db)
    try:
        snapshot = load_digest(store, settings, now)

        def page(query: str = "") -> str:
            where = parse_filter(query)
            source = page_snapshot(store, settings, where, now) if where else snapshot
            return render_page(source, where, now).decode()

        html = page()
        assert html.count('<article class="story"') == 3
        article = html.split(f'<article class="story" id="story-{fire}">', 1)[1].split("</article>", 1)[0]
        assert '<span class="badge">3 sources</span>' in article and "3 items" in article
        lead_part, other_part = article.split("Other coverage", 1)
        assert {t for _, t in Links(lead_part).links} >= {FIRE.title, FIRE_COPY.title}
        assert (OTHER.link, OTHER.title) in Links(other_part).links and "Valley Wire" in other_part
        assert "tags: " in lead_part and "wire" in lead_part  # the tags of every cluster
        assert "Other coverage" not in html.split(f'id="story-{bridge}"', 1)[1].split("</article>", 1)[0]
        for query in ("tag=wire", "q=human+chain", "min_size=3"):  # only the other coverage matches
            for shown in (page(query), render_page(snapshot, parse_filter(query), now).decode()):
                assert shown.count('<article class="story"') == 1 and f'id="story-{fire}"' in shown, query
        assert f'id="story-{strike}"' in page("q=strike") and "No story matches" in page("min_size=4")
    finally:
        store.close()

    store = Store.open(world.db)
    try:
        clusters_page = render_page(load_digest(store, replace(settings, group="clusters"), now),
                                    parse_filter(""), now).decode()  # fmt: skip
    finally:
        store.close()
    assert clusters_page.count('<article class="story"') == 4 and "Other coverage" not in clusters_page


# ---------------------------------------------------------------- the demo's section


def test_demo_prints_each_story_with_its_other_coverage(world: World) -> None:
    store = Store.open(world.db)
    try:
        stories = list_stories(store, None, min_clusters=2, limit=None)
    finally:
        store.close()
    out = io.StringIO()
    print_stories(stories, out)
    assert out.getvalue().splitlines() == [
        "1 story with other coverage:",
        "",
        f"{FIRE.title}  (Quay Times, Riverside Post)",
        f"  other coverage: {OTHER.title}  (Valley Wire)",
    ]
    out = io.StringIO()
    print_stories([], out)
    assert out.getvalue() == "No story has other coverage: each one is a single copy cluster.\n"
