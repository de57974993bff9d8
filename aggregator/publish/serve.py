"""The daemon's read-only HTTP server: the digest in three formats, the web view (`/`)
and a health check.

The feeds are served from the in-memory DigestCache the daemon fills at each publish, the
page from its cached render (pagecache.py), so a request costs no rendering and a slow
client cannot hold a database lock; only a filtered page not rendered yet queries the
database, on a connection of its own. Conditional requests get 304, so feed readers can
poll it cheaply. Connections, threads and descriptors are bounded (connections.py)."""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime

from ..timeutil import utcnow
from .connections import DEFAULT_LIMITS, BoundedHTTPServer, ConnectionLimits, RequestHandler
from .pagecache import PageCache
from .publisher import DigestCache
from .webview import CONTENT_SECURITY_POLICY, DigestSnapshot, PageFilter, parse_filter

log = logging.getLogger("aggregator.serve")
ROUTES = {"/digest.atom": "atom", "/digest.rss": "rss", "/digest.json": "json"}


class _Handler(RequestHandler):
    server_version = "aggregator"
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self._answer(send_body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        # a body on a GET would be read as the next request of the kept-alive connection
        length = self.headers.get("Content-Length")
        if length and length.strip() != "0":
            try:
                size = int(length)
            except ValueError:
                size = -1
            if 0 < size <= MAX_REQUEST_BODY:
                self.rfile.read(size)
            else:
                self.close_connection = True
        path, _, query = self.path.partition("?")
        if path == "/":
            return self._page(query, send_body)
        if path == "/healthz":
            health = self.server.cache.health
            http = {**self.server.stats(), "page_renders": self.server.pages.renders}
            body = json.dumps({**health, "http": http}, indent=2).encode()
            # 503 while nothing can be stored (see aggregator.service.outage); "degraded" stays 200
            code = 503 if health.get("status") == "failing" else 200
            return self._send(code, {"Content-Type": "application/json", "Cache-Control": "no-store"},
                              body, send_body)  # fmt: skip
        fmt = ROUTES.get(path)
        if fmt is None:
            return self._send(404, {"Content-Type": "text/plain; charset=utf-8"},
                              b"not found: try /, /digest.atom, /digest.rss, /digest.json or /healthz\n",
                              send_body)  # fmt: skip
        rendered = self.server.cache.get(fmt)
        if rendered is None:
            return self._send(503, {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "5"},
                              b"the digest is being built; retry in a few seconds\n", send_body)  # fmt: skip
        headers = {
            "Content-Type": rendered.content_type,
            "ETag": rendered.etag,
            "Last-Modified": rendered.last_modified,
            "Cache-Control": "no-cache",
        }
        if self._not_modified(rendered.etag, rendered.last_modified):
            return self._send(304, headers, b"", False, len(rendered.body))
        return self._send(200, headers, rendered.body, send_body)

    def _page(self, query: str, send_body: bool) -> None:
        rendered = self.server.pages.get(parse_filter(query))
        if rendered is None:
            return self._send(503, {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "5"},
                              b"the digest is being built; retry in a few seconds\n", send_body)  # fmt: skip
        headers = {
            "Content-Type": rendered.content_type,
            "ETag": rendered.etag,
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if rendered.etag in _tags(self.headers.get("If-None-Match")):
            return self._send(304, headers, b"", False, len(rendered.body))
        return self._send(200, headers, rendered.body, send_body)

    def _not_modified(self, etag: str, last_modified: str) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            return etag in _tags(inm) or inm.strip() == "*"
        ims = self.headers.get("If-Modified-Since")
        if ims:
            try:
                return parsedate_to_datetime(ims) >= parsedate_to_datetime(last_modified)
            except (TypeError, ValueError):
                return False
        return False

    def _send(self, status: int, headers: dict[str, str], body: bytes, send_body: bool, full_size: int = 0) -> None:
        """Answer; a 200 or 304 of a body over GZIP_MIN bytes is gzip when the client takes
        it, under its own ETag (`full_size`: the size of the body a 304 stands for)."""
        size = len(body) if status == 200 else full_size
        if status in (200, 304) and size > GZIP_MIN and _accepts_gzip(self.headers.get("Accept-Encoding", "")):
            headers = dict(headers)
            if status == 200:
                body = _gzip(body)
                headers["Content-Encoding"] = "gzip"
            if "ETag" in headers:  # another representation, another strong validator
                headers["ETag"] = headers["ETag"][:-1] + '-gz"'
        if status in (200, 304):
            headers = {**headers, "Vary": "Accept-Encoding"}
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and body:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)


GZIP_MIN = 1024  # bytes: smaller answers are sent as they are
MAX_REQUEST_BODY = 65_536  # a GET's body is read and dropped up to this; a longer one closes the connection


def _tags(if_none_match: str | None) -> set[str]:
    """The entity tags of an If-None-Match header, weak or gzip variants taken as the
    identity's."""
    if not if_none_match:
        return set()
    return {t.strip().removeprefix("W/").replace('-gz"', '"') for t in if_none_match.split(",")}


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether Accept-Encoding allows gzip: named with q > 0, or else `*` with q > 0."""
    q: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        value = params.replace(" ", "").removeprefix("q=")
        try:
            q[name.strip()] = float(value) if params else 1.0
        except ValueError:
            q[name.strip()] = 1.0
    return q.get("gzip", q.get("*", 0.0)) > 0


@functools.lru_cache(maxsize=16)
def _gzip(body: bytes) -> bytes:
    """gzip of an answer (the same digest bytes are asked for again and again); mtime 0, so
    equal bodies compress to equal bytes."""
    return gzip.compress(body, compresslevel=6, mtime=0)


class _Server(BoundedHTTPServer):
    """The bounded server with what the handler answers from."""

    def __init__(self, address: tuple[str, int], cache: DigestCache, pages: PageCache,
                 limits: ConnectionLimits):  # fmt: skip
        super().__init__(address, _Handler, limits)
        self.cache = cache
        self.pages = pages


class DigestServer:
    """Serves the cache on (host, port) from a background thread and a fixed pool of
    workers (`limits`); `page_query` answers the web page's filters from the database
    (else they filter the digest's stories); `clock` dates the page's renders."""

    def __init__(self, address: tuple[str, int], cache: DigestCache,
                 page_query: Callable[[PageFilter], DigestSnapshot] | None = None,
                 limits: ConnectionLimits = DEFAULT_LIMITS,
                 clock: Callable[[], datetime] = utcnow):  # fmt: skip
        self.pages = PageCache(cache, page_query, clock)
        self.httpd = _Server(address, cache, self.pages, limits)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="digest-http", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def start(self) -> DigestServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
