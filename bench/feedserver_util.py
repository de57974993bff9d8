"""A tiny static HTTP server on 127.0.0.1 for benchmarks: serves feed documents from memory."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StaticFeedServer:
    """Serves `path -> (body, content type)` on 127.0.0.1 from a background thread, with a
    strong ETag (a hash of the body): If-None-Match with it answers 304, as a real feed
    server does for an unchanged feed.

    Routes may be added while it runs. Use as a context manager::

        with StaticFeedServer() as srv:
            srv.add("/a.xml", b"<rss/>", "application/rss+xml")
            srv.url("/a.xml")
    """

    def __init__(self) -> None:
        self._routes: dict[str, tuple[bytes, str, str]] = {}
        self._lock = threading.Lock()
        routes, lock = self._routes, self._lock

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with lock:
                    route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                body, ctype, etag = route
                if etag in (self.headers.get("If-None-Match") or ""):
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def add(self, path: str, body: bytes, content_type: str) -> None:
        """Serve `body` at `path` (which starts with '/'); the same body keeps its ETag."""
        etag = '"' + hashlib.sha1(body).hexdigest() + '"'
        with self._lock:
            self._routes[path] = (body, content_type, etag)

    def url(self, path: str) -> str:
        """Absolute URL of `path` on this server."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def __enter__(self) -> StaticFeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
