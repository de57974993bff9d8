"""Stories -> the digest feed (Atom 1.0, RSS 2.0, JSON Feed 1.1): one entry per story
(settings.digest.group "stories": the lead cluster, then its other coverage) or per copy
cluster ("clusters"), listing every outlet that carried it.

Pure functions of their inputs (the clock is passed in as `now`). Text from feeds may hold
anything, so it is cleaned of characters XML forbids and every value is escaped: the only
markup in the output is the little HTML built here (p, ul, li, a href).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import urlsplit

from .. import PROJECT_URL, __version__
from ..errors import ConfigError
from ..ingest.normalize import one_line
from ..store.queries import ClusterView, MemberView, outlet_lines
from ..store.story_queries import StoryView

# What the digest lists: copy clusters, or stories (settings.digest.group).
Listed = ClusterView | StoryView


@dataclass(frozen=True)
class DigestMeta:
    """Feed-level facts of the digest (from config), the same in every format."""

    title: str = "aggregator digest"
    self_url: str | None = None  # where it is served: http://127.0.0.1:8080/digest.atom
    site_url: str | None = None
    feed_id: str = "urn:aggregator:digest"  # stable id of the digest feed itself


FORMATS = ("atom", "rss", "json")
CONTENT_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
}
AUTHOR = "aggregator"
UNTITLED = "(untitled)"
# The plain summary names this many outlets, then "and N more": it is a preview line.
SUMMARY_OUTLETS = 10

_ATOM_NS = "http://www.w3.org/2005/Atom"
_JSONFEED_VERSION = "https://jsonfeed.org/version/1.1"
_SAFE_SCHEMES = ("http", "https")

# Characters XML 1.0 forbids (C0 controls except tab/newline/CR, lone surrogates, U+FFFE/F),
# plus C1 controls and terminal escape sequences, which are never text.
_FORBIDDEN = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]"
)


# ---------------------------------------------------------------- entry content


@dataclass(frozen=True)
class _Member:
    feed: str
    title: str
    url: str | None
    published: str


@dataclass(frozen=True)
class _Coverage:
    """One other cluster of a story: its outlets and headline."""

    cluster: int
    outlets: tuple[str, ...]
    title: str
    url: str | None


@dataclass(frozen=True)
class _Entry:
    """What every format says about one cluster or story, cleaned once."""

    id: str
    title: str
    url: str | None
    updated: datetime
    published: datetime
    sources: int
    members: tuple[_Member, ...]
    lede: str
    content_html: str
    summary: str
    other: tuple[_Coverage, ...] = ()
    story: int | None = None


OTHER_COVERAGE = "Other coverage"


def entry_id(meta: DigestMeta, cluster_id: int) -> str:
    """The entry's id: depends only on the cluster, so readers see an update, not a new
    entry, when outlets join the story."""
    return f"{meta.feed_id}:cluster:{cluster_id}"


def story_entry_id(meta: DigestMeta, story_id: int) -> str:
    """A story's entry id: the story's id (its first cluster's) under its own name, so it
    stays when the lead changes and never equals a cluster's entry id."""
    return f"{meta.feed_id}:story:{story_id}"


def clean(text: str | None) -> str:
    """Text without the characters XML 1.0 forbids (and other controls)."""
    return _FORBIDDEN.sub("", text) if text else ""


def safe_url(url: str | None) -> str | None:
    """The link if it is an absolute http(s) URL, else None: javascript:, data: and
    relative links never become live."""
    if not url:
        return None
    url = clean(url).strip()
    if any(c.isspace() for c in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in _SAFE_SCHEMES or not parts.netloc:
        return None
    return url


def iso(dt: datetime) -> str:
    """RFC 3339 / ISO 8601 UTC, second precision; naive times are taken as UTC."""
    return _utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).replace(microsecond=0)


def _line(text: str | None) -> str:
    return one_line(clean(text))


def reported_by(sources: int) -> str:
    return f"Reported by {sources} source{'' if sources == 1 else 's'}"


def _outlets(members: Iterable[_Member]) -> list[str]:
    seen: dict[str, None] = {}
    for m in members:
        seen.setdefault(m.feed, None)
    return list(seen)


def _summary(sources: int, members: Sequence[_Member], lede: str = "",
             other: Sequence[_Coverage] = ()) -> str:  # fmt: skip
    names = list(dict.fromkeys([*_outlets(members), *(o for c in other for o in c.outlets)]))
    shown = ", ".join(names[:SUMMARY_OUTLETS])
    if len(names) > SUMMARY_OUTLETS:
        shown += f" and {len(names) - SUMMARY_OUTLETS} more"
    line = f"{reported_by(sources)}: {shown}" if shown else reported_by(sources)
    if other:
        line += f"\n\n{OTHER_COVERAGE}:" + "".join(
            f"\n{', '.join(c.outlets)}: {c.title or UNTITLED}" for c in other
        )
    return f"{lede}\n\n{line}" if lede else line


def _content_html(sources: int, members: Sequence[_Member], lede: str = "",
                  other: Sequence[_Coverage] = ()) -> str:  # fmt: skip
    """Sanitised by construction: built from plain text, every value escaped, links only
    for http(s), no attribute but href."""
    e = html.escape
    parts = [f"<p>{e(lede)}</p>"] if lede else []
    parts.append(f"<p>{e(reported_by(sources))}</p>")
    if members:
        parts.append("<ul>")
        for m in members:
            headline = e(m.title or UNTITLED)
            if m.url:
                headline = f'<a href="{e(m.url)}">{headline}</a>'
            parts.append(f"<li>{e(m.feed)}: {headline} ({e(m.published)})</li>")
        parts.append("</ul>")
    if other:
        parts.append(f"<p>{OTHER_COVERAGE}</p><ul>")
        for c in other:
            headline = e(c.title or UNTITLED)
            if c.url:
                headline = f'<a href="{e(c.url)}">{headline}</a>'
            parts.append(f"<li>{e(', '.join(c.outlets))}: {headline}</li>")
        parts.append("</ul>")
    return "".join(parts)


def _member(m: MemberView) -> _Member:
    return _Member(
        feed=_line(m.feed) or UNTITLED,
        title=_line(m.title),
        url=safe_url(m.url),
        published=iso(m.published),
    )


def _entry(listed: Listed, meta: DigestMeta) -> _Entry:
    if isinstance(listed, StoryView):
        return _story_entry(listed, meta)
    return _cluster_entry(listed, meta)


def _title(cluster: ClusterView, members: Sequence[_Member]) -> str:
    return _line(cluster.title) or next((m.title for m in members if m.title), UNTITLED)


def _cluster_entry(cluster: ClusterView, meta: DigestMeta) -> _Entry:
    members = tuple(_member(m) for m in outlet_lines(cluster.items))
    sources = cluster.sources
    lede = _line(cluster.lede)
    return _Entry(
        id=entry_id(meta, cluster.id),
        title=_title(cluster, members),
        url=safe_url(cluster.url),
        updated=_utc(cluster.updated or cluster.last_seen),
        published=_utc(cluster.first_seen),
        sources=sources,
        members=members,
        lede=lede,
        content_html=_content_html(sources, members, lede),
        summary=_summary(sources, members, lede),
    )


def _coverage(cluster: ClusterView) -> _Coverage:
    members = tuple(_member(m) for m in outlet_lines(cluster.items))
    return _Coverage(cluster.id, tuple(_outlets(members)), _title(cluster, members), safe_url(cluster.url))


def _story_entry(story: StoryView, meta: DigestMeta) -> _Entry:
    """The lead cluster's entry (headline, lede, outlets), with the story's id, times and
    outlet count, and an "Other coverage" list of the story's other clusters."""
    lead = _cluster_entry(story.lead, meta)
    other = tuple(_coverage(c) for c in story.others)
    return replace(
        lead,
        id=story_entry_id(meta, story.id),
        updated=_utc(story.updated),
        published=_utc(story.first_seen),
        sources=story.outlets,
        content_html=_content_html(story.outlets, lead.members, lead.lede, other),
        summary=_summary(story.outlets, lead.members, lead.lede, other),
        other=other,
        story=story.id,
    )


def _feed_updated(entries: Sequence[_Entry], now: datetime) -> datetime:
    # The newest entry, not the clock: an unchanged digest renders to identical bytes.
    return max((e.updated for e in entries), default=_utc(now))


# ---------------------------------------------------------------- formats


def _x(text: str) -> str:
    """Escaped for XML text and double-quoted attributes."""
    return html.escape(text, quote=True)


def render_atom(clusters: Sequence[Listed], meta: DigestMeta, now: datetime) -> bytes:
    """Atom 1.0 (RFC 4287) document of the digest."""
    entries = [_entry(c, meta) for c in clusters]
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<feed xmlns="{_ATOM_NS}">',
        f"<id>{_x(clean(meta.feed_id))}</id>",
        f'<title type="text">{_x(_line(meta.title))}</title>',
        f"<updated>{iso(_feed_updated(entries, now))}</updated>",
        f"<author><name>{AUTHOR}</name></author>",
        f'<generator uri="{_x(PROJECT_URL)}" version="{__version__}">aggregator</generator>',
    ]
    if meta.self_url:
        out.append(
            f'<link rel="self" type="application/atom+xml" href="{_x(clean(meta.self_url))}"/>'
        )
    if meta.site_url:
        out.append(f'<link rel="alternate" type="text/html" href="{_x(clean(meta.site_url))}"/>')
    for e in entries:
        out += [
            "<entry>",
            f"<id>{_x(e.id)}</id>",
            f'<title type="text">{_x(e.title)}</title>',
            f"<updated>{iso(e.updated)}</updated>",
            f"<published>{iso(e.published)}</published>",
        ]
        if e.url:
            out.append(f'<link rel="alternate" type="text/html" href="{_x(e.url)}"/>')
        out += [
            f'<summary type="text">{_x(e.summary)}</summary>',
            f'<content type="html">{_x(e.content_html)}</content>',
            "</entry>",
        ]
    out.append("</feed>\n")
    return "\n".join(out).encode("utf-8")


def render_rss(clusters: Sequence[Listed], meta: DigestMeta, now: datetime) -> bytes:
    """RSS 2.0 document of the digest (guids are the Atom entry ids, not permalinks)."""
    entries = [_entry(c, meta) for c in clusters]
    title = _x(_line(meta.title))
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<rss version="2.0" xmlns:atom="{_ATOM_NS}">',
        "<channel>",
        f"<title>{title}</title>",
    ]
    link = meta.site_url or meta.self_url
    if link:
        out.append(f"<link>{_x(clean(link))}</link>")
    out += [
        f"<description>{title}: stories grouped across feeds</description>",
        f"<lastBuildDate>{_rfc822(_feed_updated(entries, now))}</lastBuildDate>",
        f"<generator>aggregator {__version__}</generator>",
    ]
    if meta.self_url:
        out.append(
            f'<atom:link rel="self" type="application/rss+xml" href="{_x(clean(meta.self_url))}"/>'
        )
    for e in entries:
        out += ["<item>", f"<title>{_x(e.title)}</title>"]
        if e.url:
            out.append(f"<link>{_x(e.url)}</link>")
        out += [
            f'<guid isPermaLink="false">{_x(e.id)}</guid>',
            f"<pubDate>{_rfc822(e.published)}</pubDate>",
            f"<description>{_x(e.content_html)}</description>",
            "</item>",
        ]
    out += ["</channel>", "</rss>\n"]
    return "\n".join(out).encode("utf-8")


def _rfc822(dt: datetime) -> str:
    return format_datetime(_utc(dt), usegmt=True)


def render_json(clusters: Sequence[Listed], meta: DigestMeta, now: datetime) -> bytes:
    """JSON Feed 1.1 document of the digest; members in the `_aggregator` extension."""
    entries = [_entry(c, meta) for c in clusters]
    feed: dict = {"version": _JSONFEED_VERSION, "title": _line(meta.title)}
    if meta.site_url:
        feed["home_page_url"] = clean(meta.site_url)
    if meta.self_url:
        feed["feed_url"] = clean(meta.self_url)
    feed["authors"] = [{"name": AUTHOR}]
    feed["items"] = [_json_item(e) for e in entries]
    return (json.dumps(feed, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _json_item(e: _Entry) -> dict:
    item: dict = {"id": e.id}
    if e.url:
        item["url"] = e.url
    item |= {
        "title": e.title,
        "content_html": e.content_html,
        "content_text": e.summary,
        "date_published": iso(e.published),
        "date_modified": iso(e.updated),
        "_aggregator": {
            "sources": e.sources,
            "members": [
                {"feed": m.feed, "title": m.title, "url": m.url, "published": m.published}
                for m in e.members
            ],
        },
    }
    if e.story is not None:
        item["_aggregator"] |= {
            "story": e.story,
            "other_coverage": [
                {"cluster": c.cluster, "outlets": list(c.outlets), "title": c.title, "url": c.url}
                for c in e.other
            ],
        }
    return item


_RENDERERS = {"atom": render_atom, "rss": render_rss, "json": render_json}


def render(clusters: Sequence[Listed], fmt: str, meta: DigestMeta, now: datetime) -> bytes:
    """The digest in one of FORMATS, as bytes to serve with CONTENT_TYPES[fmt]."""
    try:
        renderer = _RENDERERS[fmt]
    except KeyError:
        raise ConfigError(
            f"unknown digest format {fmt!r}: use one of {', '.join(FORMATS)}"
        ) from None
    return renderer(clusters, meta, now)


# ---------------------------------------------------------------- output
