"""A hostile HTTP server for robustness tests: raw asyncio on 127.0.0.1, in a thread.

tests/feedserver.py answers politely with whole bodies; this one misbehaves on purpose.
Every big body is generated on the fly (never built in memory), so the server itself stays
small while it offers a client a gigabyte:

    with EvilServer() as srv:
        srv.static("/good.xml", rss_bytes)
        srv.route("/huge", huge_body(10**9))
        url = srv.url("/huge")

A route is an async handler `(request, writer) -> None` that writes the raw response
(status line, headers and body) itself; the helpers below build the usual ones. A client
that gives up (size limit, timeout) closes the socket: handlers just stop then.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

GB = 1000 * 1000 * 1000
MB = 1000 * 1000


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def _head(status: int, headers: dict[str, str], reason: str = "OK") -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _chunked(writer: asyncio.StreamWriter, pieces: AsyncIterator[bytes]) -> None:
    """Transfer-Encoding: chunked framing of `pieces`, then the final empty chunk."""
    async for piece in pieces:
        if piece:
            await _send(writer, b"%x\r\n%s\r\n" % (len(piece), piece))
    await _send(writer, b"0\r\n\r\n")


# ---------------------------------------------------------------- handlers


def static(body: bytes, content_type: str = "application/xml", status: int = 200,
           headers: dict[str, str] | None = None) -> Handler:  # fmt: skip
    """An ordinary complete response (for the good feed and content cases)."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        head = {"Content-Type": content_type, "Content-Length": str(len(body)), **(headers or {})}
        await _send(writer, _head(status, head) + (body if request.method != "HEAD" else b""))

    return handle


_RSS_OPEN = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>huge</title>\n'
)


async def _xml_filler(total: int, piece: int = 64 * 1024) -> AsyncIterator[bytes]:
    """`total` bytes of a plausible RSS document that never closes, produced piece by piece."""
    item = b"<item><title>filler</title><description>" + b"x" * 200 + b"</description></item>\n"
    block = (item * (piece // len(item) + 1))[:piece]
    yield _RSS_OPEN
    sent = len(_RSS_OPEN)
    while sent < total:
        out = block[: total - sent]
        sent += len(out)
        yield out
        await asyncio.sleep(0)


def huge_body(total: int = GB, declare_length: bool = True) -> Handler:
    """`total` bytes of RSS, with a truthful Content-Length or chunked (no length)."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml"}
        if declare_length:
            head["Content-Length"] = str(total)
            await _send(writer, _head(200, head))
            async for piece in _xml_filler(total):
                await _send(writer, piece)
        else:
            head["Transfer-Encoding"] = "chunked"
            await _send(writer, _head(200, head))
            await _chunked(writer, _xml_filler(total))

    return handle


def _compressor(encoding: str):
    # gzip: wbits 31 (gzip wrapper); deflate: wbits 15 (zlib wrapper, what HTTP "deflate" means)
    return zlib.compressobj(9, zlib.DEFLATED, 31 if encoding == "gzip" else 15)


def small_bomb(encoding: str, zeros: int = 10 * MB) -> Handler:
    """`zeros` zero bytes compressed whole (10 MB -> ~10 KB), sent with Content-Length."""
    c = _compressor(encoding)
    body = c.compress(b"\0" * zeros) + c.flush()

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml", "Content-Encoding": encoding,
                "Content-Length": str(len(body))}  # fmt: skip
        await _send(writer, _head(200, head) + body)

    return handle


def streaming_bomb(encoding: str, total: int = GB, step: int = 4 * MB) -> Handler:
    """`total` decompressed bytes (zeros after an RSS prologue), compressed on the fly
    `step` at a time and sent chunked as zlib emits it: ~1 MB on the wire per GB, never
    held whole. Without flushes each wire chunk is as dense as deflate allows (~1000:1),
    the worst case for a client that decompresses whatever one socket read holds."""
    zeros = b"\0" * step

    async def pieces() -> AsyncIterator[bytes]:
        c = _compressor(encoding)
        pending = [c.compress(_RSS_OPEN)]
        sent = len(_RSS_OPEN)
        while sent < total:
            n = min(step, total - sent)
            sent += n
            pending.append(c.compress(zeros[:n]))
            if sum(map(len, pending)) >= 60_000:  # one socket read's worth: ~60 MB inflated
                yield b"".join(pending)
                pending = []
            await asyncio.sleep(0)
        yield b"".join(pending) + c.flush()

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml", "Content-Encoding": encoding,
                "Transfer-Encoding": "chunked"}  # fmt: skip
        await _send(writer, _head(200, head))
        await _chunked(writer, pieces())

    return handle


def endless_chunked(
    piece: bytes = b"<item><title>more</title></item>\n", every: float = 0.05
) -> Handler:
    """A chunked body that never ends: a small chunk every `every` seconds, forever."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml", "Transfer-Encoding": "chunked"}
        await _send(writer, _head(200, head))
        await _send(writer, b"%x\r\n%s\r\n" % (len(_RSS_OPEN), _RSS_OPEN))
        while True:
            await _send(writer, b"%x\r\n%s\r\n" % (len(piece), piece))
            await asyncio.sleep(every)

    return handle


def slowloris_body(rate: float = 1.0) -> Handler:
    """Headers at once, then the body one byte per `1/rate` seconds (a per-read timeout
    never fires: only a total deadline stops it)."""
    body = _RSS_OPEN + b"<item><title>slow</title></item></channel></rss>"

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml", "Content-Length": str(len(body))}
        await _send(writer, _head(200, head))
        for i in range(len(body)):
            await _send(writer, body[i : i + 1])
            await asyncio.sleep(1 / rate)

    return handle


def slowloris_headers(rate: float = 1.0) -> Handler:
    """The status line and headers themselves one byte per `1/rate` seconds."""
    head = _head(200, {"Content-Type": "application/rss+xml", "X-Padding": "p" * 200})

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        for i in range(len(head)):
            await _send(writer, head[i : i + 1])
            await asyncio.sleep(1 / rate)

    return handle


def never_answer() -> Handler:
    """Accept, read the request, then say nothing until the client leaves."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    return handle


def close_at_once() -> Handler:
    """Read the request and close the connection without a byte of answer."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.close()

    return handle


def not_http() -> Handler:
    """Answer with bytes that are not HTTP at all."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        await _send(writer, b"SSH-2.0-OpenSSH_9.0\r\n\x00\x01\x02garbage\r\n\r\n")
        writer.close()

    return handle


def reset_mid_body(declared: int = 200_000, sent: int = 50_000) -> Handler:
    """Promise `declared` bytes, send `sent`, then reset the connection (RST via
    SO_LINGER 0), as a crashing proxy would."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        head = {"Content-Type": "application/rss+xml", "Content-Length": str(declared)}
        body = (_RSS_OPEN + b"<item><title>cut</title><description>" + b"y" * sent)[:sent]
        await _send(writer, _head(200, head) + body)
        await asyncio.sleep(0.1)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return handle


def redirect(location: str, status: int = 302) -> Handler:
    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        await _send(writer, _head(status, {"Location": location, "Content-Length": "0"}, "Found"))

    return handle


# ---------------------------------------------------------------- the server


class EvilServer:
    """Serves handlers by path on `host` (any loopback address) at a free port, from an
    event loop in a thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def __enter__(self) -> EvilServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            # shut down: cancel hung handlers so the loop closes cleanly
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0.05))
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="evilserver")
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("EvilServer did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._server is not None:
            loop.call_soon_threadsafe(self._server.close)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def route(self, path: str, handler: Handler) -> str:
        """Serve `handler` at `path`; returns the absolute URL."""
        self._routes["/" + path.lstrip("/")] = handler
        return self.url(path)

    def static(self, path: str, body: bytes, content_type: str = "application/xml", **kw) -> str:
        return self.route(path, static(body, content_type, **kw))

    def hits(self, path: str) -> int:
        path = "/" + path.lstrip("/")
        return sum(1 for r in list(self.requests) if r.path.split("?")[0] == path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                request = await self._read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                handler = self._routes.get(request.path.split("?")[0])
                if handler is None:
                    await _send(writer, _head(404, {"Content-Length": "0"}, "Not Found"))
                    continue
                await handler(request, writer)
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # the client gave up (size limit, timeout): expected
        except asyncio.CancelledError:
            pass  # the server is shutting down with this handler still hanging
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = (lines[0].split(" ") + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return Request(method, path, headers)
