"""The story tier's placement (aggregator/dedup/stories.py, aggregator/service/stories.py):
the rule on hand-made reports, the index's rebuild from stored vectors, and the real
`aggregator fetch` and `recluster` on the bundled demo feeds, on both backends: online
placement across processes equals a recluster, and the demo's other coverage is found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from feedserver import FeedServer, Route

from aggregator.dedup import stories
from aggregator.dedup.stories import StoryIndex, StoryVector, story_terms
from aggregator.demo import OUTLETS, feed_template, fill_dates
from aggregator.store.database import Store
from aggregator.timeutil import utcnow

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0

# Unrelated local news, to give the IDF something to learn from, as any window holds: other
# fires, other news from Dunmore (the town and the word "fire" alone make no story).
FILLER = [
    ("Dunmore council approves parking plan", "Dunmore council voted on Tuesday to add 200 spaces near the station."),
    ("Barn fire in Castlebrook", "Crews put out a barn fire in Castlebrook on Monday; the animals were saved."),
    ("Fire service recruits volunteers", "The county fire service wants 40 volunteer firefighters by summer."),
    ("Dunmore market wins award", "The Dunmore farmers' market was named the best in the region."),
    ("Library extends opening hours", "The town library will open on Sundays from March, the council said."),
    ("New bakery draws queues", "A bakery on Chandlers Row sold out of bread by nine on its first morning."),
    ("Choir wins national prize", "The Northfield choir won the national competition with a folk programme."),
    ("Rowing club gets boathouse", "Lakeside rowing club opened its new boathouse after two years of fundraising."),
    ("Inflation eases", "Inflation eased to 3.1 percent in May as fuel prices fell, the statistics office said."),
    ("Roadworks on coast road", "Drivers face delays at Brenn junction while the coast road is resurfaced."),
    ("School celebrates anniversary", "Skerry Point school marked 150 years with a parade and an exhibition."),
    ("Seal pup rescued", "Volunteers returned a seal pup to the sea after it was found on a beach."),
    ("Fish market reopens", "The fish market reopened after roof repairs that took most of the winter."),
    ("Concerts on the pier", "Summer concerts return to the lake pier with twelve evenings of music."),
    ("Cycle path approved", "A cycle path along the old railway line was approved by the planning board."),
    ("Wind farm decision due", "The minister promised a decision on the coastal wind farm by the autumn."),
]
FIRE_A = ("Warehouse fire in Dunmore: Okafor brothers rescued from the roof",
          "Firefighters rescued Daniel and Samuel Okafor from the roof of the Harland timber warehouse in "
          "Dunmore on Tuesday night. The blaze spread along Quarry Lane and closed the Dunmore ring road.")  # fmt: skip
FIRE_B = ("Okafor brothers saved as Harland warehouse burns",
          "Two brothers, Samuel and Daniel Okafor, were lifted from the roof of the burning Harland timber "
          "warehouse on Quarry Lane, Dunmore, crews said. The ring road stayed shut overnight.")  # fmt: skip
OTHER_FIRE = ("Kitchen fire at Dunmore cafe, no one hurt",
              "A fire in the kitchen of the Bluebell cafe on Market Street in Dunmore was put out by staff "
              "before crews arrived on Tuesday. Owner Priya Nandakumar thanked her customers.")  # fmt: skip


def filled(**kw) -> StoryIndex:
    index = StoryIndex(72 * HOUR, 0.15, **kw)
    for n, (title, text) in enumerate(FILLER, 100):
        index.place(n, 900 + n, 0.0, story_terms(title, text))
    return index


def test_reports_of_one_event_in_other_words_share_a_story_and_another_event_does_not() -> None:
    index = filled()
    first = index.place(1, 1, 10 * HOUR, story_terms(*FIRE_A))
    second = index.place(2, 2, 12 * HOUR, story_terms(*FIRE_B))
    other = index.place(3, 3, 11 * HOUR, story_terms(*OTHER_FIRE))
    assert first.story_id == 1 and first.score is None
    assert second.story_id == 1 and second.score is not None and second.score >= 0.15
    assert other.story_id == 3  # the same town, the same night, another fire


def test_one_feeds_posts_never_link_and_a_large_time_gap_never_joins() -> None:
    index = filled()
    index.place(1, 1, 10 * HOUR, story_terms(*FIRE_A))
    assert index.place(2, 1, 12 * HOUR, story_terms(*FIRE_B)).story_id == 2  # same feed: a series
    late = filled()
    late.place(1, 1, 10 * HOUR, story_terms(*FIRE_A))
    assert late.place(2, 2, 10 * HOUR + 73 * HOUR, story_terms(*FIRE_B)).story_id == 2


def test_a_story_does_not_drift_link_by_link(monkeypatch: pytest.MonkeyPatch) -> None:
    """C matches B well and A hardly at all: C stays out of A and B's story; without the
    chain guard it would join."""
    a = ("Dunmore mayor Elena Varga opens the new bridge", "Mayor Elena Varga cut the ribbon on the Tollan bridge.")
    b = ("Tollan bridge opening: Varga praises engineers from Castlebrook",
         "The Tollan bridge opened on Monday; Elena Varga thanked the Castlebrook engineers Henrik Olsen and Ruth Abebe.")  # fmt: skip
    c = ("Castlebrook engineers Henrik Olsen and Ruth Abebe win design award",
         "Henrik Olsen and Ruth Abebe of Castlebrook won the national design award for a stadium roof.")  # fmt: skip

    def run() -> list[int]:
        index = filled()
        return [index.place(n, n, HOUR * n, story_terms(*t)).story_id for n, t in enumerate((a, b, c), 1)]

    guarded = run()
    assert guarded[:2] == [1, 1] and guarded[2] == 3
    monkeypatch.setattr(stories, "CHAIN_GUARD", 0.0)
    assert run() == [1, 1, 1]


def placements(index: StoryIndex, start: int, events: list[tuple[str, str]], feeds: int) -> list[tuple]:
    out = []
    for n, (title, text) in enumerate(events, start):
        p = index.place(n, n % feeds, n * 600.0, story_terms(title, text))
        out.append((n, p.story_id, p.score, p.vector))
    return out


EVENTS = [*FILLER, FIRE_A, FIRE_B, OTHER_FIRE] * 3


def test_an_index_loaded_from_stored_vectors_continues_as_the_one_that_placed() -> None:
    """What a restarted daemon does: add() the stored rows in id order, then place more."""
    online = StoryIndex(window=6 * HOUR, threshold=0.15, idf_clusters=20)
    before = placements(online, 1, EVENTS, feeds=4)
    after_online = placements(online, 1000, EVENTS, feeds=4)
    loaded = StoryIndex(window=6 * HOUR, threshold=0.15, idf_clusters=20)
    for n, story, _, vector in before:
        loaded.add(n, story, n % 4, n * 600.0, StoryVector.from_stored(*vector.to_stored()))
    after_loaded = placements(loaded, 1000, EVENTS, feeds=4)
    assert [(n, s) for n, s, *_ in after_loaded] == [(n, s) for n, s, *_ in after_online]
    assert any(s != n for n, s, *_ in after_online)  # some joined: the comparison means something
    assert [round(x[2] or 0, 4) for x in after_loaded] == [round(x[2] or 0, 4) for x in after_online]


def test_expiry_bounds_the_index_and_changes_no_decision() -> None:
    """Thousands of clusters through a short window: the buckets left behind are dropped,
    and every placement equals that of an index that keeps everything."""
    events = EVENTS * 30

    def run(retention: float | None) -> tuple[list[int], int]:
        index = StoryIndex(window=2 * HOUR, threshold=0.15, retention=retention)
        return [p[1] for p in placements(index, 1, events, feeds=5)], len(index)

    (kept, size_all), (expired, size) = run(1e12), run(None)
    assert expired == kept and len(set(kept)) < len(kept)
    assert size_all == len(events) and size <= 36  # at most 3 buckets of 2 h, a cluster every 10 minutes


def test_a_backlog_finds_its_neighbours_whatever_the_order_it_arrives_in() -> None:
    """A feed's backlog comes after newer clusters: its clusters still meet those of their
    own time (retention: the copy tier's 14 days)."""
    index = filled(retention=14 * 86400)
    index.place(1, 1, 100 * HOUR, story_terms(*FIRE_B))
    index.place(2, 2, 300 * HOUR, story_terms("Inflation eases again", "Prices rose 2.9 percent in June."))
    assert index.place(3, 3, 98 * HOUR, story_terms(*FIRE_A)).story_id == 1
    assert index.place(4, 4, 400 * HOUR, story_terms(*FIRE_A)).story_id == 4  # 300 h apart


def test_a_lone_cluster_moves_when_another_feed_brings_a_matching_headline() -> None:
    index = filled()
    index.place(1, 1, 10 * HOUR, story_terms(*FIRE_A))
    # a short item of feed 2 that matches nothing yet: its own story
    assert index.place(2, 2, 11 * HOUR, story_terms("Ring road closed", "The ring road is shut.")).story_id == 2
    assert not index.may_move(2, 2, title=7)  # same feed
    assert index.may_move(2, 3, title=7)
    moved = index.place_again(2, 3, story_terms(*FIRE_B))
    assert moved is not None and moved.story_id == 1 and index.story_of(2) == 1
    assert not index.may_move(1, 3, title=8)  # story 1 now holds two clusters: it stays


# ---------------------------------------------------------------- the real CLI


def cli(cfg: Path, db: Path | str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    done = subprocess.run([sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), *args],
                          capture_output=True, text=True, timeout=180, cwd=ROOT, env=env)  # fmt: skip
    assert done.returncode == 0, (args, done.stderr)
    return done.stderr + done.stdout


def query(db: Path | str, sql: str) -> list[tuple]:
    store = Store.open(db)
    try:
        return store.conn.execute(sql).fetchall()
    finally:
        store.close()


def stories_by_title(db: Path | str) -> dict[str, int]:
    return dict(query(db, "SELECT i.title, c.story_id FROM items i JOIN clusters c ON c.id = i.cluster_id"))


def story_partition(db: Path | str) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for title, story in stories_by_title(db).items():
        groups.setdefault(story, set()).add(title)
    return {frozenset(g) for g in groups.values()}


def test_demo_feeds_online_across_processes_equals_recluster(
    tmp_path: Path, feed_server: FeedServer, db_target: Path | str
) -> None:
    now = utcnow()
    lines = ["settings:", "  http: 'off'", "feeds:"]
    for outlet in OUTLETS:
        body = fill_dates(feed_template(outlet.file), now, atom=outlet.file.endswith(".atom"))
        feed_server.set(f"/{outlet.file}", Route(body=body.encode()))
        lines += [f"  - url: {feed_server.url(outlet.file)}", f"    name: {outlet.name}"]
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    # three processes, each placing some outlets' clusters on top of the stored ones
    for names in (OUTLETS[:2], OUTLETS[2:4], OUTLETS[4:]):
        for outlet in names:
            assert "0 errors" in cli(cfg, db_target, "fetch", "--feed", outlet.name)
    online = story_partition(db_target)
    titles = stories_by_title(db_target)
    council = "Regional council passes budget with money for Eastgate tram extension"
    assert titles["Opinion: the valley needs its tram, not another study"] == titles[council]
    storm = titles["Storm Idris: flood warnings issued for the Aldren coast"]
    assert titles["Coastline Radio to broadcast storm updates through the night"] == storm
    # one town's news is not one story: the ferry's engine failure and the storm stay apart
    assert titles["Aldren ferry operator suspends night crossings after engine failure"] != storm
    # a library is not a story: two of them on one day stay apart
    assert titles["Northfield library extends opening hours"] != titles[
        "Lighthouse keeper's cottage to become a maritime library"]  # fmt: skip
    cli(cfg, db_target, "recluster")
    assert story_partition(db_target) == online
    [(scored,)] = query(db_target, "SELECT count(*) FROM clusters WHERE story_id != id AND story_score >= 0.15")
    [(firsts,)] = query(db_target, "SELECT count(*) FROM clusters WHERE story_id = id AND story_score IS NULL")
    [(total,)] = query(db_target, "SELECT count(*) FROM clusters")
    assert scored >= 2 and scored + firsts == total


def test_stories_off_keeps_every_cluster_its_own_story(tmp_path: Path, feed_server: FeedServer) -> None:
    now = utcnow()
    lines = ["settings:", "  http: 'off'", "  stories: {enabled: false}", "feeds:"]
    for outlet in OUTLETS:
        body = fill_dates(feed_template(outlet.file), now, atom=outlet.file.endswith(".atom"))
        feed_server.set(f"/{outlet.file}", Route(body=body.encode()))
        lines.append(f"  - url: {feed_server.url(outlet.file)}")
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    db = tmp_path / "off.db"
    cli(cfg, db, "fetch")
    rows = query(db, "SELECT id, story_id, story_terms FROM clusters")
    assert len(rows) > 20 and all(cid == story and terms is None for cid, story, terms in rows)
