"""The digest as a web page (`GET /` of the daemon's server): one plain, server-rendered
HTML document, no JavaScript and no external assets (CSS inline).

Pure functions: a `DigestSnapshot` and the request's query string in, bytes out. The
unfiltered page is the snapshot the daemon published last (the digest's stories, in the
digest's order); a filtered one (`?tag=`, `?min_size=`, `?q=`) is a snapshot the server
queries from the database for that filter (pagecache.py, run by the server), over every story of the digest
window, not only the ones the digest kept. `q` is a substring of the story's title or a
member's headline (ASCII case ignored; `aggregator search` is the full-text search).
With settings.digest.group "stories" each story shows its lead cluster and, under it, its
"Other coverage"; the filters look at every cluster of a story.

Every value from feeds is cleaned of control characters and escaped; links are emitted
only for absolute http(s) URLs.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qs, urlencode

from ..ingest.normalize import one_line
from ..store.queries import ClusterView, MemberView, outlet_lines
from ..store.story_queries import StoryView
from ..timeutil import relative
from .digest import OTHER_COVERAGE, UNTITLED, Listed, clean, iso, safe_url

CONTENT_TYPE = "text/html; charset=utf-8"
# Sent with the page: even if escaping ever failed, no script, frame or remote asset runs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
FEED_LINKS = (  # (path, MIME type, label): autodiscovery in <head>, links in the header
    ("/digest.atom", "application/atom+xml", "Atom"),
    ("/digest.rss", "application/rss+xml", "RSS"),
    ("/digest.json", "application/feed+json", "JSON Feed"),
)
MAX_QUERY = 200  # characters of ?q= used; a longer one is cut


@dataclass(frozen=True)
class DigestSnapshot:
    """What the daemon published last: the digest's stories or clusters (in the digest's
    order) and, per story or cluster id, the tags of the feeds that carried it."""

    title: str
    clusters: tuple[Listed, ...]
    tags: Mapping[int, frozenset[str]] = field(default_factory=dict)
    built: datetime | None = None
    all_tags: tuple[str, ...] = ()  # every tag of the feeds followed, for the menu
    matched: int | None = None  # set for the stories of a filter, queried for it: how many matched


@dataclass(frozen=True)
class PageFilter:
    """The page's query string: `tag` (any of), `min_size` (items in the story), `q`."""

    tags: tuple[str, ...] = ()
    min_size: int = 1
    q: str = ""

    def __bool__(self) -> bool:
        return bool(self.tags or self.min_size > 1 or self.q)

    def keeps(self, listed: Listed, tags: frozenset[str]) -> bool:
        """Whether the cluster or story (any of its clusters: `tags` are all of theirs)
        passes the filter."""
        if listed.size < self.min_size:
            return False
        if self.tags and not any(t == w or t.startswith(f"{w}/") for t in tags for w in self.tags):
            return False
        if self.q:
            needle = self.q.casefold()
            clusters = listed.clusters if isinstance(listed, StoryView) else (listed,)
            texts = [t for c in clusters for t in (c.title, *(m.title for m in c.items))]
            return any(needle in (t or "").casefold() for t in texts)
        return True


def parse_filter(query_string: str) -> PageFilter:
    """The filter of `tag=world&min_size=2&q=strike`; malformed values are ignored
    (min_size below 1 or not a number counts as 1)."""
    params = parse_qs(query_string, keep_blank_values=False)
    tags = tuple(dict.fromkeys(t.strip() for t in params.get("tag", ()) if t.strip()))
    try:
        min_size = max(1, int(params.get("min_size", ["1"])[-1]))
    except ValueError:
        min_size = 1
    q = one_line(clean(params.get("q", [""])[-1]))[:MAX_QUERY]
    return PageFilter(tags, min_size, q)


def select(snapshot: DigestSnapshot, where: PageFilter) -> list[Listed]:
    """The clusters the filter keeps, in the digest's order (ranking.story_score)."""
    return [c for c in snapshot.clusters if where.keeps(c, snapshot.tags.get(c.id, frozenset()))]


def _latest(cluster: ClusterView) -> datetime:
    return max((m.published for m in cluster.items), default=cluster.last_seen)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font:16px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:52rem;
padding:1rem 1.25rem 3rem;color:#1d1d1f;background:#fafafa}
a{color:#0b57d0}a:visited{color:#6b3fa0}
header h1{font-size:1.5rem;margin:.5rem 0 .25rem}
.sub{color:#555;margin:0 0 .75rem;font-size:.9rem}
form{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:0 0 1rem;font-size:.9rem}
input,select,button{font:inherit;padding:.25rem .4rem}
input[type=search]{flex:1 1 14rem}
.story{background:#fff;border:1px solid #e2e2e2;border-radius:6px;padding:.75rem 1rem;margin:0 0 .75rem}
.story h2{font-size:1.1rem;margin:0 0 .25rem;line-height:1.3}
.badge{display:inline-block;font-size:.75rem;font-weight:600;border-radius:999px;padding:.05rem .5rem;
margin-right:.4rem;background:#e8eefc;color:#1a3d8f;vertical-align:.1rem;white-space:nowrap}
.badge.one{background:#eee;color:#555}
.meta{color:#666;font-size:.8rem;margin:0 0 .4rem}
.sources{margin:0;padding-left:1.1rem;font-size:.9rem}
.sources li{margin:.15rem 0}
.outlet{font-weight:600}
.lede{margin:.25rem 0 .5rem;color:#333}
.other h3{font-size:.85rem;margin:.6rem 0 .2rem;color:#444}
time{color:#666;font-size:.8rem;white-space:nowrap}
.empty{color:#555}
footer{color:#777;font-size:.8rem;margin-top:2rem}
"""


def _e(text: str | None) -> str:
    """Escaped for HTML text and double-quoted attributes, controls removed."""
    return html.escape(clean(text), quote=True)


def _t(text: str | None) -> str:
    """One line of feed text, escaped."""
    return _e(one_line(clean(text)))


def _time(dt: datetime, now: datetime) -> str:
    stamp = iso(dt)
    return f'<time datetime="{stamp}" title="{stamp}">{_e(relative(dt, now))}</time>'


def _link(url: str | None, text_html: str) -> str:
    href = safe_url(url)
    return f'<a href="{_e(href)}">{text_html}</a>' if href else text_html


def _sources_badge(n: int) -> str:
    return f'<span class="badge{" one" if n == 1 else ""}">{n} source{"" if n == 1 else "s"}</span>'


def _member(m: MemberView, now: datetime) -> str:
    headline = _link(m.url, _t(m.title) or UNTITLED)
    return f'<li><span class="outlet">{_t(m.feed) or UNTITLED}</span>: {headline} {_time(m.published, now)}</li>'


def _title(c: ClusterView) -> str:
    return _t(c.title) or next((_t(m.title) for m in c.items if m.title), UNTITLED)


def _other(c: ClusterView, now: datetime) -> str:
    """One line of a story's other coverage: the cluster's outlets and headline."""
    outlets = ", ".join(dict.fromkeys(_t(m.feed) or UNTITLED for m in outlet_lines(c.items)))
    return (f'<li><span class="outlet">{outlets}</span>: {_link(c.url, _title(c))} '
            f"{_time(_latest(c), now)}</li>")  # fmt: skip


def _story(listed: Listed, tags: frozenset[str], now: datetime) -> str:
    if isinstance(listed, StoryView):
        c, others = listed.lead, listed.others
        size, sources = listed.size, listed.outlets
        first, latest = listed.first_seen, max(_latest(o) for o in listed.clusters)
    else:
        c, others = listed, ()
        size, sources, first, latest = c.size, c.sources, c.first_seen, _latest(c)
    items = f"{size} item{'' if size == 1 else 's'}"
    meta = [items, f"first {_time(first, now)}", f"latest {_time(latest, now)}"]
    if tags:
        meta.append("tags: " + ", ".join(f'<a href="/?{_e(urlencode({"tag": t}))}">{_e(t)}</a>'
                                         for t in sorted(tags)))  # fmt: skip
    members = "".join(_member(m, now) for m in outlet_lines(c.items))
    lede = f'<p class="lede">{_t(c.lede)}</p>' if c.lede else ""
    other = (f'<section class="other"><h3>{OTHER_COVERAGE}</h3><ul class="sources">'
             f'{"".join(_other(o, now) for o in others)}</ul></section>') if others else ""  # fmt: skip
    return (
        f'<article class="story" id="story-{listed.id}">'
        f"<h2>{_sources_badge(sources)}{_link(c.url, _title(c))}</h2>"
        f'<p class="meta">{" · ".join(meta)}</p>{lede}'
        f'<ol class="sources">{members}</ol>{other}</article>'
    )


def _form(where: PageFilter, all_tags: Sequence[str]) -> str:
    options = ['<option value="">any tag</option>'] + [
        f'<option value="{_e(t)}"{" selected" if t in where.tags else ""}>{_e(t)}</option>'
        for t in all_tags
    ]
    sizes = ['<option value="1">all stories</option>'] + [
        f'<option value="{n}"{" selected" if where.min_size == n else ""}>{n}+ items</option>'
        for n in (2, 3, 5, 10)
    ]
    if where.min_size > 1 and where.min_size not in (2, 3, 5, 10):
        sizes.append(f'<option value="{where.min_size}" selected>{where.min_size}+ items</option>')
    clear = ' <a href="/">clear filters</a>' if where else ""
    return (
        '<form method="get" action="/" role="search">'
        f'<input type="search" name="q" value="{_e(where.q)}" placeholder="headline contains…" '
        'aria-label="headline contains">'
        f'<select name="tag" aria-label="tag">{"".join(options)}</select>'
        f'<select name="min_size" aria-label="size">{"".join(sizes)}</select>'
        f'<button type="submit">Filter</button>{clear}</form>'
    )


def render_page(snapshot: DigestSnapshot, where: PageFilter, now: datetime) -> bytes:
    """The HTML page of the snapshot's stories that `where` keeps, as UTF-8 bytes."""
    shown = select(snapshot, where)
    all_tags = sorted({*snapshot.all_tags, *(t for tags in snapshot.tags.values() for t in tags)})
    title = _t(snapshot.title) or "aggregator digest"
    alternates = "".join(
        f'<link rel="alternate" type="{mime}" title="{title} ({label})" href="{path}">'
        for path, mime, label in FEED_LINKS
    )
    feeds = " · ".join(f'<a href="{path}">{label}</a>' for path, _, label in FEED_LINKS)
    total = len(snapshot.clusters)
    if snapshot.matched is not None:
        matched = snapshot.matched
        count = f"{matched} stor{'y' if matched == 1 else 'ies'} match"
        if matched > len(shown):
            count += f" (the best {len(shown)} shown)"
    else:
        count = f"{len(shown)} of {total} stories" if where else f"{total} stories"
    if shown:
        body = "".join(_story(c, snapshot.tags.get(c.id, frozenset()), now) for c in shown)
    elif total or snapshot.matched is not None:
        body = '<p class="empty">No story matches these filters. <a href="/">Show all</a>.</p>'
    else:
        body = '<p class="empty">No stories in the digest window yet.</p>'
    built = f"Built {_time(snapshot.built, now)}. " if snapshot.built else ""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>{title}</title>{alternates}<style>{_CSS}</style></head><body>"
        f"<header><h1>{title}</h1>"
        f'<p class="sub">{count} · subscribe: {feeds}</p>{_form(where, all_tags)}</header>'
        f"<main>{body}</main>"
        f"<footer>{built}Each story lists every outlet that carried it. "
        f'Times are UTC; hover for the exact time. <a href="/healthz">health</a></footer>'
        "</body></html>\n"
    )
    return page.encode("utf-8")
