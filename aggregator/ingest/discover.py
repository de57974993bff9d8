"""`feeds add`: make sure a URL answers with a feed before following it, and find the feed
when the URL is a site's page, through `<link rel="alternate">` autodiscovery as every
reader does when given a homepage.

The page's feed links are read with the standard library's HTML parser (pure:
`feed_links`), relative addresses resolved against the page (and its `<base href>`).
Choice when a page offers several: document order, which is the site's own order of
preference (WordPress puts the posts feed first), except that comment feeds go last; the
first that answers as a feed wins, the others are reported so another can be added by
its URL. Fetching uses the daemon's own fetcher: the same timeouts, size limit and
User-Agent, so what passes here is what the daemon will get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from ..errors import FetchError, ParseError
from ..records import FetchResult, FetchStatus
from .fetch import Fetcher
from .normalize import html_to_text, one_line
from .parse import parse_feed

# <link type="..."> values that are feeds; a bare application/json alternate is usually an
# API document (WordPress's /wp-json/), not a JSON Feed.
FEED_TYPES = {
    "application/rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
    "application/rdf+xml": "RSS 1.0",
}
MAX_CANDIDATES = 5  # feed links of one page tried at most, so a link farm is not crawled
_HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(frozen=True)
class FeedLink:
    """A feed a web page links to."""

    url: str  # absolute
    type: str  # a key of FEED_TYPES
    title: str | None


@dataclass(frozen=True)
class FoundFeed:
    """A URL checked to answer with a feed: the one to follow, and how it was found."""

    url: str  # the feed to follow (after a permanent redirect, its new address)
    title: str | None
    format: str | None  # feedparser's name: rss20, atom10, json11, ...
    entries: int
    page: str | None = None  # the web page it was found through; None: given directly
    others: tuple[FeedLink, ...] = ()  # the page's other feeds


def as_url(text: str) -> str:
    """What a person types as an address: `example.org/blog` means https://example.org/blog,
    as in a browser's address bar. A URL of another scheme is left for check_url to refuse."""
    text = text.strip()
    return text if "://" in text else "https://" + text.removeprefix("//")


def feed_links(html: str, page_url: str) -> list[FeedLink]:
    """The feeds `html` (the page at `page_url`) links to with `rel="alternate"`, in
    document order, absolute, each once."""
    parser = _LinkParser()
    parser.feed(html)
    parser.close()
    base = urljoin(page_url, parser.base) if parser.base else page_url
    links: dict[str, FeedLink] = {}
    for href, kind, title in parser.links:
        url = urljoin(base, href.strip())
        if urlsplit(url).scheme in ("http", "https") and url not in links:
            links[url] = FeedLink(url, kind, title)
    return list(links.values())


def ranked(links: Sequence[FeedLink]) -> list[FeedLink]:
    """The order to try a page's feeds in: the page's own, comment feeds last."""
    return sorted(links, key=_is_comments)  # sorted() is stable: document order otherwise


async def find_feed(fetcher: Fetcher, url: str) -> FoundFeed:
    """The feed at `url`, or the first working feed its web page links to; a FetchError
    or ParseError naming the URL and what to do when there is none."""
    result = await fetcher.fetch(url)
    _check_answer(url, result)
    assert result.body is not None
    raw = parse_feed(result.body, result.headers)
    if raw.error is None:
        return FoundFeed(
            result.permanent_redirect or url, _title(raw.title), raw.format, len(raw.entries)
        )
    if not _is_html(result):
        raise ParseError(f"{url}: not a feed: {raw.error}")
    links = ranked(feed_links(_decode(result), result.final_url or url))
    if not links:
        raise ParseError(
            f'{url}: is a web page that links no feed (no <link rel="alternate" '
            'type="application/rss+xml"> or Atom/JSON Feed link); find the feed\'s address on '
            "the site and add that"
        )
    problems = []
    for link in links[:MAX_CANDIDATES]:
        answer = await fetcher.fetch(link.url)
        problem = _answer_problem(answer)
        if problem is None:
            assert answer.body is not None
            feed = parse_feed(answer.body, answer.headers)
            if feed.error is None:
                others = tuple(o for o in links if o is not link)
                where = answer.permanent_redirect or link.url
                return FoundFeed(
                    where, _title(feed.title), feed.format, len(feed.entries), url, others
                )
            problem = feed.error
        problems.append(f"{link.url}: {problem}")
    raise FetchError(f"{url}: the page links feeds, but none of them works: " + "; ".join(problems))


# --- helpers -------------------------------------------------------------------------------


class _LinkParser(HTMLParser):
    """Collects `<link rel="alternate" type="<feed type>" href>` and the first `<base href>`."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str, str | None]] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"].strip()
        if tag != "link" or "alternate" not in values.get("rel", "").lower().split():
            return
        kind = values.get("type", "").split(";")[0].strip().lower()
        if kind in FEED_TYPES and values.get("href", "").strip():
            self.links.append(
                (values["href"], kind, " ".join(values.get("title", "").split()) or None)
            )

    handle_startendtag = handle_starttag


def _title(raw: str | None) -> str | None:
    """A feed's title as the poller stores it (tags and entities gone, one line)."""
    return one_line(html_to_text(raw)) or None


def _is_comments(link: FeedLink) -> bool:
    return "comment" in f"{link.title or ''} {urlsplit(link.url).path}".lower()


def _answer_problem(result: FetchResult) -> str | None:
    if result.status is FetchStatus.OK and result.body is not None:
        return None
    if result.status is FetchStatus.NOT_MODIFIED:  # we sent no validators: a broken server
        return "the server answered 304 Not Modified to a plain request"
    return result.error or f"HTTP {result.http_status}"


def _check_answer(url: str, result: FetchResult) -> None:
    problem = _answer_problem(result)
    if problem is not None:
        raise FetchError(f"{url}: {problem}")


def _is_html(result: FetchResult) -> bool:
    ctype = result.headers.get("content-type", "").split(";")[0].strip().lower()
    head = (result.body or b"")[:1024].lstrip().lower()
    return (
        ctype in _HTML_TYPES or head.startswith((b"<!doctype html", b"<html")) or b"<html" in head
    )


def _decode(result: FetchResult) -> str:
    """The page as text: the charset the server declared, else UTF-8; feed links are
    ASCII in practice, so an undecodable byte only costs a replacement character."""
    charset = "utf-8"
    for param in result.headers.get("content-type", "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip("\"'")
    try:
        return (result.body or b"").decode(charset, errors="replace")
    except LookupError:
        return (result.body or b"").decode("utf-8", errors="replace")
