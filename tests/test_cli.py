"""The real `aggregator` command as a subprocess, against the local feed server. The
tests of a fetched database run on SQLite and on PostgreSQL (conftest.py: `db_target`);
the others read only feeds.yaml, or are about SQLite's file (its folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from feedserver import FeedServer, Route
from test_search_stats import sql

from aggregator.config import load_config

REPO = Path(__file__).resolve().parents[1]


def run(cfg: Path, db: Path | str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "aggregator", "--config", str(cfg)]
    if db is not None:
        cmd += ["--db", str(db)]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, env=env, cwd=cfg.parent
    )


def write_config(tmp_path: Path, feeds_yaml: str) -> Path:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(
        "# my feeds\nsettings:\n  timeout: 2s\n  parse_workers: 0\n  interval: 1h\n" + feeds_yaml,
        encoding="utf-8",
    )
    return cfg


@pytest.fixture
def fetched(tmp_path: Path, feed_server: FeedServer, data_dir: Path, db_target: Path | str):
    """A config of one good and one missing feed, after one real `aggregator fetch` into
    an SQLite file or a PostgreSQL database."""
    feed_server.serve_file("/news.xml", data_dir / "rss20.xml")
    good, bad = feed_server.url("/news.xml"), feed_server.url("/missing.xml")
    cfg = write_config(
        tmp_path,
        f"feeds:\n  - url: {good}\n    name: Good News\n    tags: [local, daily]\n  - {bad}\n",
    )
    db = db_target
    result = run(cfg, db, "fetch")
    return cfg, db, good, bad, result


def test_fetch_prints_per_feed_summary_and_exits_0_despite_a_failure(fetched) -> None:
    cfg, db, good, bad, result = fetched
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == ["status", "new", "updated", "unchanged", "feed", "message"]
    rows = [line.split("\t") for line in lines[1:]]
    assert rows[0] == ["new", "4", "0", "0", "Good News", ""]
    assert rows[1][:5] == ["error", "0", "0", "0", bad]
    assert "HTTP 404" in rows[1][5]
    assert len(rows) == 2
    assert "2 feeds in" in result.stderr
    assert "4 new items" in result.stderr and "1 error\n" in result.stderr
    assert sql(db, "SELECT count(*) FROM items") == [(4,)]


def test_feeds_list_json(fetched) -> None:
    cfg, db, good, bad, _ = fetched
    result = run(cfg, db, "feeds", "list", "--json")
    assert result.returncode == 0, result.stderr
    feeds = json.loads(result.stdout)
    assert isinstance(feeds, list) and len(feeds) == 2
    keys = {"id", "url", "name", "tags", "active", "status", "last_fetch", "last_error",
            "error_count", "next_fetch", "moved_to", "items"}  # fmt: skip
    assert all(set(f) == keys for f in feeds)
    by_url = {f["url"]: f for f in feeds}
    g, b = by_url[good], by_url[bad]
    assert (g["name"], g["tags"], g["active"], g["status"], g["items"]) == (
        "Good News", ["local", "daily"], True, "ok", 4,
    )  # fmt: skip
    assert (g["error_count"], g["last_error"], g["moved_to"]) == (0, None, None)
    assert g["last_fetch"].endswith("Z") and g["next_fetch"].endswith("Z")
    assert (b["status"], b["error_count"], b["items"]) == ("error", 1, 0)
    assert "HTTP 404" in b["last_error"]
    assert b["name"] is None  # never fetched successfully: no title either
    assert isinstance(g["id"], int)


def test_feeds_export_takes_unnamed_feeds_titles_from_the_database(fetched) -> None:
    """OPML's text for a feed feeds.yaml does not name: the feed's own title, as stored."""
    cfg, db, good, bad, _ = fetched
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("    name: Good News\n", ""), encoding="utf-8")
    result = run(cfg, db, "feeds", "export")
    assert result.returncode == 0, result.stderr
    feeds = {o.get("xmlUrl"): o for o in ET.fromstring(result.stdout.encode()).iter("outline") if o.get("xmlUrl")}
    assert feeds[good].get("text") == "Example News & Views"
    assert feeds[bad].get("text") == bad  # never fetched: nothing but its URL


def test_feeds_export_is_opml(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        "feeds:\n"
        "  - url: https://a.example.com/feed\n    name: A & B\n    tags: [news]\n"
        "  - https://c.example.org/rss\n",
    )
    result = run(cfg, tmp_path / "agg.db", "feeds", "export")
    assert result.returncode == 0, result.stderr
    root = ET.fromstring(result.stdout.encode())
    assert (root.tag, root.get("version")) == ("opml", "2.0")
    feeds = {o.get("xmlUrl"): o for o in root.iter("outline") if o.get("xmlUrl")}
    assert set(feeds) == {"https://a.example.com/feed", "https://c.example.org/rss"}
    assert feeds["https://a.example.com/feed"].get("text") == "A & B"
    folder = root.find("body/outline[@text='news']")
    assert (
        folder is not None and folder.find("outline").get("xmlUrl") == "https://a.example.com/feed"
    )
    assert not (tmp_path / "agg.db").exists()  # export reads only the config


def test_feeds_import_adds_to_config(tmp_path: Path, data_dir: Path) -> None:
    cfg = write_config(tmp_path, "feeds:\n  - https://news.example.com/world.rss\n")
    result = run(cfg, tmp_path / "agg.db", "feeds", "import", str(data_dir / "subscriptions.opml"))
    assert result.returncode == 0, result.stderr
    added = [
        line.split("\t")[1] for line in result.stdout.splitlines() if line.startswith("added\t")
    ]
    assert added == [
        "https://loose.example.org/feed.xml",
        "https://europa.example.eu/rss",
        "http://notes.example.net/atom.xml",
        "https://code.example.dev/index.xml",
    ]
    assert "already followed\thttps://news.example.com/world.rss" in result.stdout
    assert "skipped\tgopher://gopher.example.org/feed" in result.stdout
    assert "4 added" in result.stderr
    config = load_config(cfg)
    assert [f.url for f in config.feeds] == ["https://news.example.com/world.rss", *added]
    assert config.settings.timeout == 2  # settings untouched
    assert cfg.read_text(encoding="utf-8").startswith("# my feeds\n")  # comments kept


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("settings:\n  timeout: 2s\n  colour: blue\n", 3),
        ("feeds:\n  - https://a.example.com/\n  - [oops\n", None),
        ("feeds:\n  - https://a.example.com/\n  - https://a.example.com/\n", 3),
    ],
    ids=["unknown-key", "bad-yaml", "duplicate"],
)
def test_broken_config_exit_2_one_line(tmp_path: Path, text: str, line: int | None) -> None:
    cfg = tmp_path / "feeds.yaml"
    cfg.write_text(text, encoding="utf-8")
    result = run(cfg, tmp_path / "agg.db", "fetch")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    prefix = f"aggregator: {cfg}:" + (f"{line}:" if line else "")
    assert lines[0].startswith(prefix), lines[0]
    assert not (tmp_path / "agg.db").exists()


def test_missing_db_folder_is_created(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.set("/f", Route(body=b"<rss/>"))
    cfg = write_config(tmp_path, f"feeds:\n  - {feed_server.url('/f')}\n")
    # a read-only command makes no folder for an empty database: it says what to do
    listed = run(cfg, tmp_path / "no" / "agg.db", "clusters", "list")
    assert listed.returncode == 2 and "does not exist" in listed.stderr and "aggregator fetch" in listed.stderr
    assert not (tmp_path / "no").exists()
    result = run(cfg, tmp_path / "no" / "agg.db", "fetch")  # the first fetch makes it
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "no" / "agg.db").is_file() and feed_server.hits("/f") == 1
