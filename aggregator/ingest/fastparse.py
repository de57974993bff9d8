"""Well-formed RSS 2.0 / 0.9x, RSS 1.0 and Atom 1.0 -> RawFeed, parsed by libxml2 (lxml)
and mapped the way feedparser maps them; None for anything else, which feedparser reads.

Why: feedparser's SAX handlers cost ~410 us of CPU per entry, more than everything after
them; libxml2 builds the tree in C and this mapping walks it once (~40 us per entry).

Why our own mapping and not fastparse: fastfeedparser (the lxml-based feedparser
look-alike) parses with `huge_tree=True` and its recovering parser, pulls in
python-dateutil, and maps fields its own way; this module's only job is to give exactly
what feedparser gives, so it reuses feedparser's own date parser and HTML guess and
follows its handlers element by element (the agreement test in tests/test_fast_parse.py
checks every file of ../shared/feeds). What it does not follow with confidence sends the
document to feedparser: a DOCTYPE, an encoding feedparser would second-guess, anything not
well-formed, xml:base or a Content-Location header (relative links), Atom 0.3 and other
formats, XHTML or base64 content, and elements feedparser gives a meaning this mapping
does not know.

Hostile XML: a document with a DOCTYPE never reaches libxml2 here, and the parser
resolves no entities, loads no DTD, uses no network and keeps libxml2's size and depth
limits (huge_tree off); breaking a limit only sends the document to feedparser.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import re
from collections.abc import Callable, Mapping
from typing import Any

from feedparser.datetimes import _parse_date  # the same dates as feedparser, format for format
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin, make_safe_absolute_uri
from lxml import etree

from ..records import RawEntry, RawFeed
from .feed_values import clean_str, struct_to_datetime, ttl_seconds


class _Unsure(Exception):
    """The document has something this mapping does not follow: feedparser reads it."""


# ---------------------------------------------------------------- names, as feedparser sees them

# namespace URI (lower case) -> feedparser's prefix ("" for the RSS and Atom cores)
_PREFIXES = {uri.lower(): prefix.lower() for uri, prefix in _FeedParserMixin.namespaces.items()}
_CORE_URIS = tuple(
    uri.lower() for uri, prefix in _FeedParserMixin.namespaces.items() if uri and not prefix
)
_HANDLED = frozenset(
    n.split("_", 2)[2].lower() for n in dir(_FeedParserMixin) if n.startswith(("_start_", "_end_"))
)
_ATOM = "http://www.w3.org/2005/atom"
_RSS10 = "http://purl.org/rss/1.0/"
_RSS090 = "http://my.netscape.com/rdf/simple/0.9/"
_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"

TITLES = {"title", "dc_title", "media_title"}
SUMMARIES = {"description": "text/html", "dc_description": "text/html",
             "media_description": "text/html", "summary": "text/plain",
             "itunes_summary": "text/plain"}  # fmt: skip
CONTENTS = {"content": "text/plain", "content_encoded": "text/html", "fullitem": "text/html"}
AUTHORS = {"author", "dc_author", "dc_creator", "itunes_author", "managingeditor"}
AUTHOR_PARTS = {"name", "itunes_name", "email", "itunes_email", "uri", "url", "homepage"}
DATES = {"pubdate": "published", "published": "published", "issued": "published",
         "dcterms_issued": "published", "updated": "updated", "modified": "updated",
         "lastbuilddate": "updated", "dc_date": "updated", "dcterms_modified": "updated",
         "created": "created", "dcterms_created": "created"}  # fmt: skip
# Elements feedparser handles without touching anything this mapping reads: their
# children are still looked at, as feedparser handles every descendant of an entry alike.
HARMLESS = frozenset({
    "category", "cc_license", "cloud", "contributor", "copyright", "creativecommons_license",
    "dc_contributor", "dc_language", "dc_publisher", "dc_rights", "dc_subject",
    "dcterms_valid", "email", "enclosure", "expirationdate", "feedburner_browserfriendly",
    "generator", "geom", "georss_box", "georss_line", "georss_point", "georss_polygon",
    "georss_where", "georssgeom", "gml_exterior", "gml_linearring", "gml_linestring",
    "gml_point", "gml_polygon", "gml_pos", "gml_poslist", "height", "homepage", "info",
    "itunes_block", "itunes_category", "itunes_email", "itunes_explicit", "itunes_image",
    "itunes_keywords", "itunes_link", "itunes_name", "itunes_subtitle", "keywords", "language",
    "media_category", "media_content", "media_credit", "media_group", "media_keywords",
    "media_license", "media_player", "media_rating", "media_restriction", "media_thumbnail",
    "name", "newlocation", "psc_chapter", "psc_chapters", "rights", "subtitle", "tagline",
    "tags", "uri", "url", "webmaster", "where", "width",
})  # fmt: skip
# Names an element without a feedparser handler must not have: feedparser stores such an
# element under its name, and these names are (or are aliased to) keys read below.
_COLLIDING = frozenset({
    "date", "date_parsed", "modified_parsed", "issued_parsed", "description_detail",
    "copyright_detail", "tagline_detail", "title_detail", "summary_detail", "author_detail",
    "authors", "published_parsed", "updated_parsed", "created_parsed", "links", "guidislink",
})  # fmt: skip
_HTML_TYPES = ("text/html", "application/xhtml+xml")
# the children an image or a text input may have before feedparser stops seeing one
_ASIDE_CHILDREN = {"image": ("title", "link", "description", "url", "width", "height"),
                   "textinput": ("title", "link", "description", "name")}  # fmt: skip
_CORE_TAGS = tuple("{" + uri for uri in _CORE_URIS)


def _attributes(element: etree._Element) -> dict[str, str]:
    """Attributes as feedparser's strict parser passes them: names in lower case, a
    namespaced one both as prefix:name (known namespaces) and as its bare name, the values
    of rel and type in lower case."""
    out: dict[str, str] = {}
    for key, value in element.attrib.items():
        if key[0] == "{":
            uri, key = key[1:].split("}", 1)
            prefix = _PREFIXES.get(uri.lower())
            key = key.lower()
            if prefix:
                out[f"{prefix}:{key}"] = value
        else:
            key = key.lower()
        if key in out:
            raise _Unsure(f"two attributes named {key}")
        out[key] = value.lower() if key in ("rel", "type") else value
    return out


# ---------------------------------------------------------------- values, as feedparser's pop() leaves them

_QUERY_ENTITY = re.compile("&([A-Za-z0-9_]+);")
_EMAIL = re.compile(r"""(([a-zA-Z0-9\_\-\.\+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?""")  # fmt: skip
_looks_like_html: Callable[[str], bool] = _FeedParserMixin.looks_like_html
_C1 = re.compile("[\x80-\x9f]")  # the characters _cp1252 maps


def _fixed_text(output: str) -> str:
    """feedparser's repair of UTF-8 read as Latin-1, then Windows-1252's C1 characters."""
    if output.isascii():
        return output
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        output = output.encode("iso-8859-1").decode("utf-8")
    # (str.translate walks a long text one character at a time: only when there is work)
    return output.translate(_cp1252) if _C1.search(output) else output


def _leaf_text(element: etree._Element) -> str:
    if len(element):
        raise _Unsure(f"markup inside <{element.tag}>")
    return element.text or ""


def _content_type(attrs: Mapping[str, str], default: str) -> str:
    if "mode" in attrs or "src" in attrs:
        raise _Unsure("base64 or out-of-line content")
    ctype = attrs.get("type", default)
    ctype = {"text": "text/plain", "plain": "text/plain", "html": "text/html"}.get(ctype, ctype)
    if ctype not in ("text/plain", "text/html"):
        raise _Unsure(f"content of type {ctype!r}")
    return ctype


# ---------------------------------------------------------------- the walk


class _Mapper:
    """feedparser's handlers for the elements of one document, in document order, with
    the state they share kept the same way (title_depth, hasContent, the author lists, the
    xml:base stack), so quirks such as "the first non-empty title wins" come out the same.
    A context is the dict feedparser would write to: the feed, the current entry, an
    entry's <source>, or None (RSS 1.0's image and text input, written nowhere)."""

    def __init__(self, version: str, nsmap: Mapping[str | None, str], track_base: bool):
        self.version = version
        self.atom = version.startswith("atom")
        self.title_depth = -1
        self.has_content = False
        self.infeed = False
        self.feed: dict[str, Any] = {}
        self.entry: dict[str, Any] | None = None
        self.entries: list[dict[str, Any]] = []
        self.depths: dict[str, int] = {}  # feedparser's property_depth_map of the entry
        self.names: dict[tuple[str, str | None], str] = {}
        # the document's prefixes for known namespaces (feedparser's namespacemap), and a
        # prefix of each unknown one (how feedparser names their elements)
        self.prefix_of_known: dict[str, str] = {}
        self.prefix_of_uri: dict[str, str] = {}
        for prefix, uri in nsmap.items():
            lower = (uri or "").lower()
            known = "" if "backend.userland.com/rss" in lower else _PREFIXES.get(lower)
            if known is not None and prefix:
                self.prefix_of_known[prefix] = known
            elif known is None and prefix:
                self.prefix_of_uri.setdefault(uri, prefix)
        self.base = ""
        self.bases: list[str] | None = [] if track_base else None

    # ---- names and xml:base

    def name(self, element: etree._Element) -> str:
        """feedparser's name for an element: prefix_localname in lower case."""
        tag = element.tag
        if not isinstance(tag, str):
            raise _Unsure("an entity reference")
        key = (tag, None)
        name = self.names.get(key)
        if name is None:
            name, key = self._new_name(element, tag)
            self.names[key] = name
        return name

    def _new_name(self, element: etree._Element, tag: str) -> tuple[str, tuple[str, str | None]]:
        if tag[0] != "{":
            return tag.lower(), (tag, None)
        uri, local = tag[1:].split("}", 1)
        lower = uri.lower()
        prefix = "" if "backend.userland.com/rss" in lower else _PREFIXES.get(lower)
        key: tuple[str, str | None] = (tag, None)
        if prefix is None:  # an unknown namespace: a prefix the document gave it, if any
            prefix = self.prefix_of_uri.get(uri)
            if prefix is None:
                key = (tag, element.prefix)
                if key in self.names:
                    return self.names[key], key
                prefix = element.prefix or ""
        prefix = self.prefix_of_known.get(prefix, prefix).lower()
        return (f"{prefix}_{local.lower()}" if prefix else local.lower()), key

    def enter(self, element: etree._Element) -> None:
        """feedparser's xml:base bookkeeping at a start tag (only for documents with one)."""
        if self.bases is None:
            return
        attrs = _attributes(element)
        given = attrs.get("xml:base", attrs.get("base")) or self.base
        if self.base:
            self.base = make_safe_absolute_uri(self.base, given) or self.base
        else:
            self.base = _urljoin(self.base, given)
        self.bases.append(self.base)

    def leave(self) -> None:
        """... and at the end tag, quirk included: an empty parent base is not restored."""
        if self.bases is None:
            return
        self.bases.pop()
        if self.bases and self.bases[-1]:
            self.base = self.bases[-1]

    def leaf(self, element: etree._Element) -> str:
        """The text of a child handled by its parent's handler (author parts and the like)."""
        self.enter(element)
        self.leave()
        return _leaf_text(element)

    # ---- values

    def popped(
        self, text: str, element: str, ctype: str | None = None, guidislink: bool = False
    ) -> tuple[str, str | None]:
        """The value feedparser's pop() stores for an element's text, and its type."""
        output = text.strip()
        if output and element in ("link", "id", "href") and (element != "id" or guidislink):
            output = _urljoin(self.base, output)
        if ctype == "text/plain" and not self.atom and _looks_like_html(output):
            ctype = "text/html"
        return _fixed_text(output), ctype

    def store(self, ctx: dict, key: str, value: str, depth: int) -> None:
        """An entry keeps the value found nearest its top (feedparser's depth map); the
        feed and a source keep the last."""
        if ctx is self.entry:
            old = self.depths.get(key)
            if old is not None and depth > old:
                return
            self.depths[key] = depth
        ctx[key] = value

    # ---- text constructs

    def title(self, ctx: dict | None, el: etree._Element, depth: int, name: str) -> None:
        ctype = _content_type(_attributes(el), "text/plain")
        output, ctype = self.popped(_leaf_text(el), "title", ctype)
        saved = self.title_depth
        if ctx is not None and not -1 < self.title_depth <= depth:
            self.store(ctx, "title", output, depth)
            ctx["title_detail"] = ctype
        if output:
            self.title_depth = depth
        if name == "media_title":
            self.title_depth = saved

    def summary(self, ctx: dict | None, el: etree._Element, depth: int, name: str) -> None:
        if ctx is not None and "summary" in ctx and not self.has_content:
            return self.content(ctx, el, depth, "text/plain")  # feedparser's second body
        ctype = _content_type(_attributes(el), SUMMARIES[name])
        output, ctype = self.popped(_leaf_text(el), "summary", ctype)
        if ctx is None:
            return
        if ctx is not self.entry and SUMMARIES[name] == "text/html":
            ctx["subtitle"] = output  # a channel's <description>
        else:
            self.store(ctx, "summary", output, depth)
            ctx["summary_detail"] = ctype

    def content(self, ctx: dict | None, el: etree._Element, depth: int, default: str) -> None:
        self.has_content = True
        ctype = _content_type(_attributes(el), default)
        output, ctype = self.popped(_leaf_text(el), "content", ctype)
        if ctx is None:
            return
        if ctx is self.entry:
            ctx.setdefault("content", []).append((output, ctype))
        ctx.setdefault("summary", output)  # copied to the summary, as feedparser does

    # ---- links, ids, authors, dates

    def link(self, ctx: dict | None, el: etree._Element, depth: int) -> None:
        attrs = _attributes(el)
        href = attrs.get("url", attrs.get("uri", attrs.get("href")))
        if href:
            attrs.pop("url", None)
            attrs.pop("uri", None)
            attrs["href"] = href
        text = _leaf_text(el)
        if "href" in attrs:
            rel = attrs.get("rel", "alternate")
            ctype = attrs.get("type", "application/atom+xml" if rel == "self" else "text/html")
            ctype = {"html": "text/html", "xhtml": "application/xhtml+xml"}.get(ctype, ctype)
            if ctx is not None and rel == "alternate" and ctype in _HTML_TYPES:
                ctx["link"] = _urljoin(self.base, attrs["href"])
            return
        output, _ = self.popped(text, "link")
        if ctx is None:
            return
        if ctx is self.entry:
            output = output.replace("&amp;", "&")
        ctx["link"] = _QUERY_ENTITY.sub(r"&\g<1>", output)

    def identifier(self, ctx: dict | None, el: etree._Element, depth: int) -> None:
        if ctx is None:
            raise _Unsure("an id outside the channel")
        guidislink = _attributes(el).get("ispermalink", "true") == "true"
        output, _ = self.popped(_leaf_text(el), "id", guidislink=guidislink)
        self.store(ctx, "id", output, depth)
        if guidislink:
            ctx.setdefault("link", output)

    def author(self, ctx: dict | None, el: etree._Element, depth: int) -> None:
        if ctx is None:
            raise _Unsure("an author outside the channel")
        ctx.setdefault("authors", []).append({})
        own = [el.text or ""]  # the author element's own text, between its children
        for child in el:
            part = self.name(child)
            if part in AUTHOR_PARTS:
                value = self.leaf(child).strip()
                if part in ("uri", "url", "homepage"):
                    value, _ = self.popped(value, "href")
                    part = "href"
                self.save_author(ctx, "email" if part.endswith("email") else part, value)
            elif part in _HANDLED or part in _COLLIDING:
                raise _Unsure(f"<{child.tag}> inside an author")
            elif child.attrib:  # feedparser keeps only the attributes: the text is the author's
                own.append(self.leaf(child))
            else:
                self.leaf(child)
            own.append(child.tail or "")
        output, _ = self.popped("".join(own), "author")
        self.store(ctx, "author", output, depth)
        self.sync_author(ctx)

    def save_author(self, ctx: dict, key: str, value: str) -> None:
        """feedparser's _save_author."""
        ctx.setdefault("author_detail", {})[key] = value
        self.sync_author(ctx)
        ctx.setdefault("authors", [{}])[-1][key] = value

    @staticmethod
    def sync_author(ctx: dict) -> None:
        """feedparser's _sync_author_detail: the name and e-mail address of `author`."""
        detail = ctx.get("authors", [{}])[-1]
        if detail:
            name, email = detail.get("name"), detail.get("email")
            if name and email:
                ctx["author"] = f"{name} ({email})"
            elif name:
                ctx["author"] = name
            elif email:
                ctx["author"] = email
            return
        author, email = ctx.get("author"), None
        if not author:
            return
        if match := _EMAIL.search(author):
            email = match.group(0)
            author = author.replace(email, "").replace("()", "").replace("<>", "")
            author = author.replace("&lt;&gt;", "").strip()
            if author and author[0] == "(":
                author = author[1:]
            if author and author[-1] == ")":
                author = author[:-1]
            author = author.strip()
        if author or email:
            ctx.setdefault("author_detail", detail)
        if author:
            detail["name"] = author
        if email:
            detail["email"] = email

    def date(self, ctx: dict | None, el: etree._Element, depth: int, kind: str) -> None:
        output, _ = self.popped(_leaf_text(el), kind)
        if ctx is not None:
            self.store(ctx, kind, output, depth)
            ctx[kind + "_parsed"] = _parse_date(output)

    # ---- elements

    def element(self, ctx: dict | None, el: etree._Element, depth: int) -> None:
        """One element and its descendants, all in context `ctx`."""
        self.enter(el)
        name = self.name(el)
        harmless = name in HARMLESS or (name not in _HANDLED and name not in _COLLIDING)
        if ctx is None and not (harmless or name in TITLES or name == "link"):
            raise _Unsure(f"<{el.tag}> outside the channel")
        if name in TITLES:
            self.title(ctx, el, depth, name)
        elif name == "link":
            self.link(ctx, el, depth)
        elif name in ("guid", "id"):
            self.identifier(ctx, el, depth)
        elif name in SUMMARIES:
            self.summary(ctx, el, depth, name)
        elif name in CONTENTS:
            self.content(ctx, el, depth, CONTENTS[name])
        elif name in AUTHORS:
            self.author(ctx, el, depth)
        elif name in DATES:
            self.date(ctx, el, depth, DATES[name])
        elif name == "source" and ctx is self.entry:
            self.source(el, depth)
        elif name == "image" and ctx is self.entry:
            self.entry_image(el, depth)
        elif name == "itunes_owner":  # a podcast's owner: its name is the publisher's
            for child in el:
                if self.name(child) not in ("name", "email", "itunes_name", "itunes_email"):
                    raise _Unsure(f"<{child.tag}> inside <itunes:owner>")
                self.leaf(child)
        elif harmless:
            if name == "ttl" and ctx is self.feed:
                ctx["ttl"] = self.popped(_leaf_text(el), "ttl")[0]
            for child in el:
                self.element(ctx, child, depth + 1)
        else:
            raise _Unsure(f"<{el.tag}> as {name!r}")
        self.leave()

    def source(self, el: etree._Element, depth: int) -> None:
        """An entry's <source>: what is inside describes another feed (feedparser's
        sourcedata), yet its titles and bodies move the shared state."""
        self.title_depth = -1
        source: dict[str, Any] = {}
        for child in el:
            self.element(source, child, depth + 1)

    def entry_image(self, el: etree._Element, depth: int) -> None:
        """An <image> inside an item: a title there is the entry's, a link is nobody's."""
        self.title_depth = -1
        for child in el:
            name = self.name(child)
            if name not in ("title", "url", "width", "height", "link"):
                raise _Unsure(f"<{child.tag}> inside an item's <image>")
            if name == "title":
                self.element(self.entry, child, depth + 1)
            else:
                self.leaf(child)

    def entry_element(self, el: etree._Element, depth: int) -> None:
        """feedparser's _start_item ... _end_item."""
        self.enter(el)
        attrs = _attributes(el)
        if "href" in attrs or "lastmod" in attrs:
            raise _Unsure("CDF attributes on an item")
        self.entry = ctx = {}
        self.entries.append(ctx)
        self.depths = {}
        self.title_depth = -1
        if "rdf:about" in attrs:
            ctx["id"] = attrs["rdf:about"]
        for child in el:
            self.element(ctx, child, depth + 1)
        self.entry = None
        self.has_content = False
        self.leave()

    def aside(self, el: etree._Element, depth: int, name: str) -> None:
        """A channel's image or text input: their title and link are not the feed's, but
        their title still counts for feedparser's title_depth. (Any other child would end
        them for feedparser, and what follows would be the feed's.)"""
        self.enter(el)
        self.title_depth = -1
        allowed = _ASIDE_CHILDREN[name]
        for child in el:
            if (
                self.name(child) not in allowed
                or child.tag[0] == "{"
                and not child.tag.lower().startswith(_CORE_TAGS)
            ):
                raise _Unsure(f"<{child.tag}> inside <{el.tag}>")
            if self.name(child) == "title":
                self.enter(child)
                self.title(None, child, depth + 1, "title")
                self.leave()
            else:
                self.leaf(child)
        self.leave()

    def open_container(self, el: etree._Element, infeed: bool) -> None:
        """A channel (RSS), the feed (Atom) or the RDF root (RSS 1.0) starts: its children
        are handled one by one as each ends (container_child)."""
        self.enter(el)
        attrs = _attributes(el)
        if "href" in attrs or "lastmod" in attrs:
            raise _Unsure("CDF attributes on a channel")
        self.infeed = infeed

    def container_child(self, child: etree._Element, depth: int) -> None:
        name = self.name(child)
        if name in ("item", "entry"):
            self.entry_element(child, depth)
        elif name in ("image", "textinput"):
            self.aside(child, depth, name)
        elif name in ("channel", "feed", "rss", "source"):
            raise _Unsure(f"<{child.tag}> at the top of the feed")
        else:
            self.element(self.feed if self.infeed else None, child, depth)


def _raw_entry(e: Mapping[str, Any]) -> RawEntry:
    """RawEntry from feedparser-shaped entry data, as parse._feedparser_entry reads it."""
    bodies = [(value or "", ctype != "text/plain") for value, ctype in e.get("content", ())]
    bodies.append((e.get("summary") or "", e.get("summary_detail") != "text/plain"))
    content, content_is_html = max(bodies, key=lambda b: len(b[0]))
    detail = e.get("author_detail")
    author = detail.get("name") if isinstance(detail, Mapping) else None
    return RawEntry(
        guid=clean_str(e.get("id")),
        link=clean_str(e.get("link")),
        title=clean_str(e.get("title")),
        content=content or None,
        author=clean_str(author) or clean_str(e.get("author")),
        published=struct_to_datetime(e.get("published_parsed") or e.get("created_parsed")),
        updated=struct_to_datetime(e.get("updated_parsed")) if "updated" in e else None,
        title_is_html=e.get("title_detail") != "text/plain",
        content_is_html=content_is_html,
    )


# ---------------------------------------------------------------- bytes in

_XML_ENCODING = re.compile(rb"^<\?.*encoding=['\"](.*?)['\"].*\?>")  # feedparser's
_APPLICATION_XML = (
    "application/xml",
    "application/xml-dtd",
    "application/xml-external-parsed-entity",
)
_TEXT_XML = ("text/xml", "text/xml-external-parsed-entity")
_XML_BASE = re.compile(rb"[\s:]base\s*=")  # xml:base="..." (or base="..."): relative links


PARSER_OPTIONS = {  # no entity is expanded, no DTD loaded, nothing fetched, limits kept
    "encoding": "utf-8", "resolve_entities": False, "no_network": True, "load_dtd": False,
    "huge_tree": False, "remove_comments": True, "remove_pis": True, "collect_ids": False,
    "attribute_defaults": False, "dtd_validation": False, "recover": False,
}  # fmt: skip


def xml_events(data: bytes) -> etree.iterparse:
    """(event, element) pairs, "start" and "end", of a UTF-8 document, parsed as above."""
    return etree.iterparse(io.BytesIO(data), events=("start", "end"), **PARSER_OPTIONS)


def _utf8_document(body: bytes, headers: Mapping[str, str]) -> bytes | None:
    """The document in UTF-8 when feedparser would read it in the same encoding without a
    complaint (RFC 3023, as feedparser applies it); None otherwise."""
    if body[:3] == codecs.BOM_UTF8:
        body = body[3:]
    elif body[:1] in (b"\x00", b"\xfe", b"\xff", b"\x4c") or body[1:2] == b"\x00":
        return None  # UTF-16/32 or EBCDIC: feedparser's sniffing, not ours
    match = _XML_ENCODING.match(body)
    declared = match.group(1).decode("utf-8", "replace").lower() if match else ""
    ctype, _, params = (headers.get("content-type") or "").partition(";")
    ctype = ctype.strip()
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
    if not headers:
        encoding = declared or "utf-8"
    elif ctype in _APPLICATION_XML or (ctype.startswith("application/") and ctype.endswith("+xml")):
        encoding = charset or declared or "utf-8"
    elif ctype in _TEXT_XML or (ctype.startswith("text/") and ctype.endswith("+xml")):
        encoding = charset or "us-ascii"
    else:
        return None  # feedparser flags a non-XML media type: its warning, its path
    if encoding.lower() == "gb2312":
        encoding = "gb18030"
    try:
        codec = codecs.lookup(encoding).name
        text = body.decode(encoding) if codec != "utf-8" else None
    except (LookupError, UnicodeDecodeError):
        return None
    if text is not None:
        return text.encode("utf-8")
    return body


def parse_well_formed(body: bytes, headers: Mapping[str, str]) -> RawFeed | None:
    """RawFeed of a well-formed RSS 2.0/0.9x, RSS 1.0 or Atom 1.0 document, exactly as
    parse.parse_xml_feed (feedparser) would give it; None when feedparser must read it."""
    if b"<!DOCTYPE" in body or headers.get("content-location"):
        return None
    data = _utf8_document(body, headers)
    if data is None:
        return None
    try:
        return _mapped(data, track_base=_XML_BASE.search(data) is not None)
    except (_Unsure, etree.XMLSyntaxError):
        return None


_RSS_VERSIONS = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}


def _mapper_for(root: etree._Element, track_base: bool) -> _Mapper:
    """The format, decided as feedparser decides it: by the first of the RSS 1.0,
    Netscape 0.9 and Atom namespaces declared, then by the root element."""
    nsmap = root.nsmap
    uris = {(uri or "").lower() for uri in nsmap.values()}
    declared = [u for u in (_RSS10, _ATOM) if u in uris] + (
        [_RSS090] if (nsmap.get(None) or "").lower() == _RSS090 else [])  # fmt: skip
    tag = root.tag.lower() if isinstance(root.tag, str) else ""
    core = tag.startswith("{") and (
        tag[1:].split("}")[0] in _CORE_URIS or "backend.userland.com/rss" in tag
    )
    if (tag == "rss" or core and tag.endswith("}rss")) and not {_RSS10, _RSS090} & set(declared):
        version = root.get("version", "")
        version = _RSS_VERSIONS.get(version, "rss20" if version.startswith("2.") else "rss")
    elif tag == "{" + _ATOM + "}feed" and declared == [_ATOM]:
        version = "atom10"
    elif tag == "{" + _RDF + "}rdf" and declared == [_RSS10]:
        version = "rss10"
    else:
        raise _Unsure(f"root element {root.tag}")
    return _Mapper(version, nsmap, track_base)


def _mapped(data: bytes, track_base: bool) -> RawFeed:
    """One pass of libxml2's pull parser: each child of the channel (or feed) is mapped
    when it ends and then freed, so a 100,000-entry feed never sits whole in memory."""
    mapper: _Mapper | None = None
    containers: list[int] = []  # depths of the open channel/feed/RDF elements
    depth = 0
    for event, el in xml_events(data):
        if event == "start":
            depth += 1
            if mapper is None:
                mapper = _mapper_for(el, track_base)
                if mapper.version.startswith("rss") and mapper.version != "rss10":
                    mapper.enter(el)  # <rss>: the container is its one <channel>
                else:
                    mapper.open_container(el, infeed=mapper.version == "atom10")
                    containers.append(depth)
            elif depth == 2 and mapper.version not in ("atom10", "rss10"):
                if mapper.name(el) != "channel" or len(el.getparent()) > 1:
                    raise _Unsure("an <rss> without exactly one <channel>")
                mapper.open_container(el, infeed=True)
                containers.append(depth)
            elif depth == 2 and mapper.version == "rss10" and mapper.name(el) == "channel":
                mapper.open_container(el, infeed=True)
                containers.append(depth)
            continue
        if containers and depth == containers[-1]:  # a container ends
            containers.pop()
            mapper.leave()
            mapper.infeed = False
        elif containers and depth == containers[-1] + 1:
            mapper.container_child(el, depth)
            el.clear()  # mapped: free it, and the siblings mapped before it
            parent = el.getparent()
            while el.getprevious() is not None:
                del parent[0]
        depth -= 1
    assert mapper is not None  # (a document has a root element, or iterparse raised)
    feed = mapper.feed
    return RawFeed(
        format=mapper.version,
        title=clean_str(feed.get("title")),
        link=clean_str(feed.get("link")),
        ttl=ttl_seconds(feed.get("ttl")),
        entries=tuple(_raw_entry(e) for e in mapper.entries),
    )
