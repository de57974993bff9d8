"""The fast parse path (aggregator/ingest/fastparse.py): on every file of ../shared/feeds it
accepts, it gives what feedparser gives; what it does not follow goes to feedparser; and
libxml2 on that path expands no entity, loads no DTD and reads nothing from the network."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from feedserver import FeedServer, Route
from lxml import etree

from aggregator.ingest import fastparse
from aggregator.ingest.fastparse import parse_well_formed
from aggregator.ingest.normalize import clean_link, clean_title, normalize_entries
from aggregator.ingest.parse import looks_like_json_feed, parse_feed, parse_xml_feed

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "feeds"
NOW = datetime(2030, 1, 1, tzinfo=UTC)  # after every date in the files: none is "in the future"
# what a server would send for each file (as tests/robustness/test_shared_feeds.py serves them)
TYPES = {".atom": "application/atom+xml", ".rss": "application/rss+xml",
         ".rdf": "application/rdf+xml", ".xml": "application/xml"}  # fmt: skip
# Floors under the figures measured when the fast path was written (1,059 of 1,868 XML
# files with no headers, 1,059 with their media type; 57 of the 63 real-world XML feeds):
# the path must not quietly stop taking documents.
MIN_ACCEPTED, MIN_REAL_WORLD = 1_000, 50


def _manifest() -> list[dict[str, str]]:
    lines = (SHARED / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:] if line]


def _feed_fields(raw) -> tuple:
    return (
        raw.format,
        clean_title(raw.title),
        clean_link(raw.link),
        raw.ttl,
        raw.error,
        raw.warning,
    )


def test_fast_path_agrees_with_feedparser_on_every_shared_file() -> None:
    if not (SHARED / "MANIFEST.tsv").is_file():
        pytest.skip(f"../shared/feeds not present: {SHARED} has no MANIFEST.tsv")
    rows = _manifest()
    xml = [r for r in rows if not looks_like_json_feed((SHARED / r["path"]).read_bytes(), {})]
    figures: dict[str, dict[str, int]] = {}
    disagreements = []
    for label in ("no headers", "media type"):
        n = figures[label] = {
            "accepted": 0,
            "real-world": 0,
            "entries": 0,
            "agree": 0,
            "raw-identical": 0,
        }
        for row in xml:
            body = (SHARED / row["path"]).read_bytes()
            headers = {} if label == "no headers" else {
                "content-type": TYPES.get(Path(row["path"]).suffix, "application/xml")}  # fmt: skip
            fast = parse_well_formed(body, headers)
            if fast is None:
                continue
            slow = parse_xml_feed(body, headers)
            n["accepted"] += 1
            n["real-world"] += row["origin"] == "real-world"
            n["entries"] += len(slow.entries)
            ours, theirs = (
                normalize_entries(fast.entries, NOW),
                normalize_entries(slow.entries, NOW),
            )
            if ours == theirs and _feed_fields(fast) == _feed_fields(slow):
                n["agree"] += 1
                n["raw-identical"] += fast == slow
            else:
                first = next((a, b) for a, b in zip(ours + (None,), theirs + (None,), strict=False) if a != b) \
                    if ours != theirs else (_feed_fields(fast), _feed_fields(slow))  # fmt: skip
                disagreements.append(
                    f"{row['path']} ({label}): fast {first[0]!r}\n  feedparser {first[1]!r}"
                )
    print(
        f"\n{len(rows)} files, {len(xml)} XML (the rest JSON Feed, which never reaches this path)"
    )
    for label, n in figures.items():
        print(f"{label}: {n['accepted']} accepted by the fast path ({n['real-world']} real-world), "
              f"{n['entries']} entries compared, {n['agree']} files agree "
              f"({n['raw-identical']} identical before normalising too)")  # fmt: skip
    assert not disagreements, "\n".join(disagreements[:10])
    for label, n in figures.items():
        assert n["accepted"] >= MIN_ACCEPTED and n["real-world"] >= MIN_REAL_WORLD, (label, n)


# ---------------------------------------------------------------- what goes to feedparser


def _rss(
    items: str, prolog: str = '<?xml version="1.0" encoding="utf-8"?>', channel: str = ""
) -> bytes:
    return (f'{prolog}<rss version="2.0"><channel><title>T</title><link>https://ex.example/</link>'
            f"{channel}{items}</channel></rss>").encode()  # fmt: skip


ITEM = "<item><guid>g1</guid><title>One</title><description>Body &amp; more</description></item>"


def test_a_plain_feed_takes_the_fast_path_and_gives_feedparsers_entries(data_dir: Path) -> None:
    for name, headers in (("rss20.xml", {"content-type": "application/rss+xml"}),
                          ("atom10.xml", {"content-type": "application/atom+xml"}),
                          ("rss10.rdf", {"content-type": "application/rdf+xml"}), ("rss20.xml", {})):  # fmt: skip
        body = (data_dir / name).read_bytes()
        fast = parse_well_formed(body, headers)
        assert fast is not None, name
        assert fast == parse_xml_feed(body, headers), name
        assert parse_feed(body, headers) == fast


@pytest.mark.parametrize(
    "case, body, headers",
    [
        ("not well-formed", _rss(ITEM).replace(b"</channel>", b""), {}),
        ("an entity HTML has but XML lacks", _rss(ITEM.replace("&amp;", "&nbsp;")), {}),
        ("a DOCTYPE", _rss(ITEM, '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e "x">]>'), {}),
        ("served as text/html", _rss(ITEM), {"content-type": "text/html"}),
        (
            "text/xml without a charset, not ASCII",
            _rss(ITEM.replace("One", "Caf\u00e9")),
            {"content-type": "text/xml"},
        ),
        (
            "a Content-Location header",
            _rss(ITEM),
            {"content-type": "application/xml", "content-location": "https://ex.example/f"},
        ),
        (
            "Atom 0.3",
            b'<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>T</title>'
            b"<entry><id>1</id><title>x</title></entry></feed>",
            {},
        ),
        (
            "XHTML content",
            b'<feed xmlns="http://www.w3.org/2005/Atom"><title>T</title><entry><id>1</id>'
            b'<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>x</p></div>'
            b"</content></entry></feed>",
            {},
        ),
        (
            "markup inside a description",
            _rss("<item><description><p>x</p></description></item>"),
            {},
        ),
        (
            "an item inside an item",
            _rss("<item><title>a</title><item><title>b</title></item></item>"),
            {},
        ),
        (
            "an element name feedparser files as a date",
            _rss("<item><title>a</title><date>2024</date></item>"),
            {},
        ),
        (
            "a text node past libxml2's 10 MB limit",
            _rss(f"<item><title>a</title><description>{'x' * 10_500_000}</description></item>"),
            {},
        ),
    ],  # fmt: skip
)
def test_what_the_fast_path_leaves_to_feedparser(case: str, body: bytes, headers: dict) -> None:
    assert parse_well_formed(body, headers) is None, case
    assert parse_feed(body, headers) == parse_xml_feed(body, headers), case


def test_other_encodings_are_read_as_feedparser_reads_them() -> None:
    body = _rss(
        ITEM.replace("One", "Caf\u00e9 \u00e0 la gare"),
        '<?xml version="1.0" encoding="iso-8859-1"?>',
    )
    latin1 = body.decode("utf-8").encode("iso-8859-1")
    for headers in (
        {},
        {"content-type": "application/rss+xml"},
        {"content-type": "text/xml; charset=iso-8859-1"},
    ):
        fast = parse_well_formed(latin1, headers)
        assert fast is not None and fast.entries[0].title == "Caf\u00e9 \u00e0 la gare", headers
        assert fast == parse_xml_feed(latin1, headers), headers


def test_relative_links_are_resolved_against_xml_base_as_feedparser_does() -> None:
    body = (b'<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://blog.example/feed/">'
            b'<title>T</title><link href="../"/><entry xml:base="/2024/"><id>post-1</id><title>x</title>'
            b'<link rel="alternate" href="post.html"/><content type="html">&lt;p&gt;t&lt;/p&gt;</content>'
            b'</entry><entry><id>/p/2</id><title>y</title><link href="p2"/></entry></feed>')  # fmt: skip
    fast = parse_well_formed(body, {})
    assert fast is not None
    assert fast == parse_xml_feed(body, {})
    assert [e.link for e in fast.entries] == [
        "https://blog.example/2024/post.html",
        "https://blog.example/feed/p2",
    ]


def test_many_threads_at_once_give_the_same_feeds(data_dir: Path) -> None:
    """One libxml2 parser per thread: the poller parses in a thread pool."""
    bodies = [(data_dir / n).read_bytes() for n in ("rss20.xml", "atom10.xml", "rss10.rdf")] * 40
    expected = [parse_well_formed(b, {}) for b in bodies]
    results: dict[int, list] = {}

    def work(n: int) -> None:
        results[n] = [parse_well_formed(b, {}) for b in bodies]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[n] == expected for n in range(6))


# ---------------------------------------------------------------- hostile XML


def _laughs() -> bytes:
    ents = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    return _rss("<item><guid>x</guid><title>&l9;</title></item>",
                f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY l0 "lol">{ents}]>')  # fmt: skip


def test_documents_with_a_doctype_never_reach_libxml2_here(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER")
    xxe = _rss("<item><guid>x</guid><title>&xxe;</title></item>",
               f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>')  # fmt: skip
    for body in (_laughs(), xxe):
        assert parse_well_formed(body, {}) is None


def test_the_fast_paths_parser_expands_nothing_and_fetches_nothing(tmp_path: Path) -> None:
    """Defence in depth: even given a DOCTYPE, the parser the fast path uses resolves no
    entity (billion laughs, a local file) and loads no external DTD (no request made)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER")
    with FeedServer() as server:
        server.set("/evil.dtd", Route(body=b'<!ENTITY remote "REMOTE-MARKER">',
                                      headers={"Content-Type": "application/xml-dtd"}))  # fmt: skip
        documents = {
            "billion laughs": _laughs(),
            "local file": _rss("<item><title>&xxe;</title></item>",
                               f'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>'),
            "external DTD": _rss("<item><title>t</title></item>",
                                 f'<!DOCTYPE rss SYSTEM "{server.url("/evil.dtd")}">'),
            "external parameter entity": _rss("<item><title>t</title></item>",
                                              f'<!DOCTYPE rss [<!ENTITY % p SYSTEM "{server.url("/evil.dtd")}"> %p;]>'),
        }  # fmt: skip
        for case, body in documents.items():
            try:
                root = [el for _, el in fastparse.xml_events(body)][-1]
            except etree.XMLSyntaxError:
                continue  # refusing is as good
            text = etree.tostring(root, encoding="unicode")
            assert "SECRET-MARKER" not in text and "REMOTE-MARKER" not in text, case
            assert "lollollol" not in text and len(text) < 10_000, case
        assert server.hits("/evil.dtd") == 0, "the fast path's parser fetched an external DTD"


# ---------------------------------------------------------------- the benchmark still runs


@pytest.mark.bench_smoke
def test_ingest_cpu_bench_quick() -> None:
    """bench/ingest_cpu.py --quick as a subprocess (as tests/test_bench_smoke.py runs the
    others): it runs, every workload document takes the fast path, figures are positive."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "bench/ingest_cpu.py", "--quick", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["items"] == 20 * 50 and result["fast_path_documents"] == 20, result
    assert all(v > 0 for v in result["us_per_item"].values()), result
