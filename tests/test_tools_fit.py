"""The database and the terminal output as the tools people already use meet them (issue
#13): Datasette and sqlite-utils as real subprocesses against a database filled by a real
fetch from a local HTTP server (tests/feedserver.py), and the CLI's tables on a
pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from html import escape
from pathlib import Path

import httpx
import pytest
from feedserver import FeedServer, Route

from aggregator.store.database import Store
from aggregator.store.search import search

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime.now(UTC).replace(microsecond=0)


def rss(title: str, entries: list[tuple[str, str, str]]) -> bytes:
    """An RSS 2.0 feed titled `title` of (guid, headline, body) entries, an hour apart."""
    items = "".join(
        f'<item><guid isPermaLink="false">{guid}</guid><title>{escape(headline)}</title>'
        f"<link>https://{guid}.example.com/</link>"
        f"<pubDate>{format_datetime(NOW - timedelta(hours=n + 1), usegmt=True)}</pubDate>"
        f"<description>{escape(body)}</description></item>"
        for n, (guid, headline, body) in enumerate(entries)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{escape(title)}</title>'
        f"<link>https://example.com/</link>{items}</channel></rss>"
    ).encode()


ORCHARD = [
    ("o1", "Apple harvest starts early in the valley",
     "Growers in the valley began picking apples two weeks early after a warm spring."),
    ("o2", "Cider makers expect a record year",
     "The cider presses opened on Monday; one apple variety sold out within hours."),
    ("o3", "Pear blight spreads to the hill farms",
     "Inspectors found the blight on three more farms north of the river."),
]  # fmt: skip
MARKET = [
    ("m1", "Pumpkin prices fall at the weekly market",
     "Stallholders blamed the glut on the long summer and cut prices by a third."),
]  # fmt: skip


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_") and k != "NO_COLOR"}
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def aggregator(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI on folder/feeds.yaml and folder/agg.db."""
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(folder / "feeds.yaml"),
         "--db", str(folder / "agg.db"), *args],
        capture_output=True, text=True, env=env(), timeout=120,
    )  # fmt: skip


def write_config(folder: Path, feeds: list) -> None:
    """feeds.yaml (JSON is YAML: no YAML library needed to write it)."""
    doc = {"settings": {"http": "off"}, "feeds": feeds}
    (folder / "feeds.yaml").write_text(
        json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8"
    )


@pytest.fixture
def fetched(tmp_path: Path, feed_server: FeedServer) -> Path:
    """tmp_path/agg.db after one real `aggregator fetch` of two feeds: the orchard feed
    has no name in feeds.yaml (its own title is shown), the market feed has one."""
    feed_server.set("/orchard.xml", Route(body=rss("Orchard Times", ORCHARD)))
    feed_server.set("/market.xml", Route(body=rss("market-feed-42", MARKET)))
    write_config(tmp_path, [feed_server.url("/orchard.xml"),
                            {"url": feed_server.url("/market.xml"), "name": "Market Desk"}])  # fmt: skip
    run = aggregator(tmp_path, "fetch")
    assert run.returncode == 0, run.stderr
    assert "4 new items" in run.stderr and "0 errors" in run.stderr, run.stderr
    return tmp_path / "agg.db"


@pytest.fixture
def datasette(fetched: Path) -> Iterator[str]:
    """`datasette serve` on the fetched database, on a free port of 127.0.0.1; its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "datasette", "serve", str(fetched), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        seen = []
        for line in proc.stderr:  # uvicorn says where it listens once it is ready
            seen.append(line)
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", line)
            if found:
                break
        else:
            pytest.fail("datasette did not start: " + "".join(seen))
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


def test_datasette_finds_the_search_index(datasette: str) -> None:
    tables = {t["name"]: t for t in httpx.get(f"{datasette}/agg.json", timeout=30).json()["tables"]}
    assert tables["items"]["fts_table"] == "items_fts"
    found = httpx.get(
        f"{datasette}/agg/items.json", params={"_search": "apple", "_shape": "objects"}, timeout=30
    )
    assert found.status_code == 200, found.text
    assert sorted(r["key"] for r in found.json()["rows"]) == ["o1", "o2"]
    # the search box is on the table's page
    page = httpx.get(f"{datasette}/agg/items", timeout=30).text
    assert 'name="_search"' in page


def test_datasette_labels_feed_links_with_the_name_shown(datasette: str) -> None:
    """items.feed_id links to feeds; Datasette labels it from feeds.name, which holds the
    name aggregator shows: the one in feeds.yaml, else the feed's own title."""
    rows = httpx.get(
        f"{datasette}/agg/items.json", params={"_labels": "on", "_shape": "objects"}, timeout=30
    ).json()["rows"]
    labels = {r["key"]: r["feed_id"]["label"] for r in rows}
    assert labels == {
        "o1": "Orchard Times",
        "o2": "Orchard Times",
        "o3": "Orchard Times",
        "m1": "Market Desk",
    }
    page = httpx.get(f"{datasette}/agg/items", timeout=30).text
    assert ">Orchard Times</a>" in page and ">Market Desk</a>" in page
    assert ">None</a>" not in page


def test_sqlite_utils_search_finds_what_aggregator_search_finds(fetched: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "search", str(fetched), "items", "apple", "-c", "key"],
        capture_output=True, text=True, env=env(), timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    keys = [r["key"] for r in json.loads(run.stdout)]
    # ranked like `aggregator search`: the headline match first (the title counts double)
    assert keys == ["o1", "o2"]
    store = Store.open(fetched)
    try:
        ours = [m.id for hit in search(store, "apple", None) for m in hit.matches]
        keyed = dict(store.conn.execute("SELECT id, key FROM items"))
    finally:
        store.close()
    assert [keyed[i] for i in ours] == keys


def _item(c: sqlite3.Connection, item_id: int, title: str, text: str) -> None:
    c.execute(
        """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                              changed_at, content_hash, cluster_id)
           VALUES (?, 1, ?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',
                   '2026-01-01T00:00:00Z', ?, 1)""",
        (item_id, f"k{item_id}", title, text, f"h{item_id}"),
    )


# The FTS5 index's rows; the structure record (id 10) without its first 4 bytes, a cookie
# FTS5 bumps at every configuration change (013 sets `rank`).
INDEX_ROWS = "SELECT id, CASE id WHEN 10 THEN substr(block, 5) ELSE block END FROM items_fts_data ORDER BY id"


def _fill(store: Store) -> None:
    """Two indexed items and one waiting for the index (005)."""
    c = store.conn
    with store.transaction():
        c.execute(
            "INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'a', '2026-01-01T00:00:00Z')"
        )
        c.execute(
            "INSERT INTO clusters (id, representative_id, size, feed_count, created_at) VALUES (1, 1, 3, 1, '2026-01-01T00:00:00Z')"
        )
        _item(c, 1, "Apple harvest", "Early apples in the café.")
        _item(c, 2, "Cider", "One apple variety sold out.")
    assert store.index_search() == 2
    with store.transaction():
        _item(c, 3, "Apple juice", "Waiting for the index.")


def _found(store: Store, *words: str) -> dict[str, list[tuple[int, float]]]:
    return {w: [(m.id, m.score) for h in search(store, w, None) for m in h.matches] for w in words}


def test_an_existing_database_keeps_its_search_index(older_schema, tmp_path: Path) -> None:
    """A database from before 013 gets a definition the tools detect with the very same
    index (not rebuilt: its rows are byte for byte the same), and finds what a new
    database finds, ranked alike; items still waiting for the index are indexed as before."""
    import sqlite_utils

    db, old = older_schema(11)
    store = Store.open(db, migrations_dir=old)
    try:
        _fill(store)
        rows = store.conn.execute(INDEX_ROWS).fetchall()
        assert sqlite_utils.Database(store.conn)["items"].detect_fts() is None
    finally:
        store.close()
    fresh = Store.open(tmp_path / "fresh.db")
    try:
        _fill(fresh)
        expected = _found(fresh, "apple", "cafe", "juice")
    finally:
        fresh.close()
    store = Store.open(db)
    c = store.conn
    try:
        assert sqlite_utils.Database(c)["items"].detect_fts() == "items_fts"
        assert c.execute(INDEX_ROWS).fetchall() == rows
        assert [r[0] for r in c.execute("SELECT item_id FROM search_pending")] == [3]
        c.execute("INSERT INTO items_fts (items_fts) VALUES ('integrity-check')")
        found = _found(store, "apple", "cafe", "juice")  # indexes the waiting item first
        assert found == expected
        assert sorted(i for i, _ in found["apple"]) == [1, 2, 3] and found["cafe"][0][0] == 1
        assert c.execute("SELECT count(*) FROM search_pending").fetchone()[0] == 0
        c.execute("INSERT INTO items_fts (items_fts) VALUES ('integrity-check')")
    finally:
        store.close()


def test_an_existing_database_stores_the_feed_names_shown(older_schema) -> None:
    """013 fills feeds.name with the name shown for feeds stored before it; feeds.yaml's
    name moves to configured_name, and the next sync changes nothing."""
    db, old = older_schema(11)
    store = Store.open(db, migrations_dir=old)
    try:
        with store.transaction():
            store.conn.executemany(
                "INSERT INTO feeds (url, name, title, created_at) VALUES (?, ?, ?, '2026-01-01T00:00:00Z')",
                [("https://a.example/", "Named", "Own A"), ("https://b.example/", None, "Own B"),
                 ("https://c.example/", None, None)],
            )  # fmt: skip
    finally:
        store.close()
    store = Store.open(db)
    try:
        rows = store.conn.execute(
            "SELECT url, name, configured_name FROM feeds ORDER BY id"
        ).fetchall()
        assert rows == [("https://a.example/", "Named", "Named"), ("https://b.example/", "Own B", None),
                        ("https://c.example/", "https://c.example/", None)]  # fmt: skip
        # the feed's title changes: a feed without a configured name shows the new one
        store.conn.execute("UPDATE feeds SET title = 'Renamed' WHERE url LIKE 'https://_.example/'")
        names = [r[0] for r in store.conn.execute("SELECT name FROM feeds ORDER BY id")]
        assert names == ["Named", "Renamed", "Renamed"]
        assert [f.name for f in store.feeds()] == ["Named", None, None]
        assert [f.display_name for f in store.feeds()] == ["Named", "Renamed", "Renamed"]
    finally:
        store.close()


def test_renaming_a_feed_in_feeds_yaml_renames_its_label(fetched: Path) -> None:
    """A name added to feeds.yaml replaces the feed's own title as the label; removing it
    brings the title back (sync_feeds writes configured_name, triggers keep name)."""
    folder = fetched.parent
    config = json.loads((folder / "feeds.yaml").read_text(encoding="utf-8"))
    orchard, market = config["feeds"]
    write_config(folder, [{"url": orchard, "name": "Apple Watch"}, market["url"]])
    assert aggregator(folder, "feeds", "list").returncode == 0
    with sqlite3.connect(fetched) as conn:
        names = conn.execute("SELECT name, configured_name FROM feeds ORDER BY id").fetchall()
    assert names == [("Apple Watch", "Apple Watch"), ("market-feed-42", None)]


# The CLI with PyYAML made unimportable (Datasette, a test dependency, installs it here).
WITHOUT_PYYAML = (
    "import sys; sys.modules['yaml'] = None; from aggregator.cli import main; sys.exit(main())"
)


def without_pyyaml(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_PYYAML, "--config", str(folder / "feeds.yaml"),
         "--db", str(folder / "agg.db"), *args],
        capture_output=True, text=True, env=env(), timeout=120,
    )  # fmt: skip


def test_one_yaml_library_reads_feeds_yaml(tmp_path: Path, feed_server: FeedServer) -> None:
    """ruamel.yaml alone: a fetch and `feeds list` work without PyYAML, a broken file
    still names its line, and YAML 1.2 keeps a name like NO as written (PyYAML read it
    as false)."""
    feed_server.set("/market.xml", Route(body=rss("Market", MARKET)))
    config = tmp_path / "feeds.yaml"
    config.write_text(
        f"feeds:\n  - url: {feed_server.url('/market.xml')}\n    name: NO\n", encoding="utf-8"
    )
    fetched = without_pyyaml(tmp_path, "fetch")
    assert fetched.returncode == 0 and "1 new item" in fetched.stderr, fetched.stderr
    (feed,) = json.loads(without_pyyaml(tmp_path, "feeds", "list", "--json").stdout)
    assert feed["name"] == "NO"
    config.write_text(
        "feeds:\n  - url: https://a.example/\n\t- https://b.example/\n", encoding="utf-8"
    )
    broken = without_pyyaml(tmp_path, "feeds", "list")
    assert broken.returncode != 0
    assert f"{config}:3: invalid YAML: found a tab character" in broken.stderr, broken.stderr


def on_terminal(folder: Path, *args: str) -> list[str]:
    """The CLI's output lines on a pseudo-terminal (so it prints aligned tables)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(folder / "feeds.yaml"),
         "--db", str(folder / "agg.db"), *args],
        stdin=follower, stdout=follower, stderr=subprocess.DEVNULL, env={**env(), "NO_COLOR": "1"},
    )  # fmt: skip
    os.close(follower)
    out = b""
    while select.select([leader], [], [], 60)[0]:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=60) == 0
    os.close(leader)
    return out.decode("utf-8").replace("\r", "").splitlines()


def columns(text: str) -> int:
    """Terminal columns by Unicode's own tables (not the code under test's): 2 for a wide
    East Asian character, 0 for a combining mark."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)  # fmt: skip


def starts(line: str, text: str) -> int:
    """The terminal column where `text` starts in `line`."""
    assert text in line, (text, line)
    return columns(line[: line.index(text)])


TOKYO = "東京ニュース"
# Thai tone marks are combining characters NFC cannot fold into their letter (as it folds
# e + U+0301 into é): six characters, five columns
THAI = "ข่าวสด"
BLOSSOM = (
    "The cherry trees along the river burst into flower on Tuesday, a week earlier than "
    "the long-term average, and the city expects a million visitors over the weekend as "
    "the parks extend their opening hours and the ferry adds evening sailings for the crowds."
)
LONG_CJK = (
    "東京で桜が満開、週末は見頃を迎え川沿いの公園は夜まで開園し渡し船も夕方の便を増やす予定です"
)


def test_tables_align_wide_and_combining_characters(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    """`feeds list` and `clusters show` on a terminal: every column starts where its header
    does, whatever the display width of the cells before it; a cell cut at 70 columns
    (a long CJK headline) stays within them."""
    feed_server.set("/tokyo.xml", Route(body=rss(TOKYO, [("t1", LONG_CJK, BLOSSOM)])))
    feed_server.set("/thai.xml", Route(body=rss(THAI, [("c1", "ข่าวสด: cherry blossom", BLOSSOM)])))
    feed_server.set(
        "/plain.xml", Route(body=rss("Plain Post", [("p1", "Cherry trees flower early", BLOSSOM)]))
    )
    write_config(tmp_path, [feed_server.url(p) for p in ("/tokyo.xml", "/thai.xml", "/plain.xml")])
    assert aggregator(tmp_path, "fetch").returncode == 0
    feed_server.set("/thai.xml", Route(status=500, body=b"down"))  # an error to show after the name
    aggregator(tmp_path, "fetch")

    header, *rows = on_terminal(tmp_path, "feeds", "list")
    assert len(rows) == 3 and any(TOKYO in r for r in rows)
    (thai,) = [r for r in rows if THAI in r]
    assert starts(thai, "HTTP 500") == starts(header, "LAST ERROR")
    for row in rows:
        assert starts(row, "ok" if THAI not in row else "error") == starts(header, "STATUS")

    (cluster,) = json.loads(
        aggregator(tmp_path, "clusters", "list", "--since", "all", "--json").stdout
    )
    assert cluster["size"] == 3
    lines = on_terminal(tmp_path, "clusters", "show", str(cluster["id"]))
    header = next(i for i, line in enumerate(lines) if line.startswith("ID"))
    head, members = lines[header], lines[header + 1 :]
    assert len(members) == 3
    for member in members:
        link = re.search(r"https://\w+\.example\.com/", member).group()
        assert starts(member, link) == starts(head, "URL")
        (title,) = [t for t in ("東京で", "ข่าวสด:", "Cherry trees") if t in member]
        assert starts(member, title) == starts(head, "TITLE")
    (tokyo,) = [m for m in members if TOKYO in m]
    cut = tokyo[tokyo.index("東京で") : tokyo.index("https://")].rstrip()
    assert cut.endswith("…") and 68 <= columns(cut) <= 70
