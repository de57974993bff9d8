"""Hostile entry content (script, javascript: links, event handlers, CSS expressions,
unbalanced tags, terminal escape sequences) must come out inert: no live markup in the
digest (Atom, RSS, JSON Feed) and no control sequences in what the CLI prints.

One `aggregator fetch` of RSS, Atom and JSON Feed documents carrying the same attacks
(two copies of each story, so clusters have several members), then every output is read
back and checked with html.parser.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html import escape
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from evilserver import EvilServer
from harness import Workspace, good_feed

ESC_TITLE = "\x1b[31mRED ALERT\x1b[0m \x1b]0;pwned-window-title\x07 \x9b2J cleared"
ESC_FEED = "Evil \x1b]0;owned\x07 \x1b[5mFeed\x9b0m"
STORIES = [
    ("<script>alert(1)</script>Scripted headline about the harbour",
     "<p>Harbour story.</p><script>alert('body')</script><p>The harbour authority said on "
     "Monday that dredging will start next spring and last for about eight months.</p>",
     "https://ex.example/harbour"),
    ("Javascript link story about the new library",
     "<p>The new public library opens <a href=\"javascript:alert(2)\">here</a> with forty "
     "thousand books and a rooftop reading garden for children and adults alike.</p>",
     "javascript:alert(document.cookie)"),
    ('<img src=x onerror=alert(3)>Image handler story on rail strikes',
     '<p onclick="alert(4)">Rail unions <img src="x" onerror="alert(5)"> announced a strike '
     "for Thursday after talks over pay and working hours broke down late on Sunday.</p>",
     "https://ex.example/rail"),
    ("CSS expression story on the heatwave",
     '<div style="background:url(javascript:alert(6));width:expression(alert(7))">Forecasters '
     "expect the heatwave to continue through the weekend with highs near forty degrees.</div>"
     "<style>body{background:url(javascript:alert(8))}</style>",
     "https://ex.example/heat"),
    ("Unbalanced <b><i>tags story on fishing quotas",
     "<p><b><i>Fishing quotas for the northern fleet were cut by a fifth <a href=\"https://x"
     " onmouseover=alert(9) <div>after scientists warned that cod stocks</p></b> are falling"
     "<iframe src=\"https://evil.example/\"></iframe><svg onload=alert(10)>",
     "https://ex.example/fish"),
    (ESC_TITLE,
     "Terminal escape story: the council \x1b[2J\x1b[H cleared the screen \x9b31m and the "
     "budget vote \x1b]8;;https://evil.example\x07link\x1b]8;;\x07 passed by nine to four.",
     "https://ex.example/escape"),
]  # fmt: skip


def _rss(title: str, suffix: str) -> bytes:
    items = "".join(
        f"<item><guid>{suffix}-{i}</guid><title>{escape(t)}</title><link>{escape(link)}</link>"
        f"<description>{escape(body)}</description></item>"
        for i, (t, body, link) in enumerate(STORIES)
    )
    doc = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
           f"<title>{escape(title)}</title><link>javascript:alert(11)</link>"
           f"<description>x</description>{items}</channel></rss>")  # fmt: skip
    return doc.encode("utf-8")  # raw ESC/BEL bytes: not XML 1.0, recovered as a bozo feed


def _atom(title: str, suffix: str) -> bytes:
    entries = "".join(
        f'<entry><id>urn:{suffix}:{i}</id><title type="html">{escape(t)}</title>'
        f'<link rel="alternate" href="{escape(link)}"/><updated>2026-11-25T10:00:00Z</updated>'
        f'<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">'
        f"<p>Atom copy.</p><script>alert('xhtml')</script></div></content>"
        f'<summary type="html">{escape(body)}</summary></entry>'
        for i, (t, body, link) in enumerate(STORIES)
    )
    return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
            f"<title>{escape(title)}</title><id>urn:{suffix}</id>"
            f"<updated>2026-11-25T10:00:00Z</updated>{entries}</feed>").encode()  # fmt: skip


def _json(title: str, suffix: str) -> bytes:
    return json.dumps({
        "version": "https://jsonfeed.org/version/1.1", "title": title,
        "home_page_url": "javascript:alert(12)",
        "items": [{"id": f"{suffix}-{i}", "title": t, "url": link, "content_html": body,
                   "authors": [{"name": "\x1b[31mEvil author\x07"}]}
                  for i, (t, body, link) in enumerate(STORIES)],
    }).encode()  # fmt: skip


CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def assert_no_controls(where: str, text: str) -> None:
    m = CONTROL.search(text)
    assert m is None, (
        f"{where}: control character {m.group()!r} in {text[max(0, m.start() - 60) : m.end() + 60]!r}"
    )


class _Markup(HTMLParser):
    """Collects every element and attribute of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag


ALLOWED = {"p": set(), "ul": set(), "li": set(), "a": {"href"}}


def assert_inert_html(where: str, fragment: str) -> None:
    parser = _Markup()
    parser.feed(fragment)
    parser.close()
    for tag, attrs in parser.tags:
        assert tag not in ("script", "style", "img", "iframe", "svg", "object", "embed"), (
            where,
            tag,
        )
        assert tag in ALLOWED, f"{where}: unexpected element <{tag}>"
        for name, value in attrs:
            assert not name.startswith("on") and name != "style", (where, tag, name, value)
            assert name in ALLOWED[tag], f"{where}: <{tag} {name}=...>"
            if name == "href":
                assert urlsplit(value or "").scheme in ("http", "https"), (where, value)
    assert "javascript:" not in " ".join(str(v) for _, a in parser.tags for _, v in a)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("hostile"))
    with EvilServer() as evil:
        feeds = [
            {"url": evil.static("/good.xml", good_feed(), "application/rss+xml"), "name": "Good"},
            {"url": evil.static("/evil.rss", _rss(ESC_FEED, "r"), "application/rss+xml")},
            {"url": evil.static("/evil.atom", _atom(ESC_FEED + " atom", "a"), "application/atom+xml")},
            {"url": evil.static("/evil.json", _json(ESC_FEED + " json", "j"), "application/feed+json")},
            {"url": evil.static("/named.rss", _rss("plain", "n"), "application/rss+xml"),
             "name": "Named \x1b[31mred\x1b[0m feed"},
        ]  # fmt: skip
        ws.write_config(feeds)
        run = ws.fetch()
    print("\n" + run.out)
    assert_no_controls("aggregator fetch stdout", run.out)
    summary = run.summary()
    assert all(row["status"] == "new" for row in summary.values()), run.out
    assert sum(int(r["new"]) for r in summary.values()) == 2 + 4 * len(STORIES)
    return ws


def test_stored_text_has_no_controls(hostile: Workspace) -> None:
    """Markup may be stored as literal text where the feed declares plain text (RSS
    titles, JSON Feed titles): outputs escape it. Control characters are never text."""
    for title, text, author in hostile.query("SELECT title, text, author FROM items"):
        assert_no_controls("items.title", title)
        assert_no_controls("items.text", text)
        assert_no_controls("items.author", author or "")
    for (title,) in hostile.query("SELECT title FROM feeds"):
        assert_no_controls("feeds.title (the feed's own name)", title or "")


@pytest.mark.parametrize("fmt", ["atom", "rss", "json"])
def test_digest_is_inert(hostile: Workspace, fmt: str) -> None:
    run = hostile.cli("digest", "--format", fmt, "-o", "-", "--since", "30d")
    assert run.returncode == 0, run.err
    text = run.out
    assert_no_controls(f"{fmt} digest", text.replace("\t", " "))
    bodies: list[str] = []
    links: list[str] = []
    if fmt == "json":
        doc = json.loads(text)
        for item in doc["items"]:
            bodies.append(item["content_html"])
            links += [item.get("url")] + [m["url"] for m in item["_aggregator"]["members"]]
    else:
        root = ET.fromstring(run.stdout)
        if fmt == "atom":
            ns = {"a": "http://www.w3.org/2005/Atom"}
            for entry in root.findall("a:entry", ns):
                content = entry.find("a:content", ns)
                assert content is not None and content.get("type") == "html"
                bodies.append(content.text or "")
                links += [link.get("href") for link in entry.findall("a:link", ns)]
        else:
            for item in root.iter("item"):
                bodies.append(item.findtext("description") or "")
                links.append(item.findtext("link"))
    assert len(bodies) >= len(STORIES) + 2, f"{fmt}: only {len(bodies)} entries"
    for body in bodies:
        assert_inert_html(f"{fmt} digest entry", body)
    for link in links:
        assert link is None or urlsplit(link).scheme in ("http", "https"), (fmt, link)
    assert "javascript:" not in text.lower()


def _cli_text(ws: Workspace, *args: str) -> str:
    run = ws.cli(*args)
    assert run.returncode == 0, run.err
    return run.out


def test_cli_output_has_no_escape_sequences(hostile: Workspace) -> None:
    outputs = {
        "clusters list": _cli_text(hostile, "clusters", "list", "--since", "30d", "--min-size", "1"),
        "clusters list --json": _cli_text(hostile, "clusters", "list", "--since", "30d", "--min-size", "1", "--json"),
        "feeds list": _cli_text(hostile, "feeds", "list"),
        "feeds list --json": _cli_text(hostile, "feeds", "list", "--json"),
    }  # fmt: skip
    clusters = json.loads(outputs["clusters list --json"])
    assert len(clusters) >= len(STORIES)
    escape_cluster = next(
        c["id"] for c in clusters if any("RED ALERT" in (m["title"] or "") for m in c["items"])
    )
    outputs["clusters show"] = _cli_text(hostile, "clusters", "show", str(escape_cluster))
    outputs["clusters show --json"] = _cli_text(
        hostile, "clusters", "show", str(escape_cluster), "--json"
    )
    assert "RED ALERT" in outputs["clusters show"]
    assert "Evil" in outputs["feeds list"]
    failures = []
    for name, text in outputs.items():
        try:
            assert_no_controls(name, text.replace("\t", " "))
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert not failures, "\n".join(failures)
