"""Clusters that are right on real feeds: the traps outside readers found, as fixtures of
our own (tests/data/traps/), and every real-world file of ../shared/feeds through the real
`aggregator fetch`.

The rule for "plainly different posts" (the same as ../shared/hooks/realfeeds_check.py):
two members of one cluster whose titles have little in common (word containment < 0.5)
and whose texts have little in common (word 3-gram Jaccard < 0.3), or whose titles both
carry numbers and not the same ones (episode 837 / 838).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from feedserver import FeedServer, Route

from aggregator.config import DedupSettings, dump_yaml, parse_config
from aggregator.dedup.evidence import (
    EntryFacts,
    may_be_one_entry,
    numbers_conflict,
    paragraph_keys,
    related_titles,
    title_facts,
)
from aggregator.dedup.index import DedupIndex
from aggregator.dedup.signature import Signer
from aggregator.ingest.normalize import normalize_entries
from aggregator.records import RawEntry
from aggregator.service.app import fetch_all
from aggregator.store.database import Store

REPO = Path(__file__).resolve().parent.parent
TRAPS = Path(__file__).parent / "data" / "traps"
SHARED = REPO.parent / "shared" / "feeds"
FAST = {"timeout": "5s", "connect_timeout": "5s", "parse_workers": 0, "interval": "1h", "per_host": 8}


# ---------------------------------------------------------------- the rule


def _words(s: str | None) -> list[str]:
    return re.findall(r"\w+", (s or "").lower())


def _title_containment(a: str, b: str) -> float:
    x, y = set(_words(a)), set(_words(b))
    return len(x & y) / min(len(x), len(y)) if x and y else 0.0


def _text_jaccard(a: str, b: str) -> float:
    def grams(s: str) -> set[tuple[str, ...]]:
        w = _words(s)
        return {tuple(w[i : i + 3]) for i in range(max(0, len(w) - 2))} or {tuple(w)}

    x, y = grams(a), grams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def plainly_different(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """(title, text) pairs that no reader would call one story."""
    (t1, x1), (t2, x2) = a, b
    n1, n2 = set(re.findall(r"\d+", t1 or "")), set(re.findall(r"\d+", t2 or ""))
    if n1 and n2 and n1 != n2:
        return True
    return _title_containment(t1, t2) < 0.5 and _text_jaccard(x1, x2) < 0.3


def wrong_joins(conn) -> tuple[int, int, list[list[str]]]:
    """(wrongly joined pairs, clusters holding any, examples) of a database."""
    members: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for cluster, title, text in conn.execute("SELECT cluster_id, title, text FROM items"):
        members[cluster].append((title, text))
    pairs, clusters, examples = 0, 0, []
    for group in members.values():
        bad = sum(plainly_different(a, b) for a, b in itertools.combinations(group, 2))
        if bad:
            pairs += bad
            clusters += 1
            examples.append([t or "(untitled)" for t, _ in group[:4]])
    return pairs, clusters, examples


def test_the_rule_itself() -> None:
    assert plainly_different(("RicMac, part II", "Richard keeps on truckin"), ("Test post", "one two three four"))
    assert plainly_different(("Episode 837: tides", "same words here"), ("Episode 838: tides", "same words here"))
    assert not plainly_different(("Ferry halts night crossings", "a b c d e"), ("Ferry halts night crossings today", "x y z"))
    assert not plainly_different(("Storm hits coast", "the storm hit the coast at dawn"), ("Gale", "the storm hit the coast at dawn"))


# ---------------------------------------------------------------- the traps, as fixtures


class Traps:
    """Fixture feeds from tests/data/traps served on 127.0.0.1, fetched into a real
    SQLite file."""

    def __init__(self, tmp_path: Path, server: FeedServer):
        self.tmp_path, self.server = tmp_path, server
        self.store = Store.open(tmp_path / "traps.db")

    def fetch(self, *names: str) -> None:
        for name in names:
            self.server.set(f"/{name}", Route(body=(TRAPS / name).read_bytes()))
        doc = {"settings": FAST, "feeds": [{"url": self.server.url(f"/{n}"), "name": n} for n in names]}
        path = self.tmp_path / "feeds.yaml"
        path.write_text(dump_yaml(doc), encoding="utf-8")
        report = fetch_all(parse_config(path.read_text(encoding="utf-8"), path), self.store)
        assert report.errors == 0, [o.error for o in report.outcomes]

    def clusters(self) -> dict[str, int]:
        """title (or guid, for untitled entries) -> cluster id; titles repeated in a feed get #2, #3."""
        out: dict[str, int] = {}
        for title, key, cluster in self.store.conn.execute("SELECT title, key, cluster_id FROM items ORDER BY id"):
            name = title or key
            while name in out:
                name += "#"
            out[name] = cluster
        return out


@pytest.fixture
def traps(tmp_path: Path, feed_server: FeedServer):
    t = Traps(tmp_path, feed_server)
    try:
        yield t
    finally:
        t.store.close()


def test_links_told_apart_only_by_fragment_are_different_posts(traps: Traps) -> None:
    traps.fetch("fragments.rss")
    clusters = traps.clusters()
    assert len(clusters) == 7
    assert len(set(clusters.values())) == 7, clusters  # every post of the day on its own
    canon = [u for (u,) in traps.store.conn.execute("SELECT canonical_url FROM items")]
    assert all(re.search(r"23\.html#a\d{6}$", u) for u in canon), canon
    assert wrong_joins(traps.store.conn)[0] == 0


def test_a_lone_fragment_or_tracking_parameter_still_meets_its_copy(traps: Traps) -> None:
    traps.fetch("fragment_copy_a.rss", "fragment_copy_b.rss")
    clusters = traps.clusters()
    assert clusters["Aldren ferry operator suspends night crossings"] == clusters["Ferry operator suspends night crossings at Aldren"]


def test_a_link_many_entries_of_one_feed_share_is_no_identity(traps: Traps) -> None:
    traps.fetch("shared_link.atom", "shared_link_other.rss")
    clusters = traps.clusters()
    assert len(clusters) == 4 and len(set(clusters.values())) == 4, clusters
    assert wrong_joins(traps.store.conn)[0] == 0


def test_short_items_must_agree_on_the_word_that_matters(traps: Traps) -> None:
    traps.fetch("short_a.rss", "short_b.rss")
    c = traps.clusters()
    assert c["Surgical Management of Adult Sleep Apnea"] != c["Assessment of Adult Sleep Apnea"]
    rail = "Rail workers vote for three-day strike over driverless trains plan"
    assert c[rail] == c["Rail Workers Vote For 3-Day Strike Over Driverless Trains Plan - Westline Today"]


def test_series_and_templates_inside_one_feed_are_different_items(traps: Traps) -> None:
    traps.fetch("series.rss")
    c = traps.clusters()
    repost = c.pop("Episode 837: Alice Smith on tides#")
    assert repost == c["Episode 837: Alice Smith on tides"]  # a re-post under a new guid joins
    assert len(set(c.values())) == len(c) == 11, c  # every other entry is its own item
    assert wrong_joins(traps.store.conn)[0] == 0


def test_chrome_only_bodies_of_sister_sites_stay_apart(traps: Traps) -> None:
    """Two media groups' sign-in widget and cookie notice, in no rule of the table, as the
    whole body of articles about different events; group A's sites also carry one wire
    story under three headlines, which must still join."""
    names = [f"sister_{g}{i}.rss" for g, i in ("a1", "a2", "a3", "b1", "b2")]
    for name in reversed(names):  # one site at a time, the last one first
        traps.fetch(*names[names.index(name):])
    c = traps.clusters()
    wire = [c.pop(t) for t in ("Harbour breakwater to close for six weeks of repairs",
                               "Breakwater closed to walkers while storm damage is repaired",
                               "Aldren harbour wall repairs to shut promenade")]  # fmt: skip
    assert len(set(wire)) == 1
    assert len(c) == 10 and len(set(c.values())) == 10, c
    assert wrong_joins(traps.store.conn) == (0, 0, [])


# ---------------------------------------------------------------- the rules, as pure functions


def test_chrome_only_bodies_of_sister_sites_stay_apart_fetched_together(traps: Traps) -> None:
    traps.fetch(*[f"sister_{g}{i}.rss" for g, i in ("a1", "a2", "a3", "b1", "b2")])
    assert len(set(traps.clusters().values())) == 11
    assert wrong_joins(traps.store.conn) == (0, 0, [])


def test_fragments_kept_only_where_they_tell_entries_apart() -> None:
    def entry(guid: str, link: str) -> RawEntry:
        return RawEntry(guid, link, f"title {guid}", f"text {guid}", None, None, None)

    items = normalize_entries([entry("1", "http://s.example/d.html#a1"), entry("2", "http://s.example/d.html#a2"),
                               entry("3", "http://s.example/story#comments")], now=_now())  # fmt: skip
    assert [i.canonical_url for i in items] == [
        "http://s.example/d.html#a1", "http://s.example/d.html#a2", "http://s.example/story",
    ]  # fmt: skip
    # without guids the link is the key: posts told apart by the fragment are all kept
    unkeyed = normalize_entries([RawEntry(None, f"http://s.example/d.html#a{i}", "", f"post {i}", None, None, None)
                                 for i in range(3)], now=_now())  # fmt: skip
    assert [i.key for i in unkeyed] == [f"http://s.example/d.html#a{i}" for i in range(3)]


def test_title_rules() -> None:
    def related(a: str, b: str) -> bool:
        return related_titles(title_facts(a), title_facts(b))

    def conflict(a: str, b: str) -> bool:
        return numbers_conflict(title_facts(a), title_facts(b))

    assert related("Episode 837: tides", "EPISODE 837 — Tides!")
    assert related("Bridge to close", "UPDATED: Bridge to close")
    assert related("Teen shot and killed in Chelsea", "15-year-old identified in fatal Chelsea shooting")
    assert related("Teens ID'd in double fatal shooting", "Teen sustained wound: Police")
    assert not related("Episode 837: Alice Smith on tides", "Harbour regulars: the net mender")
    assert not related("Elevated error rates on the booking site", "Delayed ticket emails")
    assert related("", "anything at all")  # an untitled entry says nothing against
    assert conflict("Part 1 of 2", "Part 2 of 2") and conflict("Episode 837", "Episode 838")
    assert conflict("Events calendar: week of June 5", "Events calendar: week of June 12")
    assert not conflict("Week 05", "week 5") and not conflict("No numbers", "Part 2")
    assert not conflict("CBS 58 - Second suspect charged at 37th St", "CBS 58 - Police investigate")
    assert may_be_one_entry("Episode 837: tides", "EPISODE 837 — Tides!")
    assert not may_be_one_entry("Episode 837: Alice on tides", "Episode 838: Bob on tides")


def _index_with(rows: list[tuple[int, int, str, str]]) -> tuple[DedupIndex, Signer]:
    """An index of (item id, cluster id, feed id, title, text) rows, all seen at t=1000."""
    settings = DedupSettings()
    index, signer = DedupIndex(settings), Signer(settings)
    for item_id, cluster, feed, title, text in rows:
        index.add(item_id, cluster, 1000, signer.sign(title, text), facts=EntryFacts(feed, title),
                  paragraphs=paragraph_keys(text))  # fmt: skip
    return index, signer


def test_paragraphs_in_many_clusters_are_common_and_a_story_carried_widely_is_not() -> None:
    notice = "We use cookies to give you the best experience on our sites and to show you offers."
    story = "The northern breakwater will close for six weeks while engineers repair storm damage."
    index, _ = _index_with([
        (1, 1, 1, "Fire at the mill", f"A fire broke out at the old mill.\n{notice}"),
        (2, 2, 2, "Council votes", f"The council voted on the budget.\n{notice}"),
        (3, 3, 3, "School wins", f"The school won the chess title.\n{notice}"),
        (4, 4, 1, "Breakwater to close", story),
        (5, 4, 2, "Breakwater closing", story),
        (6, 4, 3, "Harbour wall repairs", story),
    ])  # fmt: skip
    keys = paragraph_keys(f"{story}\n{notice}")
    common = index.common_paragraphs(keys, 1000, EntryFacts(9, "Harbour news"))
    assert common.tolist() == [False, True]  # the notice (3 clusters), not the story (1 cluster)


def test_a_paragraph_one_feed_carries_under_unrelated_titles_is_its_template() -> None:
    widget = "Sign in or create your free account to keep reading local news from your neighbourhood."
    index, _ = _index_with([(1, 1, 1, "Man charged after stabbing", widget)])
    keys = paragraph_keys(widget)
    assert index.common_paragraphs(keys, 1000, EntryFacts(1, "Skate park approved")).tolist() == [True]
    assert index.common_paragraphs(keys, 1000, EntryFacts(1, "UPDATED: Man charged after stabbing")).tolist() == [False]
    assert index.common_paragraphs(keys, 1000, EntryFacts(2, "Skate park approved")).tolist() == [False]
    index.add(2, 2, 1000, Signer(DedupSettings()).sign("Skate park approved", widget),
              facts=EntryFacts(1, "Skate park approved"), paragraphs=keys)  # fmt: skip
    assert index.common_paragraphs(keys, 1000, EntryFacts(3, "Bakery opens")).tolist() == [True]


def _now():
    from datetime import UTC, datetime

    return datetime(2026, 12, 3, tzinfo=UTC)


# ---------------------------------------------------------------- every real-world file of ../shared


def _real_world_files() -> list[str]:
    lines = (SHARED / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    return [f.split("\t")[0] for f in lines[1:] if f.split("\t")[3] == "real-world"]


def test_real_world_feeds_join_no_plainly_different_posts(tmp_path: Path, feed_server: FeedServer) -> None:
    """The 73 real-world files of ../shared/feeds through the real `aggregator fetch`: no
    cluster joins plainly different posts, and Daring Fireball's Atom and JSON copies of
    each post still join."""
    if not (SHARED / "MANIFEST.tsv").is_file():
        pytest.skip(f"../shared/feeds not present ({SHARED} has no MANIFEST.tsv); CI has it")
    files = _real_world_files()
    assert len(files) >= 70
    for rel in files:
        feed_server.set(f"/{rel}", Route(body=(SHARED / rel).read_bytes()))
    config = tmp_path / "feeds.yaml"
    config.write_text(dump_yaml({"settings": {"http": "off"}, "feeds": [feed_server.url(f"/{r}") for r in files]}))
    db = tmp_path / "real.db"
    run = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(config), "--db", str(db), "fetch"],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stderr
    store = Store.open(db)
    try:
        conn = store.conn
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        assert items >= 1000
        pairs, clusters, examples = wrong_joins(conn)
        assert (pairs, clusters) == (0, 0), examples[:5]
        # Daring Fireball's Atom and JSON feeds carry the same 48 posts: each one story
        by_title: dict[str, set[tuple[str, int]]] = defaultdict(set)
        for url, title, cluster in conn.execute(
            "SELECT f.url, i.title, i.cluster_id FROM items i JOIN feeds f ON f.id = i.feed_id "
            "WHERE f.url LIKE '%DaringFireball%'"
        ):
            by_title[title].add((url.rsplit(".", 1)[-1], cluster))
        shared = {t: m for t, m in by_title.items() if len({f for f, _ in m}) > 1}
        assert len(shared) >= 45
        assert all(len({c for _, c in m}) == 1 for m in shared.values())
        # (the shared RSS copy of Daring Fireball covers 2015-16, the others June 2017)
        assert all({f for f, _ in m} == {"atom", "json"} for m in shared.values())
        multi = conn.execute("SELECT count(*) FROM clusters WHERE size > 1").fetchone()[0]
        assert multi >= 55  # Daring Fireball's 48 and All This's 12 Atom/JSON pairs, less a few
        print(f"real-world feeds: {len(files)} files, {items} items, {multi} multi-item clusters, 0 wrong joins")
    finally:
        store.close()


def test_recluster_rebuilds_the_same_clusters_from_the_traps(traps: Traps) -> None:
    """What was learnt online (common paragraphs, shared links, title rules) is learnt again
    by a recluster, which replays the items in order from the stored text."""
    from aggregator.service.clustering import Clusterer

    traps.fetch(*sorted(p.name for p in TRAPS.iterdir()))

    def partition() -> set[frozenset[int]]:
        groups: dict[int, set[int]] = defaultdict(set)
        for item_id, cluster in traps.store.conn.execute("SELECT id, cluster_id FROM items"):
            groups[cluster].add(item_id)
        return {frozenset(g) for g in groups.values()}

    online = partition()
    assert len(online) < traps.store.conn.execute("SELECT count(*) FROM items").fetchone()[0]
    assert wrong_joins(traps.store.conn)[0] == 0, wrong_joins(traps.store.conn)
    Clusterer(DedupSettings()).recluster(traps.store)
    assert partition() == online
