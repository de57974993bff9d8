"""OPML in and out: the subscription list format every feed reader imports and exports.

Reading turns a reader's export into `FeedConfig` records (folders become tags); writing
does the reverse. Adding the imported feeds to feeds.yaml is aggregator/feeds_file.py's job.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

# `feed_key` is the duplicate rule parse_config enforces: one definition of "same feed".
from .config import FeedConfig, check_url, feed_key
from .errors import ConfigError

# DTDs are refused outright: a DOCTYPE can declare entities that expand exponentially
# ("billion laughs") or point at external files, and no real OPML export needs one.
# Checked in the encodings expat reads (UTF-8/ASCII/Latin-1 family and UTF-16).
_FORBIDDEN_MARKUP = tuple(
    marker.encode(codec)
    for marker in ("<!DOCTYPE", "<!ENTITY")
    for codec in ("ascii", "utf-16-le", "utf-16-be")
)
# `url` is OPML's attribute for non-feed outlines too; these types say it is not a feed.
_NON_FEED_TYPES = {"link", "include"}
_CATEGORY_SPLIT = re.compile(r"[,/]")
# Characters XML 1.0 cannot carry even escaped; dropped rather than producing a broken file.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class RejectedOutline:
    """An OPML feed outline whose URL cannot be followed, kept so the caller can report it."""

    url: str
    name: str | None
    problem: str  # from check_url, e.g. "must start with http:// or https://"


@dataclass(frozen=True)
class OpmlImport:
    """Everything found in an OPML file: usable feeds plus the outlines that were skipped."""

    feeds: tuple[FeedConfig, ...]
    rejected: tuple[RejectedOutline, ...]


def parse_opml(data: bytes, source: str) -> list[FeedConfig]:
    """Feeds subscribed in an OPML 1.0/2.0 document; `source` names the file in errors.

    Outlines with unusable URLs are dropped; use `parse_opml_import` to list them too.
    Documents with `<!DOCTYPE` or `<!ENTITY` are refused to rule out entity-expansion
    attacks, since the standard library XML parser has no switch to disable DTDs.
    """
    return list(parse_opml_import(data, source).feeds)


def parse_opml_import(data: bytes, source: str) -> OpmlImport:
    """Like `parse_opml`, also returning the outlines skipped for a bad URL.

    A feed listed in several folders (common in exports) becomes one FeedConfig with the
    tags of all of them, because feeds.yaml refuses duplicate URLs.
    """
    root = _parse_xml(data, source)
    body = root.find("body")
    if body is None:
        raise _invalid(source, "it has no <body> element")
    feeds: dict[str, FeedConfig] = {}
    rejected: list[RejectedOutline] = []
    for outline, folders in _walk(body, ()):
        url = _feed_url(outline)
        if url is None:
            continue
        name = _text(_attr(outline, "title")) or _text(_attr(outline, "text"))
        problem = check_url(url)
        if problem:
            rejected.append(RejectedOutline(url=url, name=name, problem=problem))
            continue
        tags = _unique(folders + _category_tags(_attr(outline, "category")))
        key = feed_key(url)
        if key in feeds:
            first = feeds[key]
            feeds[key] = FeedConfig(url=first.url, name=first.name, tags=_unique(first.tags + tags))
        else:
            feeds[key] = FeedConfig(url=url, name=name, tags=tags)
    return OpmlImport(feeds=tuple(feeds.values()), rejected=tuple(rejected))


def render_opml(
    feeds: Sequence[FeedConfig],
    title: str = "aggregator subscriptions",
    now: datetime | None = None,
) -> str:
    """OPML 2.0 document listing `feeds`, one folder per first tag, for any feed reader.

    Output depends only on the arguments (order follows `feeds`), so exports diff cleanly;
    `now` (naive means UTC) defaults to the current time for `dateCreated`.
    """
    when = now or datetime.now(UTC)
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    opml = ET.Element("opml", version="2.0")
    head = ET.SubElement(opml, "head")
    ET.SubElement(head, "title").text = _clean(title)
    ET.SubElement(head, "dateCreated").text = format_datetime(when, usegmt=True)
    body = ET.SubElement(opml, "body")
    folders: dict[str, ET.Element] = {}
    for feed in feeds:
        parent = body
        if feed.tags:
            first = feed.tags[0]
            if first not in folders:
                folders[first] = ET.SubElement(
                    body, "outline", text=_clean(first), title=_clean(first)
                )
            parent = folders[first]
        label = _clean(feed.name or feed.url)
        attrs = {"type": "rss", "text": label, "title": label, "xmlUrl": _clean(feed.url)}
        if feed.tags:
            attrs["category"] = ",".join(f"/{_clean(tag)}" for tag in feed.tags)
        ET.SubElement(parent, "outline", attrs)
    ET.indent(opml, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(opml, encoding="unicode") + "\n"


# --- reading -----------------------------------------------------------------------------


def _invalid(source: str, why: object) -> ConfigError:
    return ConfigError(f"{source}: not a valid OPML file: {why}; export it again from your reader")


def _parse_xml(data: bytes, source: str) -> ET.Element:
    if any(marker in data for marker in _FORBIDDEN_MARKUP):
        raise _invalid(
            source, "it contains a <!DOCTYPE> or <!ENTITY> declaration, refused for safety"
        )
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise _invalid(source, exc) from None
    if _local(root.tag) != "opml":
        raise _invalid(source, f"the root element is <{_local(root.tag)}>, not <opml>")
    return root


def _walk(
    node: ET.Element, folders: tuple[str, ...]
) -> Iterator[tuple[ET.Element, tuple[str, ...]]]:
    """Every outline below `node` with the titles of the folders enclosing it."""
    for child in node:
        if _local(child.tag) != "outline":
            continue
        yield child, folders
        if len(child) and _feed_url(child) is None:
            label = _text(_attr(child, "title")) or _text(_attr(child, "text"))
            yield from _walk(child, folders + ((label,) if label else ()))
        else:
            yield from _walk(child, folders)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(outline: ET.Element, name: str) -> str | None:
    """Attribute by case-insensitive name: exports spell it xmlUrl, xmlurl or XMLURL."""
    name = name.lower()
    for key, value in outline.attrib.items():
        if key.lower() == name:
            return value
    return None


def _feed_url(outline: ET.Element) -> str | None:
    url = _attr(outline, "xmlUrl")
    if url is None and (_attr(outline, "type") or "").strip().lower() not in _NON_FEED_TYPES:
        url = _attr(outline, "url")
    return url.strip() if url is not None else None


def _text(value: str | None) -> str | None:
    """Attribute text as a name: many exports escape titles twice (`&amp;amp;`), so HTML
    entities left after XML decoding are decoded too, and whitespace is collapsed."""
    if value is None:
        return None
    return " ".join(html.unescape(value).split()) or None


def _category_tags(value: str | None) -> tuple[str, ...]:
    """Tags from OPML 2.0 `category="/News/World,/Tech"`: every path segment counts."""
    if not value:
        return ()
    return tuple(tag for part in _CATEGORY_SPLIT.split(value) if (tag := _text(part)))


def _unique(tags: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(tags))


# --- writing -----------------------------------------------------------------------------


def _clean(text: str) -> str:
    return _XML_INVALID.sub("", text)
