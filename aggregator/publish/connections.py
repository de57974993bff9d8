"""A bounded HTTP/1.1 server: a fixed number of threads whatever the number of clients,
idle clients closed, and file descriptors left for polling.

http.server.ThreadingHTTPServer spends a thread per connection with no cap: 7,800 idle
connections made 7,800 threads (RSS 100 -> 474 MB), and at systemd's 1,024 descriptors about
1,000 idle connections made every poll fail with `OSError: [Errno 24] Too many open files`.
Here:

- one selector thread holds every connection between requests and reads each request head
  without blocking, so an idle or slow client holds no thread; a request whose head has
  arrived goes to one of `workers` threads, which answers it with the stdlib's request
  handler (http.server.BaseHTTPRequestHandler) and hands the connection back;
- a connection that has not delivered a whole request head within `idle_timeout` of opening
  or of its last answer is closed (the keep-alive idle time, and slowloris-style slow
  headers alike); answering one request may wait at most `io_timeout` on the client;
- at most `max_connections` are open, fewer where the descriptors the process holds at
  start plus the connections would come within `fd_reserve` of RLIMIT_NOFILE (or where a
  new connection's descriptor is numbered that high): past the limit the connection idle
  longest is closed to make room (as nginx reuses idle keep-alive connections), so a
  monitor's /healthz still gets in; a new connection is refused with 503 only while every
  open one is in a request.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import resource
import selectors
import socket
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

log = logging.getLogger("aggregator.serve")


@dataclass(frozen=True)
class ConnectionLimits:
    """What the server may spend on clients. The defaults are the daemon's."""

    workers: int = 8  # threads answering requests (plus the one selector thread)
    max_connections: int = 512  # client connections open at once
    idle_timeout: float = 30.0  # seconds to deliver a whole request head, new or kept alive
    io_timeout: float = 30.0  # seconds one answer may wait on its client (a body, a slow reader)
    fd_reserve: int = 256  # descriptors left for polling, the database and the parse workers
    max_head: int = 65_536  # bytes of request line and headers; a longer head gets 431


DEFAULT_LIMITS = ConnectionLimits()
_RECV_SIZE = 65_536
_ACCEPT_BATCH = 64  # connections accepted per wake-up, so returning ones are not starved
_ACCEPT_PAUSE = 0.1  # seconds accepting pauses when the process is out of descriptors
_WARN_EVERY = 60.0  # seconds between two warnings that the server is at a limit
_REFUSED_BODY = b"too many connections; retry in a few seconds\n"
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: 5\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
) % (len(_REFUSED_BODY), _REFUSED_BODY)
_HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
                   b"Content-Length: 0\r\n\r\n")  # fmt: skip


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one, as Go's runtime and many servers do at
    start (systemd's default soft limit is 1,024 whatever the hard one); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard != resource.RLIM_INFINITY and soft > hard):
        return soft, soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, target


def descriptor_ceiling(reserve: int) -> int:
    """How many descriptors the process may hold before the server stops holding more
    connections: the soft RLIMIT_NOFILE less `reserve` (at most half the limit, so a tiny
    limit still serves a few clients)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return soft - min(reserve, soft // 2)


def open_descriptors() -> int:
    """Descriptors the process holds now (/proc/self/fd; elsewhere the lowest free one)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listing it
    except OSError:
        probe = os.dup(0)
        os.close(probe)
        return probe


def head_complete(buffer: bytes | bytearray) -> bool:
    """Whether a request head has arrived whole: it ends at the first empty line (an
    empty first line is a head too: the handler closes the connection on it)."""
    return buffer.startswith((b"\n", b"\r\n")) or b"\n\r\n" in buffer or b"\n\n" in buffer


@dataclass(eq=False)
class Connection:
    """One client connection: what it sent that no request has consumed yet, and when it
    must have delivered a whole request head."""

    sock: socket.socket
    address: tuple
    buffer: bytearray = field(default_factory=bytearray)
    deadline: float = 0.0
    closed: bool = False


class RequestFile:
    """The handler's rfile: the request head the selector thread buffered, then the
    socket (for a body), all within one deadline."""

    def __init__(self, buffer: bytearray, sock: socket.socket, deadline: float):
        self._buf = buffer
        self._pos = 0
        self._sock = sock
        self._deadline = deadline

    def readline(self, limit: int = -1) -> bytes:
        end = self._buf.find(b"\n", self._pos)
        stop = len(self._buf) if end < 0 else end + 1
        if limit is not None and limit >= 0:
            stop = min(stop, self._pos + limit)
        line = bytes(self._buf[self._pos : stop])
        self._pos = stop
        return line

    def read(self, size: int = -1) -> bytes:
        while size >= 0 and len(self._buf) - self._pos < size:
            self._sock.settimeout(_left(self._deadline, "reading the request"))
            chunk = self._sock.recv(min(_RECV_SIZE, size - (len(self._buf) - self._pos)))
            if not chunk:
                break
            self._buf += chunk
        stop = len(self._buf) if size < 0 else min(len(self._buf), self._pos + size)
        data = bytes(self._buf[self._pos : stop])
        self._pos = stop
        return data

    def unread(self) -> bytearray:
        """What the client sent past this request (a pipelined next one)."""
        return self._buf[self._pos :]


class SocketWriter:
    """The handler's wfile: unbuffered, every write within the request's deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock = sock
        self._deadline = deadline

    def write(self, data: bytes) -> int:
        self._sock.settimeout(_left(self._deadline, "sending the answer"))
        self._sock.sendall(data)
        return len(data)

    def flush(self) -> None:
        pass


def _left(deadline: float, doing: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"timed out {doing}")
    return left


class RequestHandler(BaseHTTPRequestHandler):
    """BaseHTTPRequestHandler answering one request of a Connection (its `request`),
    reading the buffered head and leaving the socket open for the server to keep or close."""

    protocol_version = "HTTP/1.1"  # keep-alive: every answer says its length
    request: Connection
    server: BoundedHTTPServer

    def setup(self) -> None:
        deadline = time.monotonic() + self.server.limits.io_timeout
        self.connection = self.request.sock
        self.rfile = RequestFile(self.request.buffer, self.connection, deadline)  # type: ignore[assignment]
        self.wfile = SocketWriter(self.connection, deadline)  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        pass  # the server keeps the connection for the next request or closes it


def _listen(address: tuple[str, int]) -> socket.socket:
    """A non-blocking listening socket on `address` (an OSError as bind gives it, so the
    daemon's message stays "Address already in use")."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class BoundedHTTPServer:
    """Serves `handler` (a RequestHandler) on `address` within `limits`; serve_forever
    runs the selector loop (in a thread of the caller's), shutdown ends it."""

    def __init__(self, address: tuple[str, int], handler: type[RequestHandler],
                 limits: ConnectionLimits = DEFAULT_LIMITS):  # fmt: skip
        self.socket = _listen(address)
        self.server_address = self.socket.getsockname()
        self.handler = handler
        self.limits = limits
        self.fd_ceiling = descriptor_ceiling(limits.fd_reserve)
        self.open = 0  # connections open: waiting in the selector or in a request
        self.evicted = self.refused = self.timed_out = 0  # connections closed to keep the limits
        self._waiting: OrderedDict[Connection, None] = OrderedDict()  # by deadline
        self._busy: set[Connection] = set()  # in a request (workers add and remove)
        self._busy_lock = threading.Lock()
        self._requests: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._returned: deque[tuple[Connection, bool]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._accept_paused_until = 0.0
        self._warned_at = -_WARN_EVERY
        self._stopping = threading.Event()
        self._serving = threading.Event()
        self._stopped = threading.Event()
        # what the process holds without clients (the database, the log, the event loop)
        # plus what the server holds stays under the ceiling: the reserve is for polling
        self.max_connections = max(
            1, min(limits.max_connections, self.fd_ceiling - open_descriptors())
        )
        self._workers = [threading.Thread(target=self._work, name=f"digest-http-{i}", daemon=True)
                         for i in range(limits.workers)]  # fmt: skip

    def stats(self) -> dict[str, int]:
        """The connection figures /healthz shows, so a monitor sees the server at its limits."""
        return {
            "connections": self.open,
            "max_connections": self.max_connections,
            "closed_idle_for_room": self.evicted,
            "closed_timed_out": self.timed_out,
            "refused_busy": self.refused,
        }

    # ------------------------------------------------------------ selector thread

    def serve_forever(self) -> None:
        self._serving.set()
        for worker in self._workers:
            worker.start()
        self._selector.register(self.socket, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(self._timeout()):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            self._wake_r.recv(4096)
                    else:
                        self._read(key.data)
                self._take_back()
                self._expire()
                self._resume_accepting()
        finally:
            self._close_all()
            self._stopped.set()

    def _timeout(self) -> float | None:
        """Seconds until the earliest deadline (the longest-waiting connection's)."""
        waits = []
        if self._waiting:
            waits.append(next(iter(self._waiting)).deadline)
        if self._accept_paused_until:
            waits.append(self._accept_paused_until)
        return max(0.0, min(waits) - time.monotonic()) if waits else None

    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):  # out of descriptors
                    self._warn(f"the open-file limit ({exc.strerror})")
                    if not self._evict_longest_idle():
                        self._pause_accepting()
                        return
                    continue
                return  # ECONNABORTED and the like: that client is gone
            self._admit(sock, address)

    def _admit(self, sock: socket.socket, address: tuple) -> None:
        # (a descriptor numbered past the ceiling: something else grew; make room too)
        at_limit = self.open >= self.max_connections
        if at_limit or sock.fileno() >= self.fd_ceiling:
            what = (
                f"its limit of {self.max_connections} connections"
                if at_limit
                else "its descriptor reserve"
            )
            self._warn(what)
            if not self._evict_longest_idle():
                self.refused += 1
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(_REFUSED)
                sock.close()
                return
        sock.setblocking(False)
        self.open += 1
        self._wait(Connection(sock, address))

    def _wait(self, conn: Connection) -> None:
        """Hold `conn` until its next request head arrives (or is there already)."""
        if head_complete(conn.buffer):
            self._dispatch(conn)
            return
        conn.deadline = time.monotonic() + self.limits.idle_timeout
        self._waiting[conn] = None
        try:
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        except (OSError, ValueError):
            self._close(conn)

    def _read(self, conn: Connection) -> None:
        if conn not in self._waiting:  # closed earlier in this round (evicted)
            return
        try:
            data = conn.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.buffer += data
        if head_complete(conn.buffer):
            self._unwait(conn)
            self._dispatch(conn)
        elif len(conn.buffer) > self.limits.max_head:
            with contextlib.suppress(OSError):
                conn.sock.send(_HEAD_TOO_LARGE)
            self._close(conn)

    def _unwait(self, conn: Connection) -> None:
        self._waiting.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)

    def _dispatch(self, conn: Connection) -> None:
        with self._busy_lock:
            self._busy.add(conn)
        self._requests.put(conn)

    def _take_back(self) -> None:
        """Connections the workers are done with: held for the next request, or closed."""
        while self._returned:
            conn, keep = self._returned.popleft()
            with self._busy_lock:
                self._busy.discard(conn)
            if keep and not self._stopping.is_set():
                conn.sock.setblocking(False)
                self._wait(conn)
            else:
                self._close(conn)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting:
            conn = next(iter(self._waiting))
            if conn.deadline > now:
                return
            self.timed_out += 1
            self._close(conn)

    def _evict_longest_idle(self) -> bool:
        if not self._waiting:
            return False
        self.evicted += 1
        self._close(next(iter(self._waiting)))
        return True

    def _close(self, conn: Connection) -> None:
        self._unwait(conn)
        if conn.closed:
            return
        conn.closed = True
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.open -= 1

    def _pause_accepting(self) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self.socket)
        self._accept_paused_until = time.monotonic() + _ACCEPT_PAUSE

    def _resume_accepting(self) -> None:
        if self._accept_paused_until and time.monotonic() >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self.socket, selectors.EVENT_READ, "listen")

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("HTTP server at %s: closing the connections idle longest "
                        "(%d open, %d closed so far)", what, self.open, self.evicted)  # fmt: skip

    def _close_all(self) -> None:
        for conn in list(self._waiting):
            self._close(conn)
        with self._busy_lock:
            busy = list(self._busy)
        for conn in busy:  # a worker blocked on it returns at once
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)
        for _ in self._workers:
            self._requests.put(None)
        self._selector.close()

    # ------------------------------------------------------------ workers

    def _work(self) -> None:
        while (conn := self._requests.get()) is not None:
            keep = False
            try:
                conn.sock.setblocking(True)
                handler = self.handler(conn, conn.address, self)  # type: ignore[arg-type]
                conn.buffer = handler.rfile.unread()  # type: ignore[attr-defined]
                keep = not handler.close_connection
            except OSError as exc:  # the client went away or timed out mid-answer
                log.debug("HTTP client %s: %s", conn.address[0], exc)
            except Exception:  # a bug in a handler must not take a worker down with it
                log.exception("HTTP handler failed on a request from %s", conn.address[0])
            if self._stopping.is_set():  # the selector loop is gone: nobody takes it back
                conn.sock.close()
                continue
            self._returned.append((conn, keep))
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    # ------------------------------------------------------------ life cycle

    def shutdown(self) -> None:
        """Stop serving: the loop closes every connection; workers stop after their request."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")
        if self._serving.is_set():
            self._stopped.wait(5.0)

    def server_close(self) -> None:
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()
