"""Bytes -> RawFeed. Format detection, then our lxml fast path for well-formed RSS/Atom
(fastparse.py), feedparser for every other RSS 0.9x/1.0/2.0 and Atom 0.3/1.0 document, or
our JSON Feed 1.0/1.1 reader, which feedparser lacks.

Nothing here touches the network or the database; a document that yields no entries comes
back as a RawFeed with `error` set, never as an exception.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import feedparser

from ..records import RawEntry, RawFeed
from .fastparse import parse_well_formed
from .feed_values import clean_str, struct_to_datetime, ttl_seconds, without_lone_surrogates

# We turn HTML into text ourselves, and the digest sanitises what it publishes, so
# feedparser's own sanitiser and URI resolution are wasted work (about 2.4x slower).
_FEEDPARSER_OPTIONS = {"sanitize_html": False, "resolve_relative_uris": False}

JSON_FEED_TYPES = ("application/feed+json", "application/json", "text/json")


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return ""


def looks_like_json_feed(body: bytes, headers: Mapping[str, str]) -> bool:
    """JSON Feed by content type, or by a body that opens like a JSON object (no XML
    does; servers send JSON Feeds as application/xml or text/plain, and the "version"
    key may come last)."""
    ctype = _header(headers, "content-type").split(";")[0].strip().lower()
    if ctype in JSON_FEED_TYPES:
        return True
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def _iso_to_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# A character reference to a UTF-16 surrogate (`&#55357;`, `&#xD83D;`), as Java escapers
# write non-BMP characters; feedparser's loose parser fails the whole document on one.
_SURROGATE_REF = re.compile(rb"&#(?:[xX]0*([dD][89a-fA-F][0-9a-fA-F]{2})|0*(5[5-7][0-9]{3}));")


def joined_surrogate_refs(body: bytes) -> bytes:
    """`&#55357;&#56832;` -> `&#x1F600;`; a lone surrogate reference -> `&#xFFFD;`."""
    if b"&#" not in body or not _SURROGATE_REF.search(body):
        return body
    out, pos = [], 0
    matches = list(_SURROGATE_REF.finditer(body))
    skip = False
    for i, m in enumerate(matches):
        if skip:
            skip = False
            continue
        value = int(m.group(1), 16) if m.group(1) else int(m.group(2))
        if not 0xD800 <= value <= 0xDFFF:
            continue  # (55000-57999 decimal that is no surrogate: left as it is)
        out.append(body[pos : m.start()])
        nxt = matches[i + 1] if i + 1 < len(matches) else None
        low = (int(nxt.group(1), 16) if nxt.group(1) else int(nxt.group(2))) if nxt and nxt.start() == m.end() else -1
        if value <= 0xDBFF and 0xDC00 <= low <= 0xDFFF:
            out.append(b"&#x%X;" % (0x10000 + ((value - 0xD800) << 10) + (low - 0xDC00)))
            pos, skip = nxt.end(), True
        else:
            out.append(b"&#xFFFD;")
            pos = m.end()
    out.append(body[pos:])
    return b"".join(out)


def _is_html(detail: Any) -> bool:
    """feedparser reports each text construct's type; only text/plain is not markup."""
    return not (isinstance(detail, Mapping) and detail.get("type") == "text/plain")


def _feedparser_entry(e: Mapping[str, Any]) -> RawEntry:
    bodies = [(c.get("value") or "", _is_html(c)) for c in e.get("content") or ()]
    bodies.append((e.get("summary") or "", _is_html(e.get("summary_detail"))))
    content, content_is_html = max(bodies, key=lambda b: len(b[0]))
    author = e.get("author_detail", {}).get("name") if isinstance(e.get("author_detail"), Mapping) else None
    # feedparser copies the published date into `updated_parsed` when a feed has no
    # <updated>; only a real one counts (dict membership and dict.get skip the fallback).
    # An element named <date> sets `updated` alone: then there is no updated date (its
    # FeedParserDict lookup raised KeyError and failed the whole feed).
    updated = dict.get(e, "updated_parsed") if "updated" in e.keys() else None  # noqa: SIM118
    return RawEntry(
        guid=clean_str(e.get("id")),
        link=clean_str(e.get("link")),
        title=clean_str(e.get("title")),
        content=content or None,
        author=clean_str(author) or clean_str(e.get("author")),
        published=struct_to_datetime(e.get("published_parsed") or e.get("created_parsed")),
        updated=struct_to_datetime(updated),
        title_is_html=_is_html(e.get("title_detail")),
        content_is_html=content_is_html,
    )


def parse_xml_feed(body: bytes, headers: Mapping[str, str]) -> RawFeed:
    """RSS/Atom/RDF through feedparser. A bozo document that still gave entries is kept
    with a warning; one with none is an error."""
    parsed = feedparser.parse(joined_surrogate_refs(body), response_headers=dict(headers), **_FEEDPARSER_OPTIONS)
    feed = parsed.get("feed", {})
    entries = tuple(_feedparser_entry(e) for e in parsed.get("entries", ()))
    version = parsed.get("version") or None
    problem = None
    if parsed.get("bozo"):
        exc = parsed.get("bozo_exception")
        problem = f"{type(exc).__name__}: {exc}" if exc else "malformed document"
    if not entries:
        if not version:
            head = body[:1024].lstrip().lower()
            if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
                error = "the URL returned an HTML page, not a feed; find the page's feed link (RSS/Atom) and use that URL"
            elif not body.strip():
                error = "the response was empty; check the URL"
            else:
                error = "not a recognisable RSS/Atom/JSON feed" + (f" ({problem})" if problem else "")
            return RawFeed(format=None, error=error)
        if problem:
            return RawFeed(format=version, error=f"feed could not be parsed: {problem}")
    return RawFeed(
        format=version,
        title=clean_str(feed.get("title")),
        link=clean_str(feed.get("link")),
        ttl=ttl_seconds(feed.get("ttl")),
        entries=entries,
        warning=f"malformed feed, entries recovered: {problem}" if problem and entries else None,
    )


def _json_author(item: Mapping[str, Any]) -> str | None:
    authors = item.get("authors")
    if isinstance(authors, list) and authors and isinstance(authors[0], dict):
        return clean_str(authors[0].get("name"))
    author = item.get("author")
    if isinstance(author, dict):
        return clean_str(author.get("name"))
    return None


def _json_int(text: str) -> int | str:
    """A JSON integer; one longer than Python converts (4,300 digits) stays text, so one
    absurd value does not fail the whole feed."""
    return int(text) if len(text) <= 4000 else text


def parse_json_feed(body: bytes) -> RawFeed:
    """JSON Feed 1.0 / 1.1 (https://jsonfeed.org/version/1.1)."""
    try:
        doc = json.loads(body.decode("utf-8-sig"), parse_int=_json_int)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return RawFeed(format=None, error=f"invalid JSON: {exc}")
    except RecursionError:
        return RawFeed(format=None, error="invalid JSON: nested too deeply")
    if not isinstance(doc, dict) or "jsonfeed.org" not in str(doc.get("version", "")):
        return RawFeed(format=None, error="JSON document is not a JSON Feed (no jsonfeed.org version)")
    version = "json11" if str(doc["version"]).rstrip("/").endswith("1.1") else "json10"
    entries = []
    items = doc.get("items")
    if items is None:
        items = []
    if not isinstance(items, list):
        return RawFeed(format=version, error="the JSON Feed's `items` is not a list")
    for item in items:
        if not isinstance(item, dict):
            continue
        bodies = [(item.get(k), k == "content_html") for k in ("content_html", "content_text", "summary")]
        content, content_is_html = max(
            ((without_lone_surrogates(b), html) for b, html in bodies if isinstance(b, str)),
            key=lambda b: len(b[0]), default=(None, False),
        )  # fmt: skip
        entries.append(
            RawEntry(
                guid=clean_str(item.get("id")),
                link=clean_str(item.get("url")) or clean_str(item.get("external_url")),
                title=clean_str(item.get("title")),
                content=content,
                author=_json_author(item),
                published=_iso_to_datetime(item.get("date_published")),
                updated=_iso_to_datetime(item.get("date_modified")),
                title_is_html=False,  # JSON Feed titles are plain text by spec
                content_is_html=content_is_html,
            )
        )
    if not entries:
        return RawFeed(format=version, title=clean_str(doc.get("title")), error="the JSON Feed has no items")
    return RawFeed(
        format=version,
        title=clean_str(doc.get("title")),
        link=clean_str(doc.get("home_page_url")),
        entries=tuple(entries),
    )


def parse_feed(body: bytes, headers: Mapping[str, str] | None = None) -> RawFeed:
    """Any supported feed document; the format is detected from headers and content.
    Well-formed RSS/Atom takes the fast path (lxml, fastparse.py), which gives what
    feedparser gives; feedparser reads everything else."""
    headers = headers or {}
    if looks_like_json_feed(body, headers):
        return parse_json_feed(body)
    return parse_well_formed(body, headers) or parse_xml_feed(body, headers)
