"""The connections under the fetcher: opened only to addresses checked for the request,
and never reused after a response that did not end where its length said.

- Pinning. Each request's host is resolved once here; every address it resolved to is
  judged (aggregator/ingest/addresses.py: local addresses after a redirect from a public site,
  our own digest server always), and the connection is then made to those addresses and
  no others. A DNS answer that changes between the check and the connect (DNS rebinding)
  cannot move the connection, because nothing is looked up again. A pooled connection is
  reused only when its peer is among the addresses just checked for the new request.
- Keep-alive desync. Bytes a server sends past the end of a response (past its
  Content-Length, its last chunk, or a bodyless 304) wait in the HTTP/1.1 parser's buffer
  and would be read as the *next* response on that connection: feed A's server could
  answer for feed B on the same origin. As each response closes we look at that buffer;
  anything left over, and the connection is closed instead of pooled. Bytes that arrive
  later are caught by httpcore itself (an idle pooled socket that is readable is dropped).

Proxies from the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, read as httpx
reads them) keep working; the proxy then makes the connection, so the rules above apply
to direct connections only (a proxy's own access rules apply to the rest).

- A pool per origin. httpcore's pool looks at every connection it holds (and, for each,
  counts the idle ones again) at every request and every response: with the 32-64
  connections a poll keeps open to many hosts, that cost more CPU per 304 than the rest of
  the fetch. Each origin (scheme, host, port) gets a small pool of its own, holding the
  per_host connections to it; the pools with nothing in flight are kept for reuse up to the
  keep-alive limit, the least recently used beyond it are closed.

httpx has no hook for the connect or for the end of a response, so this module builds its
own httpcore pools (public httpcore API) and reads httpcore's HTTP/1.1 parser state (private:
`_h11_state`). Should a future httpcore move it, no connection is reused at all: slower,
never unsafe.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from ipaddress import IPv4Address
from typing import Any

import httpcore
import httpx

from .addresses import IPAddress, OwnServer, is_public, parse_address, refusal

REDIRECTED_FROM_PUBLIC = "aggregator.redirected_from_public"  # request extension (bool)
PUBLIC_PEER = "aggregator.public_peer"  # response extension: the answer came from a public address
_CHECKED = "aggregator.checked_addresses"  # request extension: where it may connect
_PEER = "aggregator.peer"  # response extension: the address its connection is open to


class AddressRefused(httpx.TransportError):
    """A hop refused before connecting; the message names the target and what to do."""


class FeedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over a pool of pinned, desync-proof connections.

    `public` decides which addresses count as the public Internet; tests pass their own
    (a server on 127.0.0.2 standing in for a public site), nothing else should."""

    def __init__(
        self,
        limits: httpx.Limits,
        own: OwnServer | None = None,
        public: Callable[[IPAddress], bool] = is_public,
    ):
        tls = httpx.create_ssl_context()  # as httpx's own (certifi, SSL_CERT_FILE)
        super().__init__(verify=tls, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError(
                "this httpx keeps its pool elsewhere; update aggregator/ingest/transport.py"
            )
        self._pool = _PoolPerOrigin(lambda: _Pool(limits, tls), limits.max_keepalive_connections)
        self.own = own
        self.public = public

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https") or not url.raw_host:
            return await super().handle_async_request(request)  # httpcore's own clear error
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await _resolve(url.raw_host.decode("ascii"), port)
        from_public = bool(request.extensions.get(REDIRECTED_FROM_PUBLIC))
        wildcard = self.own is not None and self.own.any_interface
        reason = refusal(
            str(url.copy_with(username=None, password=None)), addresses, port,
            redirected_from_public=from_public, own=self.own,
            this_host=this_machine(addresses) if from_public or wildcard else (),
            public=self.public,
        )  # fmt: skip
        if reason:
            raise AddressRefused(reason, request=request)
        request.extensions = {**request.extensions, _CHECKED: tuple(addresses)}
        response = await super().handle_async_request(request)
        peer = response.extensions.get(_PEER)
        response.extensions[PUBLIC_PEER] = (
            peer is not None and self.public(peer) and not this_machine([peer])
        )
        return response


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, in the resolver's order of preference."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpx.ConnectError(str(exc)) from None
    return list(dict.fromkeys(parse_address(str(info[4][0])) for info in found))


def this_machine(addresses: Iterable[IPAddress]) -> frozenset[IPAddress]:
    """Those of `addresses` that belong to this machine. The kernel is asked which source
    address it would use to reach each one (connecting a UDP socket sends nothing): its
    own addresses it reaches from themselves. A public IP on this host's interface is
    then known as ours, whatever DNS says."""
    mine = set()
    for ip in addresses:
        family = socket.AF_INET if isinstance(ip, IPv4Address) else socket.AF_INET6
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect((str(ip), 9))
                source = parse_address(probe.getsockname()[0])
            except (OSError, ValueError):
                continue
        if source == ip:
            mine.add(ip)
    return frozenset(mine)


Origin = tuple[bytes, bytes, int | None]  # httpcore.Origin is not hashable


class _PoolPerOrigin:
    """Requests routed to one _Pool per origin (see the module docstring). At most
    `idle_pools` pools with no request in flight stay open (None: no limit); past that the
    least recently used is closed with its connections."""

    def __init__(self, make_pool: Callable[[], httpcore.AsyncConnectionPool], idle_pools: int | None):
        self._make_pool = make_pool
        self._idle_pools = idle_pools
        self._pools: dict[Origin, httpcore.AsyncConnectionPool] = {}
        self._in_flight: dict[Origin, int] = {}
        self._idle: OrderedDict[Origin, None] = OrderedDict()  # least recently used first

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        url = request.url
        origin = (url.scheme, url.host, url.port)
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = self._make_pool()
        self._idle.pop(origin, None)
        self._in_flight[origin] = self._in_flight.get(origin, 0) + 1
        try:
            response = await pool.handle_async_request(request)
        except BaseException:
            await self._finished(origin)
            raise
        return httpcore.Response(
            status=response.status, headers=response.headers,
            content=_Tracked(response.stream, lambda: self._finished(origin)),
            extensions=response.extensions,
        )  # fmt: skip

    async def _finished(self, origin: Origin) -> None:
        """A request to `origin` is over (its response closed, or it failed)."""
        left = self._in_flight[origin] - 1
        if left:
            self._in_flight[origin] = left
            return
        del self._in_flight[origin]
        self._idle[origin] = None
        while self._idle_pools is not None and len(self._idle) > self._idle_pools:
            oldest, _ = self._idle.popitem(last=False)
            await self._pools.pop(oldest).aclose()

    @property
    def connections(self) -> list[httpcore.AsyncConnectionInterface]:
        """Every connection of every pool (as httpcore's pool lists its own)."""
        return [c for pool in self._pools.values() for c in pool.connections]

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        self._in_flight.clear()
        self._idle.clear()
        for pool in pools:
            await pool.aclose()

    async def __aenter__(self) -> _PoolPerOrigin:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Tracked:
    """A response body that says when it is closed."""

    def __init__(self, stream: Any, closed: Callable[[], Awaitable[None]]):
        self._stream = stream
        self._closed = closed

    async def __aiter__(self):
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            closed, self._closed = self._closed, None
            if closed is not None:
                await closed()


class _Pool(httpcore.AsyncConnectionPool):
    def __init__(self, limits: httpx.Limits, tls: ssl.SSLContext):
        self._feed_tls = tls
        self._feed_keepalive = limits.keepalive_expiry
        super().__init__(
            ssl_context=self._feed_tls,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        return _Connection(origin, self._feed_tls, self._feed_keepalive)


class _Connection(httpcore.AsyncHTTPConnection):
    """One connection to one origin, opened to a checked address and pooled only while
    every response on it ended exactly where it said."""

    def __init__(
        self, origin: httpcore.Origin, tls: ssl.SSLContext, keepalive_expiry: float | None
    ):
        self.checked: tuple[IPAddress, ...] = ()
        self.peer: IPAddress | None = None
        self._spoiled = False
        super().__init__(
            origin=origin, ssl_context=tls, keepalive_expiry=keepalive_expiry,
            network_backend=_Dialer(self),
        )  # fmt: skip

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        checked = tuple(request.extensions.get(_CHECKED, ()))
        if self.peer is not None and self.peer not in checked:
            # open to an address not checked for this request: never send it here
            await self.aclose()
            raise httpcore.ConnectionNotAvailable()
        self.checked = checked
        response = await super().handle_async_request(request)
        if self.peer is None:
            self.peer = _server_address(response)
        return httpcore.Response(
            status=response.status, headers=response.headers,
            content=_Body(response.stream, self),
            extensions={**response.extensions, _PEER: self.peer},
        )  # fmt: skip

    def response_ends(self) -> None:
        """Called as a response closes, before its connection can be pooled: bytes left in
        the parser's buffer (or a parser we cannot see) mean it may not be reused."""
        parser = getattr(self._connection, "_h11_state", None)
        if parser is None or parser.trailing_data[0]:
            self._spoiled = True

    def is_available(self) -> bool:
        return not self._spoiled and super().is_available()

    def has_expired(self) -> bool:
        return self._spoiled or super().has_expired()


def _server_address(response: httpcore.Response) -> IPAddress | None:
    stream = response.extensions.get("network_stream")
    address = stream.get_extra_info("server_addr") if stream is not None else None
    try:
        return parse_address(str(address[0])) if address else None
    except ValueError:
        return None


class _Body:
    """A response body that tells its connection when it ends."""

    def __init__(self, stream: Any, connection: _Connection):
        self._stream = stream
        self._connection = connection

    async def __aiter__(self):
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        self._connection.response_ends()
        await self._stream.aclose()


class _Dialer(httpcore.AsyncNetworkBackend):
    """Connects a _Connection to the addresses checked for its request, in the resolver's
    order, and to nothing else (no second DNS lookup)."""

    def __init__(self, connection: _Connection):
        self._connection = connection
        self._network = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None, socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:  # fmt: skip
        failure: Exception = httpcore.ConnectError(f"no checked address for {host}")
        for ip in self._connection.checked:
            try:
                return await self._network.connect_tcp(
                    str(ip), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return await self._network.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._network.sleep(seconds)


def proxy_routes(proxies: Mapping[str, str]) -> dict[str, str | None]:
    """URL pattern -> proxy URL (None: connect directly) from `urllib.request.getproxies()`,
    by the rules httpx applies to the environment: a client given its own transport no
    longer reads the environment, so we do it the same way."""
    routes: dict[str, str | None] = {}
    for scheme in ("http", "https", "all"):
        if proxies.get(scheme):
            target = proxies[scheme]
            routes[f"{scheme}://"] = target if "://" in target else f"http://{target}"
    for host in (h.strip() for h in proxies.get("no", "").split(",")):
        if host == "*":
            return {}
        if not host:
            continue
        if "://" in host:
            routes[host] = None
        elif _is_ip(host.split("/")[0]) or host.lower() == "localhost":
            routes[f"all://[{host}]" if ":" in host else f"all://{host}"] = None
        else:
            routes[f"all://*{host}"] = None
    return routes


def _is_ip(text: str) -> bool:
    try:
        parse_address(text)
    except ValueError:
        return False
    return True
