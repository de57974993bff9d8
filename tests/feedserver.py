"""A small, real HTTP server for tests.

Why a real server instead of mocking httpx: the fetcher's behaviour we care about
(conditional GETs, redirects, gzip, timeouts, status handling) lives partly in the
HTTP client and the network stack. Serving canned responses over a real socket on
127.0.0.1 exercises all of that, while staying fast, offline and deterministic.

Usage::

    with FeedServer() as srv:
        srv.set("/feed.xml", Route(body=b"<rss/>", etag='"v1"'))
        httpx.get(srv.url("/feed.xml"))
        assert srv.hits("/feed.xml") == 1
"""

from __future__ import annotations

import contextlib
import gzip as gzip_module
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_CONTENT_TYPE = "application/xml"
_CONTENT_TYPES = {
    ".json": "application/feed+json",
    ".html": "text/html; charset=utf-8",
    ".rdf": "application/rdf+xml",
}


@dataclass
class Route:
    """A canned response for one path."""

    body: bytes = b""
    status: int = 200
    # Extra response headers, e.g. {"Content-Type": "application/rss+xml"}.
    headers: dict[str, str] = field(default_factory=dict)
    # If set: sent as ETag; a request whose If-None-Match matches gets 304.
    etag: str | None = None
    # If set: sent as Last-Modified; a request whose If-Modified-Since equals it gets 304.
    last_modified: str | None = None
    # Seconds to sleep before answering (to trigger client timeouts).
    delay: float = 0.0
    # Gzip the body and send Content-Encoding: gzip.
    gzip: bool = False
    # Path or absolute URL for the Location header; use with status 301/302/307/308.
    redirect_to: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (path includes any query string)."""

    method: str
    path: str
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients may keep connections alive; we always send Content-Length.
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log; tests read `FeedServer.requests`."""

    def _respond(self, send_body: bool) -> None:
        owner = self.server.owner
        owner._record(RecordedRequest(self.command, self.path, dict(self.headers.items())))
        route = owner._lookup(self.path)
        if route is None:
            self._send(404, {"Content-Type": "text/plain"}, b"not found", send_body)
            return
        if route.delay:
            time.sleep(route.delay)

        headers: dict[str, str] = {}
        if route.etag is not None:
            headers["ETag"] = route.etag
        if route.last_modified is not None:
            headers["Last-Modified"] = route.last_modified

        if self._not_modified(route):
            self._send(304, headers, b"", send_body=False)
            return

        if route.redirect_to is not None:
            headers["Location"] = route.redirect_to
        headers.update(route.headers)
        body = route.body
        if route.gzip:
            body = gzip_module.compress(body)
            headers["Content-Encoding"] = "gzip"
        self._send(route.status, headers, body, send_body)

    def _not_modified(self, route: Route) -> bool:
        """Mimic a server honouring conditional GET (the fetcher should send these)."""
        inm = self.headers.get("If-None-Match")
        if route.etag is not None and inm is not None:
            # Weak comparison (W/ ignored), as RFC 9110 prescribes for If-None-Match.
            tags = {_weak(t) for t in inm.split(",")}
            if "*" in tags or _weak(route.etag) in tags:
                return True
        ims = self.headers.get("If-Modified-Since")
        return route.last_modified is not None and ims == route.last_modified

    def _send(self, status: int, headers: dict[str, str], body: bytes, send_body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and status != 304:
            # the client may give up on purpose (size limit, timeout): not a server fault
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung handler (e.g. a long delay) must not block shutdown
    owner: FeedServer


class FeedServer:
    """Serves `Route`s on 127.0.0.1 at a random free port from a background thread."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FeedServer:
        # Port 0: the OS picks a free port, so parallel test runs never collide.
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration -----------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FeedServer is not started")
        return self._httpd.server_address[1]

    def url(self, path: str) -> str:
        """Absolute URL for `path`, e.g. "http://127.0.0.1:PORT/feed.xml"."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def set(self, path: str, route: Route | bytes) -> None:
        """Serve `route` at `path` (replacing any earlier route there).

        Bare bytes become a 200 application/xml response. A `Route` is served
        exactly as given, so tests can also omit Content-Type on purpose.
        `path` may include a query string, which then must match exactly;
        otherwise the query string of a request is ignored when routing.
        """
        if isinstance(route, bytes):
            route = Route(body=route, headers={"Content-Type": DEFAULT_CONTENT_TYPE})
        with self._lock:
            self._routes[_norm(path)] = route

    def serve_file(self, path: str, file: Path, **route_kwargs: object) -> None:
        """Serve the bytes of `file` (e.g. a fixture from tests/data) at `path`.

        Content-Type is guessed from the suffix unless `headers` sets one.
        """
        file = Path(file)
        headers = dict(route_kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = _CONTENT_TYPES.get(file.suffix.lower(), DEFAULT_CONTENT_TYPE)
        self.set(path, Route(body=file.read_bytes(), headers=headers, **route_kwargs))  # type: ignore[arg-type]

    # -- inspection --------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def hits(self, path: str) -> int:
        """Number of requests for `path` (query string ignored unless given)."""
        want = _norm(path)
        key = _norm if "?" in want else _bare
        with self._lock:
            return sum(1 for r in self._requests if key(r.path) == want)

    # -- used by the handler -----------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _lookup(self, raw_path: str) -> Route | None:
        with self._lock:
            return self._routes.get(_norm(raw_path)) or self._routes.get(_bare(raw_path))


def _norm(path: str) -> str:
    """Request-target as stored: leading slash, fragment dropped, query kept."""
    parts = urlsplit(path)
    p = "/" + parts.path.lstrip("/")
    return f"{p}?{parts.query}" if parts.query else p


def _bare(path: str) -> str:
    """Request-target without its query string."""
    return "/" + urlsplit(path).path.lstrip("/")


def _weak(etag: str) -> str:
    """ETag with surrounding whitespace and any weak-validator prefix removed."""
    return etag.strip().removeprefix("W/")
