"""The web view (`GET /`): the pure renderer (escaping, links, filters) and the page the
real daemon serves, checked over HTTP and in a real headless browser (Debian's chromium,
installed by `make test`; the browser test skips only when no chromium can be found). The
served page is checked with the daemon on SQLite and on PostgreSQL (`db_target`): a
filtered page is queried from the database."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest
from feedserver import FeedServer
from test_daemon import Rig, story, wait_for

from aggregator.publish.webview import (
    CONTENT_SECURITY_POLICY,
    DigestSnapshot,
    PageFilter,
    parse_filter,
    render_page,
    select,
)
from aggregator.store.queries import ClusterView, MemberView

NOW = datetime(2026, 11, 25, 13, 0, 0, tzinfo=UTC)
HOSTILE = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>"
ARTIFACTS = Path(__file__).parent / ".artifacts"
SCREENSHOT = ARTIFACTS / "webview.png"


def member(
    i: int, feed: str, title: str, url: str | None = None, hours_ago: float = 1
) -> MemberView:
    return MemberView(i, feed, title, url if url is not None else f"https://{i}.example.com/a?x=1&y=2",
                      NOW - timedelta(hours=hours_ago), None)  # fmt: skip


def cluster(cid: int, members: list[MemberView], title: str | None = None) -> ClusterView:
    return ClusterView(
        id=cid, size=len(members), feeds=len({m.feed for m in members}),
        title=members[0].title if title is None else title, url=members[0].url,
        first_seen=min(m.published for m in members), last_seen=max(m.published for m in members),
        items=tuple(members), updated=NOW,
    )  # fmt: skip


@pytest.fixture
def snapshot() -> DigestSnapshot:
    bridge = cluster(1, [member(1, "Quay Times", "Bridge to close for repairs", hours_ago=5),
                         member(2, "Riverside Post", "Harbor crossing shut until November", hours_ago=4),
                         member(3, "Valley Wire", "Bridge closure: eight months", hours_ago=3)])  # fmt: skip
    strike = cluster(2, [member(4, "Quay Times", "Rail workers vote to strike", hours_ago=2)])
    evil = cluster(3, [member(5, 'Evil "Outlet" <b>', HOSTILE, url="javascript:alert(1)", hours_ago=1),
                       member(6, "Data", "data link", url="data:text/html,<script>alert(1)</script>")])  # fmt: skip
    tags = {1: frozenset({"world", "local"}), 2: frozenset({"local"}), 3: frozenset()}
    return DigestSnapshot("my digest", (bridge, strike, evil), tags, NOW)


class Page(HTMLParser):
    """What a browser would build: elements, text, links, <head> links."""

    def __init__(self, data: bytes):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(data.decode("utf-8"))

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]

    @property
    def story_ids(self) -> list[str]:
        return [a["id"] for a in self.all("article")]


def page(snapshot: DigestSnapshot, query: str = "") -> Page:
    return Page(render_page(snapshot, parse_filter(query), NOW))


# ---------------------------------------------------------------- the pure renderer


def test_page_lists_stories_in_the_digests_order_with_sources_badges_and_members(snapshot) -> None:
    p = page(snapshot)
    text = " ".join(p.text)
    assert p.story_ids == ["story-1", "story-2", "story-3"]  # the snapshot's (the digest's) order
    assert "3 sources" in text and "1 source" in text and "2 sources" in text
    for title in ("Bridge to close for repairs", "Harbor crossing shut until November",
                  "Bridge closure: eight months", "Riverside Post", "Valley Wire"):  # fmt: skip
        assert title in text
    times = p.all("time")
    assert times and all(
        re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t["datetime"]) for t in times
    )
    assert "3 stories" in text


def test_feed_values_are_escaped_and_only_http_links_are_live(snapshot) -> None:
    body = render_page(snapshot, PageFilter(), NOW)
    p = Page(body)
    assert HOSTILE in "".join(p.text)  # shown as text ...
    assert not p.all("script") and not p.all("img")  # ... never as elements
    assert escape(HOSTILE) in body.decode()
    hrefs = [a["href"] for a in p.all("a")]
    assert not any(h.lower().startswith(("javascript:", "data:")) for h in hrefs)
    assert all(h.startswith(("https://", "/")) for h in hrefs), hrefs
    assert 'Evil "Outlet" <b>' in "".join(p.text) and not p.all("b")
    assert b"<script" not in body.lower() and b"onerror=alert" not in body.replace(
        b"onerror=alert(1)&gt;", b""
    )


def test_head_has_autodiscovery_links_and_no_scripts_or_external_assets(snapshot) -> None:
    p = page(snapshot)
    alternates = {a["type"]: a["href"] for a in p.all("link") if a.get("rel") == "alternate"}
    assert alternates == {"application/atom+xml": "/digest.atom", "application/rss+xml": "/digest.rss",
                          "application/feed+json": "/digest.json"}  # fmt: skip
    assert not p.all("script") and len(p.all("style")) == 1
    assert not [a for a in p.all("link") if a.get("rel") == "stylesheet"]
    assert {"/digest.atom", "/digest.rss", "/digest.json"} <= {a["href"] for a in p.all("a")}
    assert "my digest" in p.text


@pytest.mark.parametrize(("query", "expected"), [
    ("", ["story-1", "story-2", "story-3"]),
    ("min_size=2", ["story-1", "story-3"]),
    ("min_size=3", ["story-1"]),
    ("min_size=0", ["story-1", "story-2", "story-3"]),
    ("min_size=lots", ["story-1", "story-2", "story-3"]),
    ("tag=world", ["story-1"]),
    ("tag=local", ["story-1", "story-2"]),
    ("tag=world&tag=nope", ["story-1"]),
    ("tag=local&min_size=2", ["story-1"]),
    ("q=STRIKE", ["story-2"]),
    ("q=harbor+crossing", ["story-1"]),  # a member's headline, not the story title
    ("q=%3Cscript%3E", ["story-3"]),
    ("q=zzz", []),
    ("q=+&tag=", ["story-1", "story-2", "story-3"]),
])  # fmt: skip
def test_filters(snapshot, query: str, expected: list[str]) -> None:
    assert page(snapshot, query).story_ids == expected


def test_filtered_page_keeps_the_form_state_and_says_when_nothing_matches(snapshot) -> None:
    p = page(snapshot, "q=%22%3E%3Cb%3Ezzz&tag=local&min_size=2")
    search = next(a for a in p.all("input") if a.get("name") == "q")
    assert search["value"] == '"><b>zzz' and not p.all("b")
    assert any(a.get("selected") is None and "selected" in a and a["value"] == "local"
               for a in p.all("option"))  # fmt: skip
    text = " ".join(p.text)
    assert "No story matches" in text and "0 of 3 stories" in text
    assert "No stories in the digest window yet" in " ".join(
        Page(render_page(replace(snapshot, clusters=()), PageFilter(), NOW)).text
    )


def test_select_and_parse_filter() -> None:
    assert parse_filter("tag=a&tag=a&tag=b&min_size=4&q=%20x%20%20y%20") == PageFilter(
        ("a", "b"), 4, "x y"
    )
    assert parse_filter("") == PageFilter() and not PageFilter()
    assert len(parse_filter("q=" + "a" * 1000).q) == 200
    assert select(DigestSnapshot("t", ()), PageFilter(q="x")) == []


# ---------------------------------------------------------------- served by the daemon


@pytest.fixture
def served(tmp_path: Path, db_target: Path | str) -> Iterator[Rig]:
    """The real daemon on local feeds: a story two outlets carried, a singleton and a
    hostile headline; waits until the web view lists all three."""
    with FeedServer() as server:
        rig = Rig(tmp_path, server)
        rig.db = db_target
        try:
            bridge, strike = story("bridge", "q1", hours_ago=3), story("rail_strike", "q2")
            # escaped once more so that, after the feed's own escaping, the title is plain text
            hostile = story("library_fire", "r1", title=escape(HOSTILE), hours_ago=1)
            copy = story(
                "bridge", "r2", title="Harbor Street crossing shut until November", hours_ago=2.5
            )
            quay = rig.serve("/quay.xml", "Quay Times", [bridge, strike])
            river = rig.serve("/river.xml", "Riverside Post", [copy, hostile])
            rig.write_config([{"url": quay, "tags": ["local"]}, {"url": river, "tags": ["world"]}])
            rig.start_serving()
            wait_for("3 stories on the web view",
                     lambda: rig.http.get("/").text.count('<article class="story"') == 3)  # fmt: skip
            yield rig
        finally:
            rig.close()


def test_daemon_serves_the_web_view(served: Rig) -> None:
    response = served.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert escape(HOSTILE) in response.text and "<script" not in response.text
    again = served.http.get("/", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert served.http.head("/").content == b""
    assert served.http.get("/?min_size=2").text.count('<article class="story"') == 1
    assert served.http.get("/?tag=world").text.count('<article class="story"') == 2
    strike = served.http.get("/?q=STRIKE").text  # ASCII case ignored, as on SQLite
    assert strike.count('<article class="story"') == 1 and "1 story match" in strike
    assert "No story matches" in served.http.get("/?q=zzz&tag=local").text
    assert "not found: try /," in served.http.get("/nope").text


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(binary: str, profile: Path, *args: str) -> str:
    """Run headless chromium once; its stdout (the DOM for --dump-dom)."""
    argv = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout.decode("utf-8", errors="replace")


def test_web_view_in_a_real_browser(served: Rig, tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(
            "chromium not found on PATH (`make test` installs it with apt-get when run as root)"
        )
    base = str(served.http.base_url).rstrip("/")
    profile = tmp_path / "chromium-profile"

    def dom(query: str = "") -> str:
        return chromium(binary, profile, "--dump-dom", f"{base}/{query}")

    page_dom = dom()
    bridge = "Harbor Street bridge to close for eight months as repairs begin"
    strike = "Rail workers vote for three-day strike over driverless trains plan"
    for text in (bridge, strike, "Harbor Street crossing shut until November", "2 sources",
                 "1 source", "Quay Times", "Riverside Post"):  # fmt: skip
        assert escape(text, quote=False) in page_dom, text
    # the hostile headline is text: escaped in the DOM, no element made of it, no script ran
    assert escape(HOSTILE, quote=False) in page_dom
    assert "<script" not in page_dom.lower() and "<img" not in page_dom.lower()
    title = re.search(r"<title>(.*?)</title>", page_dom, re.S)
    assert title and title.group(1) == "aggregator digest", title
    for mime, path in (("application/atom+xml", "/digest.atom"), ("application/rss+xml", "/digest.rss"),
                       ("application/feed+json", "/digest.json")):  # fmt: skip
        assert re.search(
            rf'<link rel="alternate" type="{re.escape(mime)}"[^>]*href="{path}"', page_dom
        )

    multi = dom("?min_size=2")
    assert bridge in multi and strike not in multi and "pwned" not in multi
    assert "1 story match" in multi  # queried from the database for the filter
    searched = dom("?q=STRIKE")
    assert strike in searched and bridge not in searched

    ARTIFACTS.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    chromium(binary, profile, f"--screenshot={SCREENSHOT}", "--window-size=1280,1600", f"{base}/")
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"web view screenshot: {SCREENSHOT}")
