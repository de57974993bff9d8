"""OPML in and out: the subscription list format every feed reader imports and exports.

Folders are tags. A feed inside nested folders (Tech > Apple) gets the tag "Tech/Apple":
in feeds.yaml a "/" in a tag separates folder levels, so a plain tag ("world") is a
top-level folder and old files mean what they always meant. A feed listed in several
folders (Feedly and Inoreader export it once per folder) gets one tag per folder, and is
exported the same way: once under each of its tags, so a reader that merges duplicates
(Feedly, Inoreader, listparser, us) gets every folder back and one that keeps the first
(Miniflux) gets the first tag. A "/" inside a folder's own title is read as a level
separator too; that is the price of paths that read naturally in feeds.yaml.

Parsing uses defusedxml: it refuses DTDs, entity declarations and external references
inside expat itself, whatever the document's encoding, where our own code could only
scan the bytes for `<!DOCTYPE` in the encodings it thought of.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import defusedxml
import defusedxml.ElementTree as SafeET

from ..config import FeedConfig, check_url, feed_key
from ..errors import ConfigError
from ..records import FeedSite

FOLDER_SEPARATOR = "/"
# `url` is OPML's attribute for non-feed outlines too; these types say it is not a feed.
_NON_FEED_TYPES = {"link", "include"}
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


def folder_path(tag: str) -> tuple[str, ...]:
    """The folders a tag stands for: "Tech/Apple" is Apple inside Tech; blanks dropped."""
    return tuple(part for part in (p.strip() for p in tag.split(FOLDER_SEPARATOR)) if part)


def folder_tag(path: Sequence[str]) -> str:
    """The tag for a folder path, the inverse of `folder_path`."""
    return FOLDER_SEPARATOR.join(path)


def parse_opml(data: bytes, source: str) -> list[FeedConfig]:
    """Feeds subscribed in an OPML 1.0/2.0 document; `source` names the file in errors.

    Outlines with unusable URLs are dropped; use `parse_opml_import` to list them too.
    """
    return list(parse_opml_import(data, source).feeds)


def parse_opml_import(data: bytes, source: str) -> OpmlImport:
    """Like `parse_opml`, also returning the outlines skipped for a bad URL.

    A feed listed in several folders becomes one FeedConfig with a tag per folder, because
    feeds.yaml refuses duplicate URLs. A title that is only the feed's or the site's URL
    (what readers write for a feed they never named) is not kept as a name, so the feed's
    own title shows instead.
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
        if name in (url, (_attr(outline, "htmlUrl") or "").strip()):
            name = None
        problem = check_url(url)
        if problem:
            rejected.append(RejectedOutline(url=url, name=name, problem=problem))
            continue
        tags = (folder_tag(folders),) if folders else ()
        tags = _unique(tags + _category_tags(_attr(outline, "category")))
        key = feed_key(url)
        if key in feeds:
            first = feeds[key]
            feeds[key] = FeedConfig(url=first.url, name=first.name or name,
                                    tags=_unique(first.tags + tags))  # fmt: skip
        else:
            feeds[key] = FeedConfig(url=url, name=name, tags=tags)
    return OpmlImport(feeds=tuple(feeds.values()), rejected=tuple(rejected))


def render_opml(
    feeds: Sequence[FeedConfig],
    sites: Mapping[str, FeedSite] | None = None,
    title: str = "aggregator subscriptions",
    now: datetime | None = None,
) -> str:
    """OPML 2.0 document listing `feeds` in nested folders, one entry per tag, for any reader.

    `sites` (by feed URL, from the database) gives what a feed said about itself: its
    title, used when feeds.yaml names no feed, and its site, written as `htmlUrl`. A feed
    never fetched and never named is labelled with its URL, as Miniflux does (importing
    it back does not turn that into a name). Output depends only on the arguments (order
    follows `feeds`, folders appear where first used) so exports diff cleanly; `now`
    (naive means UTC) defaults to the current time for `dateCreated`.
    """
    sites = sites or {}
    when = now or datetime.now(UTC)
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    opml = ET.Element("opml", version="2.0")
    head = ET.SubElement(opml, "head")
    ET.SubElement(head, "title").text = _clean(title)
    ET.SubElement(head, "dateCreated").text = format_datetime(when, usegmt=True)
    body = ET.SubElement(opml, "body")
    folders: dict[tuple[str, ...], ET.Element] = {(): body}

    def folder(path: tuple[str, ...]) -> ET.Element:
        if path not in folders:
            name = _clean(path[-1])
            folders[path] = ET.SubElement(folder(path[:-1]), "outline", text=name, title=name)
        return folders[path]

    for feed in feeds:
        site = sites.get(feed.url) or FeedSite(None, None)
        label = _clean(feed.name or site.title or feed.url)
        attrs = {"type": "rss", "text": label, "title": label, "xmlUrl": _clean(feed.url)}
        if site.site_url:
            attrs["htmlUrl"] = _clean(site.site_url)
        paths = _unique(tuple(p for p in (folder_path(tag) for tag in feed.tags) if p))
        if paths:
            attrs["category"] = ",".join("/" + _clean(folder_tag(p)) for p in paths)
        for path in paths or ((),):
            ET.SubElement(folder(path), "outline", attrs)
    ET.indent(opml, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(opml, encoding="unicode") + "\n"


# --- reading -----------------------------------------------------------------------------


def _invalid(source: str, why: object) -> ConfigError:
    return ConfigError(f"{source}: not a valid OPML file: {why}; export it again from your reader")


def _parse_xml(data: bytes, source: str) -> ET.Element:
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except defusedxml.DefusedXmlException:
        raise _invalid(
            source, "it contains a <!DOCTYPE> or <!ENTITY> declaration, refused for safety"
        ) from None
    except ET.ParseError as exc:
        raise _invalid(source, exc) from None
    if _local(root.tag) != "opml":
        raise _invalid(source, f"the root element is <{_local(root.tag)}>, not <opml>")
    return root


def _walk(
    node: ET.Element, folders: tuple[str, ...]
) -> Iterator[tuple[ET.Element, tuple[str, ...]]]:
    """Every outline below `node` with the path of the folders enclosing it."""
    for child in node:
        if _local(child.tag) != "outline":
            continue
        yield child, folders
        if len(child) and _feed_url(child) is None:
            label = _text(_attr(child, "title")) or _text(_attr(child, "text"))
            yield from _walk(child, folders + (folder_path(label) if label else ()))
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
    """Tags from OPML 2.0 `category="/News/World,/Tech"`: comma-separated slash paths,
    each one tag ("News/World" is the folder World inside News)."""
    if not value:
        return ()
    paths = (folder_path(_text(part) or "") for part in value.split(","))
    return tuple(folder_tag(path) for path in paths if path)


def _unique(items: tuple) -> tuple:
    return tuple(dict.fromkeys(items))


# --- writing -----------------------------------------------------------------------------


def _clean(text: str) -> str:
    return _XML_INVALID.sub("", text)
