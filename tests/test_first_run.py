"""The first run, as a new user has it: a config and a database outside the checkout,
feeds fetched when they are added, /healthz telling the truth (a real daemon process)."""

from __future__ import annotations

import sqlite3

from feedserver import FeedServer, Route
from test_daemon import FAST, Rig, story, wait_for

from aggregator.config import dump_yaml


def test_config_and_database_outside_the_checkout(rig: Rig) -> None:
    """`--config ~/x/feeds.yaml --db ~/y/d.db`, no db/ folder beside the config: the digest
    is served at once and its file written under x/db/ (created), the database under y/
    (created too)."""
    quay = rig.serve("/quay.xml", "Quay Times", [story("bridge", "q1")])
    (rig.tmp / "x").mkdir()
    rig.cfg = rig.tmp / "x" / "feeds.yaml"
    rig.db = rig.tmp / "y" / "deeper" / "d.db"
    settings = {k: v for k, v in FAST.items()}
    rig.cfg.write_text(dump_yaml({"settings": {**settings, "http": f"127.0.0.1:{rig.port}"}, "feeds": [quay]}))
    daemon = rig.start_serving()
    wait_for("the story in the served digest", lambda: b"Harbor Street" in rig.http.get("/digest.atom").content)
    wait_for("the digest file", lambda: (rig.tmp / "x" / "db" / "digest.xml").is_file())
    assert rig.db.is_file()
    assert "cannot write the digest" not in daemon.log
    assert daemon.stop() == 0


def test_new_feeds_are_fetched_at_once_also_when_added_to_a_running_daemon(rig: Rig) -> None:
    a = rig.serve("/a.xml", "A", [story("bridge", "a1")])
    b = rig.serve("/b.xml", "B", [story("rail_strike", "b1")])
    rig.write_config([a], interval="30m")
    daemon = rig.start_serving()
    wait_for("feed a fetched right away", lambda: rig.server.hits("/a.xml") == 1)
    rig.write_config([a, b], interval="30m")  # a feed added to the running daemon
    wait_for("feed b fetched right away", lambda: rig.server.hits("/b.xml") == 1, timeout=30)
    assert rig.server.hits("/a.xml") == 1  # and the first one is not fetched again early
    assert daemon.stop() == 0


def test_run_once_fetches_feeds_a_daemon_scheduled_for_later(rig: Rig) -> None:
    """An earlier version spread first fetches over the interval: `run --once` must still
    fetch a feed that was never fetched, as its help promises ("every due or new feed")."""
    a = rig.serve("/a.xml", "A", [story("bridge", "a1")])
    rig.write_config([a], interval="30m")
    assert rig.cli("feeds", "list").returncode == 0  # creates the database and the feed row
    conn = sqlite3.connect(rig.db)
    conn.execute("UPDATE feeds SET next_fetch_at = '2999-01-01T00:00:00Z', last_fetch_at = NULL")
    conn.commit()
    conn.close()
    once = rig.start("--once")
    assert once.wait(60) == 0, once.log
    assert rig.server.hits("/a.xml") == 1


def test_healthz_is_degraded_while_a_feed_fails(rig: Rig, feed_server: FeedServer) -> None:
    good = rig.serve("/good.xml", "Good", [story("bridge", "g1")])
    feed_server.set("/bad.xml", Route(status=500, body=b"boom"))
    rig.write_config([good, feed_server.url("/bad.xml")])
    daemon = rig.start_serving()
    health = wait_for("both feeds in /healthz",
                      lambda: (h := rig.health())["feeds_failing"] == 1 and h["feeds_ok"] == 1 and h)  # fmt: skip
    assert health["status"] == "degraded"
    assert daemon.stop() == 0
