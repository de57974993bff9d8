"""The read path on PostgreSQL: search's query language translated to tsquery (table
driven, each row checked against SQLite's FTS5 on the same items), bad queries, ranking
over a few hundred items next to SQLite's, and every read command's output on the same
fetched feeds compared with SQLite's. The tests of each command in tests/test_search_stats.py
and tests/test_cli.py run on both backends too (fixture `db_target`)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from feedserver import FeedServer, Route
from pgserver import PostgresServer

from aggregator.demo import OUTLETS, feed_template, fill_dates
from aggregator.store.database import Store
from aggregator.store.search import SearchError, fts_query, match_condition, search
from aggregator.store.search_postgres import parse, snippet, strings, to_tsquery
from aggregator.timeutil import utcnow

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- translation (pure)


def words(text: str) -> tuple[str, ...]:
    """Lexemes as the database makes them, near enough for ASCII test queries."""
    return tuple(w.lower() for w in re.split(r"[\W_]+", text) if w)


def translated(query: str) -> str | None:
    tree = parse(fts_query(query))
    return to_tsquery(tree, {s: words(s) for s in strings(tree)})


@pytest.mark.parametrize(("query", "tsquery"), [
    ("strike", "'strike'"),
    ("rail strike", "( 'rail' & 'strike' )"),  # plain words: all of them
    ("don't", "( 'don':A <-> 't':A | 'don':B <-> 't':B )"),  # a phrase, in one column
    ('"tea room"', "( 'tea':A <-> 'room':A | 'tea':B <-> 'room':B )"),
    ("bridg*", "'bridg':*"),
    ('"tea ro"*', "( 'tea':A <-> 'ro':*A | 'tea':B <-> 'ro':*B )"),
    ("title:strike", "'strike':A"),
    ("text:strike", "'strike':B"),
    ("-title:strike", "'strike':B"),
    ("{title text}:strike", "'strike'"),
    ("title:(strike OR fire)", "( 'strike':A | 'fire':A )"),
    ("strike NOT dock", "( 'strike' & !'dock' )"),
    ("harbour OR rail strike", "( 'harbour' | ( 'rail' & 'strike' ) )"),  # side by side binds tightest
    ("fire NOT maps rescued", "( 'fire' & !( 'maps' & 'rescued' ) )"),
    ("strike AND workers OR fire", "( ( 'strike' & 'workers' ) | 'fire' )"),
    ("a NOT b AND c", "( ( 'a' & !'b' ) & 'c' )"),
    ("(rail OR dock) workers", "( ( 'rail' | 'dock' ) & 'workers' )"),  # FTS5 wants an AND here
    ("NEAR(a b, 0)", "( 'a':A <1> 'b':A | 'b':A <1> 'a':A | 'a':B <1> 'b':B | 'b':B <1> 'a':B )"),
    ('title:NEAR("a b" c, 0)', "( ( 'a':A <-> 'b':A ) <1> 'c':A | 'c':A <1> ( 'a':A <-> 'b':A ) )"),
    ('"!!!" strike', "'strike'"),  # a phrase without words is left out of parts side by side
    ('strike AND "!!!"', None),  # ... and matches nothing anywhere else
    ("title:(text:strike)", None),  # no column left
    ("title:(text:strike) OR fire", "'fire'"),
    ("it''s", "( 'it':A <-> 's':A | 'it':B <-> 's':B )"),
])  # fmt: skip
def test_query_syntax_becomes_tsquery(query: str, tsquery: str | None) -> None:
    assert translated(query) == tsquery


def test_lexemes_are_quoted_as_tsquery_literals() -> None:
    tree = parse('"x"')
    assert to_tsquery(tree, {"x": ("o'brien",)}) == "'o''brien'"
    assert to_tsquery(tree, {"x": ("back\\slash",)}) == "'back\\\\slash'"


@pytest.mark.parametrize(("fragment", "text", "shown"), [
    ("its \x02corroded\x03 steel", "The repair of its corroded steel deck went on.", "…its \x02corroded\x03 steel…"),
    ("its \x02corroded\x03 steel deck", "The repair of its corroded steel deck.", "…its \x02corroded\x03 steel deck."),
    ("The \x02bridge\x03 closes", "The bridge closes", "The \x02bridge\x03 closes"),
    (None, "one two three", "one two three"),  # nothing marked in the text: its first words
    (None, " ".join(f"w{n}" for n in range(20)), " ".join(f"w{n}" for n in range(16)) + "…"),
    ("", "", ""),
])  # fmt: skip
def test_snippet_shows_where_the_text_goes_on(fragment: str | None, text: str, shown: str) -> None:
    assert snippet(fragment, text) == shown


# ---------------------------------------------------------------- the same matches as FTS5

DOCS = [
    ("Rail workers vote to strike", "The union said the strike would start on Monday. Freight trains are not affected."),
    ("Freight strike ends", "Dock workers at the harbour returned to work."),
    ("Tea room reopens on Quay Lane", "Don't expect the old café to serve zeppelin-shaped cakes."),
    ("Harbour bridge closes", "The tea merchants said the room above the bridge is closed. COVID-19 rules apply."),
    ("Library fire", "A fire in the reading room; rare maps were rescued by staff at 12:30."),
    ("Room", "Service resumes after the fire at the library."),
    ("Naïve art at the CAFÉ", "An exhibition of naive paintings opens at AT&T hall, example.com reports."),
    ("Bridges and bridging loans", "The bank offers bridging finance to rail operators."),
]  # fmt: skip


def fill(store: Store, docs: list[tuple[str, str]], clusters: list[int] | None = None) -> None:
    """Items 1.. with these (title, text), in clusters `clusters` (default: one each)."""
    clusters = clusters or list(range(1, len(docs) + 1))
    c = store.conn
    with store.transaction():
        c.execute(
            "INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'a', '2026-01-01T00:00:00Z')"
        )
        c.executemany(
            "INSERT INTO clusters (id, representative_id, size, feed_count, created_at) VALUES (?, ?, 1, 1, '2026-01-01T00:00:00Z')",
            [(cid, clusters.index(cid) + 1) for cid in sorted(set(clusters))],
        )
        c.executemany(
            """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                  changed_at, content_hash, cluster_id)
               VALUES (?, 1, ?, ?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',
                       '2026-01-01T00:00:00Z', ?, ?)""",
            [(n, f"k{n}", title, text, f"h{n}", cid)
             for n, ((title, text), cid) in enumerate(zip(docs, clusters, strict=True), 1)],
        )  # fmt: skip
    store.index_search()


@pytest.fixture(scope="module")
def both(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[dict[str, Store]]:
    """DOCS on SQLite and on PostgreSQL, read by the tests of this module only."""
    url = postgres_server.new_database()
    stores = {
        "sqlite": Store.open(tmp_path_factory.mktemp("fts") / "a.db"),
        "postgresql": Store.open(url),
    }
    try:
        for store in stores.values():
            fill(store, DOCS)
        yield stores
    finally:
        for store in stores.values():
            store.close()
        postgres_server.drop_database(url)


def matching(store: Store, query: str) -> set[int]:
    condition, args = match_condition(store, query)
    return {r[0] for r in store.conn.execute(f"SELECT i.id FROM items i WHERE {condition}", args)}


@pytest.mark.parametrize(("query", "ids"), [
    ("strike", {1, 2}),
    ("rail strike", {1}),
    ("don't", {3}),
    ("cafe", {3, 7}),  # accents and case folded on both
    ("CAFÉ", {3, 7}),
    ("naïve", {7}),
    ("covid-19", {4}),
    ("12:30", {5}),
    ("AT&T", {7}),
    ("example.com", {7}),
    ("zeppelin-shaped", {3}),
    ('"tea room"', {3}),
    ('"room service"', set()),  # item 6's title ends "Room", its text begins "Service"
    ("bridg*", {4, 8}),
    ('"tea ro"*', {3}),
    ("title:strike", {1, 2}),
    ("text:strike", {1}),
    ("-title:strike", {1}),
    ("{title text}:fire", {5, 6}),
    ("title:fire", {5}),
    ('title:"tea room"', {3}),
    ("title:naive", {7}),
    ("title:(strike OR fire)", {1, 2, 5}),
    ("strike OR fire", {1, 2, 5, 6}),
    ("strike NOT dock", {1}),
    ("workers NOT title:freight", {1}),
    ("harbour OR rail strike", {1, 2, 4}),
    ("fire NOT maps rescued", {6}),
    ("strike AND workers OR fire", {1, 2, 5, 6}),
    ("café NOT naïve", {3}),
    ("NEAR(rail operators)", {8}),
    ("NEAR(reading maps, 2)", {5}),
    ("NEAR(reading maps, 1)", set()),
    ("NEAR(maps reading, 2)", {5}),  # either order
    ('NEAR("reading room" maps, 1)', {5}),
    ('"!!!" strike', {1, 2}),
    ('strike AND "!!!"', set()),
    ("title:(text:strike) OR fire", {5, 6}),
])  # fmt: skip
def test_postgresql_matches_what_fts5_matches(
    both: dict[str, Store], query: str, ids: set[int]
) -> None:
    assert matching(both["sqlite"], query) == ids
    assert matching(both["postgresql"], query) == ids


def test_parts_side_by_side_need_no_and_on_postgresql(both: dict[str, Store]) -> None:
    """FTS5 rejects a group followed by a word; PostgreSQL takes it as AND (documented)."""
    assert matching(both["postgresql"], "(rail OR dock) workers") == {1, 2}
    with pytest.raises(SearchError, match="syntax error"):
        search(both["sqlite"], "(rail OR dock) workers")


@pytest.mark.parametrize(("query", "reason"), [
    ("title:(bridge", 'syntax error near ""'),
    ("corroded AND", 'syntax error near ""'),
    ('"unclosed', "unterminated string"),
    ("rail OR foo:bar", "no such column: foo"),
    ("a.b OR c", 'syntax error near "."'),
    ("NOT strike", 'syntax error near "NOT"'),
    ("NEAR(a b, x)", 'expected integer, got "x"'),
    ("^strike", "^ (a phrase at the start of a column) has no PostgreSQL counterpart"),
    ("NEAR(a b c)", "NEAR() of more than two phrases has no PostgreSQL counterpart"),
    ("NEAR(a b, 500)", "a NEAR() distance over 100 has no PostgreSQL counterpart"),
])  # fmt: skip
def test_a_query_postgresql_cannot_run_is_a_clear_search_error(
    both: dict[str, Store], query: str, reason: str
) -> None:
    with pytest.raises(SearchError) as caught:
        search(both["postgresql"], query)
    message = str(caught.value)
    assert message.startswith(f"cannot search for {query!r}: {reason}; ")
    assert 'use plain words, or FTS5 syntax such as "exact phrase", bridg*' in message
    with pytest.raises(SearchError):  # the clusters list --query filter says the same
        match_condition(both["postgresql"], query)


def test_search_marks_the_words_it_found_as_sqlite_does(both: dict[str, Store]) -> None:
    """Titles marked in full, the text as a snippet; a column filter marks its column only."""
    for backend, store in both.items():
        (hit,) = search(store, "title:tea")
        (match,) = hit.matches
        assert match.title_marked == (("Tea", True), (" room reopens on Quay Lane", False)), backend
        assert not any(marked for _, marked in match.snippet), backend  # "tea" is in the title only
        (hit,) = search(store, "zeppelin")
        snip = "".join(f"[{t}]" if marked else t for t, marked in hit.matches[0].snippet)
        assert "[zeppelin]-shaped cakes." in snip, (backend, snip)


# ---------------------------------------------------------------- ranking next to SQLite's

FILLER = (
    "council", "budget", "river", "market", "school", "police", "court", "weather", "museum",
    "train", "bus", "road", "garden", "hospital", "election", "festival", "theatre", "stadium",
    "factory", "airport", "tower", "parish", "village", "county", "report",
)  # fmt: skip
QUERY_WORDS = ("lighthouse", "ferry", "tram")


def ranked_world(seed: int = 7) -> tuple[list[tuple[str, str]], list[int]]:
    """300 items in 100 clusters of 3, of filler words; in five clusters per query word,
    the word in tiers: in the title and the text twice, in the title, in the text three
    times, twice, once."""
    rng = random.Random(seed)
    docs, clusters = [], []
    tiers = [(1, 2), (1, 0), (0, 3), (0, 2), (0, 1)]  # (in the title, times in the text)
    chosen = iter(rng.sample(range(1, 101), len(QUERY_WORDS) * len(tiers)))
    planted = {next(chosen): (word, tier) for word in QUERY_WORDS for tier in tiers}
    for cluster in range(1, 101):
        for _ in range(3):
            title = rng.sample(FILLER, 6)
            text = [rng.choice(FILLER) for _ in range(40)]
            if cluster in planted:
                word, (in_title, in_text) = planted[cluster]
                if in_title:
                    title[2] = word
                for k in range(in_text):
                    text[5 + 11 * k] = word
            docs.append((" ".join(title).capitalize(), " ".join(text) + "."))
            clusters.append(cluster)
    return docs, clusters


def test_a_search_over_300_items_finds_the_same_top_clusters_on_both(
    tmp_path: Path, postgres_url: str
) -> None:
    docs, clusters = ranked_world()
    results = {}
    for backend, target in (("sqlite", tmp_path / "a.db"), ("postgresql", postgres_url)):
        store = Store.open(target)
        try:
            fill(store, docs, clusters)
            results[backend] = {
                q: search(store, q, None, None) for q in ("lighthouse", "ferry", "tram", "lightho*")
            }
        finally:
            store.close()
    for query in ("lighthouse", "ferry", "tram", "lightho*"):
        sqlite, postgresql = results["sqlite"][query], results["postgresql"][query]
        assert len(sqlite) >= 4  # every tier of its word (a cluster has one word)
        assert [h.id for h in postgresql] == [h.id for h in sqlite], query
        assert [[m.id for m in h.matches] for h in postgresql] == [
            [m.id for m in h.matches] for h in sqlite
        ]
        for hits in (sqlite, postgresql):
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True) and scores[-1] > 0


def test_a_limit_ranks_the_newest_candidates_on_postgresql(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """search.CANDIDATES caps what PostgreSQL ranks too: the newest matches, by id."""
    docs, clusters = ranked_world()
    store = Store.open(postgres_url)
    try:
        fill(store, docs, clusters)
        full = search(store, "lighthouse", None, None)
        monkeypatch.setattr("aggregator.store.search.CANDIDATES", 4)
        capped = search(store, "lighthouse", None, 10)
        newest = sorted((m.id for h in full for m in h.matches), reverse=True)[:4]
        assert sorted(m.id for h in capped for m in h.matches) == sorted(newest)
        assert {h.id for h in capped} < {h.id for h in full}
    finally:
        store.close()


# ---------------------------------------------------------------- every reader, next to SQLite


def cli(cfg: Path, db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(cfg), "--db", str(db), *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip


def out(cfg: Path, db: Path | str, *args: str) -> str:
    done = cli(cfg, db, *args)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer):
    """The six demo feeds (aggregator/demo_feeds), served once with fixed dates and fetched
    into an SQLite file and a PostgreSQL database: (config, {backend: --db}). Fetched one
    feed after the other, the items, clusters and their ids come out the same on both (a
    fetch of all feeds stores them in the order their answers arrive)."""
    tmp = tmp_path_factory.mktemp("demo")
    url = postgres_server.new_database()
    now = utcnow().replace(microsecond=0)
    with FeedServer() as server:
        lines = ["settings:", "  timeout: 5s", "  parse_workers: 0", "feeds:"]
        for outlet in OUTLETS:
            body = fill_dates(feed_template(outlet.file), now, atom=outlet.file.endswith(".atom"))
            server.set(f"/{outlet.file}", Route(body=body.encode()))
            tags = ", ".join(outlet.tags)
            lines += [
                f"  - url: {server.url(outlet.file)}",
                f"    name: {outlet.name}",
                f"    tags: [{tags}]",
            ]
        cfg = tmp / "feeds.yaml"
        cfg.write_text("\n".join(lines) + "\n", encoding="utf-8")
        dbs = {"sqlite": tmp / "agg.db", "postgresql": url}
        for db in dbs.values():  # one feed after the other, so that both number them alike
            for outlet in OUTLETS:
                assert "0 errors" in cli(cfg, db, "fetch", "--feed", outlet.name).stderr
        yield cfg, dbs
    postgres_server.drop_database(url)


def both_outputs(demo_twice, *args: str) -> tuple[str, str]:
    """The output of one command on each backend (an OPML export's time left out)."""
    cfg, dbs = demo_twice
    return tuple(
        re.sub(r"<dateCreated>[^<]*</dateCreated>", "", out(cfg, db, *args)) for db in dbs.values()
    )


@pytest.mark.parametrize("args", [
    ("clusters", "list", "--since", "all", "--min-size", "1", "--json"),
    ("clusters", "list", "--since", "all", "--min-size", "2"),
    ("clusters", "list", "--since", "all", "--min-size", "1", "--tag", "local", "--json"),
    ("clusters", "list", "--since", "all", "--min-size", "1", "--feed", "harbour gazette", "--json"),
    ("clusters", "list", "--since", "all", "--min-size", "1", "--query", "ferry OR storm", "--json"),
    ("clusters", "list", "--since", "all", "--min-size", "1", "--tag", "regional", "--query", '"flood warnings"', "--json"),
    ("digest", "--format", "atom", "-o", "-", "--since", "all"),
    ("digest", "--format", "rss", "-o", "-", "--since", "all"),
    ("digest", "--format", "json", "-o", "-", "--since", "all", "--min-size", "2", "--tag", "local"),
    ("feeds", "export"),
])  # fmt: skip
def test_readers_print_the_same_on_both_backends(demo_twice, args: tuple[str, ...]) -> None:
    sqlite, postgresql = both_outputs(demo_twice, *args)
    assert sqlite.strip(), args  # something to compare
    assert postgresql == sqlite


def test_clusters_show_and_stats_are_the_same_on_both_backends(demo_twice) -> None:
    listed = json.loads(both_outputs(demo_twice, "clusters", "list", "--since", "all", "--json")[0])
    assert len(listed) >= 4  # the stories more than one outlet carried
    for cluster in listed[:3]:
        sqlite, postgresql = both_outputs(
            demo_twice, "clusters", "show", str(cluster["id"]), "--json"
        )
        assert postgresql == sqlite
    sqlite, postgresql = (json.loads(s) for s in both_outputs(demo_twice, "stats", "--json"))
    assert sqlite.pop("database")["wal_bytes"] >= 0
    database = postgresql.pop("database")
    assert database["wal_bytes"] is None and database["bytes"] == database["db_bytes"] > 1_000_000
    assert database["path"] == demo_twice[1]["postgresql"]  # no password in it to hide
    assert postgresql == sqlite
    cfg, dbs = demo_twice
    feeds = [json.loads(out(cfg, db, "feeds", "list", "--json")) for db in dbs.values()]
    for listing in feeds:  # each database's own fetch times
        for feed in listing:
            assert feed.pop("last_fetch") and feed.pop("next_fetch")
    assert feeds[0] == feeds[1]


@pytest.mark.parametrize(
    "query",
    ["ferry", "storm flood", '"night crossings"', "tram*", "title:council", "harbour NOT ferry"],
)
def test_search_finds_the_same_stories_on_both_backends(demo_twice, query: str) -> None:
    """The same clusters with the same matching items; the order of clusters may differ
    where the two rankings weigh a story differently (bm25 and ts_rank_cd), so it is
    compared as sets, with the scores of each backend in descending order."""
    sqlite, postgresql = (
        json.loads(s) for s in both_outputs(demo_twice, "search", query, "--json")
    )
    assert sqlite, query

    def found(hits: list[dict]) -> dict[int, tuple]:
        return {
            h["id"]: (h["size"], h["title"], sorted(m["id"] for m in h["matches"])) for h in hits
        }

    assert found(postgresql) == found(sqlite)
    for hits in (sqlite, postgresql):
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for hit in postgresql:
        for match in hit["matches"]:
            assert "«" in match["title"] + match["snippet"] or query.startswith(
                ("title:", "harbour")
            ), match


def test_a_query_postgresql_cannot_run_is_a_message_not_a_traceback(demo_twice) -> None:
    cfg, dbs = demo_twice
    for args in (("search", "^ferry"), ("clusters", "list", "--query", "NEAR(a b c)")):
        done = cli(cfg, dbs["postgresql"], *args)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.startswith(f"aggregator: cannot search for {args[-1]!r}: ")
        assert "no PostgreSQL counterpart" in done.stderr, done.stderr


def test_a_web_page_query_reads_the_same_stories_on_both_backends(demo_twice) -> None:
    """publish.publisher.page_snapshot, what the daemon's web page queries for a filter."""
    from aggregator.config import load_config
    from aggregator.publish.publisher import page_snapshot
    from aggregator.publish.webview import parse_filter

    cfg, dbs = demo_twice
    settings = load_config(cfg).settings.digest
    now = utcnow() + timedelta(minutes=1)
    pages = {}
    for backend, db in dbs.items():
        store = Store.open(db)
        try:
            pages[backend] = [page_snapshot(store, settings, parse_filter(q), now)
                              for q in ("q=FERRY", "tag=local&min_size=2", "q=storm&tag=regional", "q=zzz")]  # fmt: skip
        finally:
            store.close()
    assert [len(p.clusters) for p in pages["sqlite"]][:3] != [0, 0, 0]
    for sqlite, postgresql in zip(pages["sqlite"], pages["postgresql"], strict=True):
        assert postgresql.clusters == sqlite.clusters and postgresql.matched == sqlite.matched
        assert postgresql.tags == sqlite.tags and postgresql.all_tags == sqlite.all_tags


def test_names_and_headlines_ignore_ascii_case_only_on_both_backends(db_target: Path | str) -> None:
    """`--feed NAME` and the web page's `q` compare with lower() on both sides, which folds
    A-Z only on SQLite and on PostgreSQL's COLLATE "C" columns; a value lowered by the
    database's locale (PostgreSQL's lower() of a parameter) would fold "É" too, and "ÉTÉ"
    would then find nothing on PostgreSQL that it finds on SQLite."""
    from datetime import datetime

    from aggregator.errors import AggregatorError
    from aggregator.store.queries import digest_clusters, find_feeds

    store = Store.open(db_target)
    try:
        with store.transaction():
            store.conn.execute(
                "INSERT INTO feeds (url, name, created_at) VALUES ('https://a.example/', 'Ärzte Zeitung', '2026-01-01T00:00:00Z')"
            )
        fill_item = """INSERT INTO items (id, feed_id, key, title, text, published_at, first_seen_at,
                                          changed_at, content_hash)
                       VALUES (1, 1, 'k', 'ÉTÉ À PARIS', 'Text.', '2026-01-01T00:00:00Z',
                               '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'h')"""
        with store.transaction():
            store.conn.execute(fill_item)
            store.conn.execute(
                """INSERT INTO clusters (id, representative_id, size, feed_count, first_seen, last_seen,
                                         updated_at, created_at)
                   VALUES (1, 1, 1, 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',
                           '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')"""
            )
            store.conn.execute("UPDATE items SET cluster_id = 1")
        assert find_feeds(store, "ÄRZTE ZEITUNG") == find_feeds(store, "Ärzte zeitung") == [1]
        with pytest.raises(AggregatorError, match="no feed named"):
            find_feeds(store, "ärzte zeitung")  # Ä is not A-Z

        def titled(query: str) -> int:
            return digest_clusters(store, datetime(2025, 1, 1, tzinfo=UTC), 10, query=query)[1]

        assert titled("ÉTÉ À Paris") == titled("ÉTÉ À") == 1
        assert titled("ÉTÉ à") == titled("été") == 0  # À and É are not A-Z
    finally:
        store.close()
