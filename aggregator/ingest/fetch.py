"""HTTP retrieval: one shared httpx.AsyncClient, polite and bounded.

Politeness: a global limit and a per-host limit on concurrent requests, conditional GET
(ETag / Last-Modified), the configured User-Agent. Safety: connect and total timeouts (a
server sending one byte a second cannot hold us), and `max_bytes` enforced while streaming,
after decompression, so neither a huge body nor a gzip bomb is ever held in memory.

Redirects are followed here, hop by hop, so each hop is checked before it is connected
(aggregator/ingest/addresses.py, aggregator/ingest/transport.py): the configured URL is trusted, a
redirect from a public site may not lead into the local network, and nothing may reach the
daemon's own digest server.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import urllib.request
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from ..config import Settings
from ..records import FetchResult, FetchStatus
from ..units import format_duration
from .addresses import IPAddress, OwnServer, is_public, own_server
from .transport import (
    PUBLIC_PEER,
    REDIRECTED_FROM_PUBLIC,
    AddressRefused,
    FeedTransport,
    proxy_routes,
)

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/rdf+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
_MAX_AGE = re.compile(r"max-age\s*=\s*(\d+)", re.IGNORECASE)
DRAIN_LIMIT = 64 * 1024  # a redirect's body up to this size is read so its connection is reused


def make_client(
    settings: Settings,
    own: OwnServer | None = None,
    public: Callable[[IPAddress], bool] = is_public,
) -> httpx.AsyncClient:
    """The one client every fetch shares: timeouts, connection pool, User-Agent. `own` is
    the digest server no fetch may reach (default: the one settings.http describes);
    `public` is the test seam of FeedTransport."""
    limits = httpx.Limits(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    proxies = {
        pattern: None if proxy is None else httpx.AsyncHTTPTransport(proxy=proxy, limits=limits)
        for pattern, proxy in proxy_routes(urllib.request.getproxies()).items()
    }
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
        follow_redirects=False,  # Fetcher follows them, checking each hop
        max_redirects=settings.max_redirects,
        limits=limits,
        transport=FeedTransport(limits, own or own_server(settings.http_address()), public),
        mounts=proxies,
        # only what _Decoder can inflate with a bound
        headers={"User-Agent": settings.user_agent, "Accept": ACCEPT,
                 "Accept-Encoding": "gzip, deflate"},  # fmt: skip
    )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_max_age(cache_control: str | None) -> float | None:
    """max-age from Cache-Control, a server's hint of how often to come back."""
    if not cache_control:
        return None
    m = _MAX_AGE.search(cache_control)
    return float(m.group(1)) if m else None


class Fetcher:
    """Fetches feeds through a shared client, at most `concurrency` at once and at most
    `per_host` per host, so a site carrying many of our feeds is never hammered."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings, clock=None):
        self.client = client
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self._global = asyncio.Semaphore(settings.concurrency)
        self._hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(settings.per_host)
        )

    async def fetch(
        self, url: str, etag: str | None = None, last_modified: str | None = None
    ) -> FetchResult:
        """One conditional GET. Never raises for network or HTTP trouble: the result says."""
        host = (urlsplit(url).hostname or "").lower()
        async with self._hosts[host], self._global:
            started = asyncio.get_running_loop().time()
            fetched_at = self._clock()
            try:
                async with asyncio.timeout(self.settings.timeout):
                    result = await self._get(url, etag, last_modified, fetched_at)
            except AddressRefused as exc:
                result = self._error(url, fetched_at, str(exc))
            except TimeoutError:
                result = self._error(
                    url, fetched_at,
                    f"no complete answer within {format_duration(self.settings.timeout)} "
                    "(settings.timeout); the server is slow or down",
                )  # fmt: skip
            except httpx.TooManyRedirects:
                result = self._error(
                    url, fetched_at,
                    f"more than {self.settings.max_redirects} redirects (a redirect loop?); "
                    "open the URL in a browser and use where it ends",
                )  # fmt: skip
            except httpx.UnsupportedProtocol as exc:
                result = self._error(url, fetched_at, f"redirected to an unsupported address: {exc}")
            except httpx.TimeoutException as exc:
                result = self._error(url, fetched_at, f"timed out ({type(exc).__name__}); the server is slow or down")
            except httpx.ConnectError as exc:
                result = self._error(url, fetched_at, f"cannot connect: {exc or 'connection failed'}; check the URL and the network")
            except httpx.DecodingError as exc:
                result = self._error(url, fetched_at, f"the server sent a corrupt compressed body: {exc}")
            except httpx.InvalidURL as exc:
                result = self._error(url, fetched_at, f"redirected to an unsupported or invalid address: {exc}")
            except httpx.HTTPError as exc:
                result = self._error(url, fetched_at, f"{type(exc).__name__}: {exc or 'transfer failed'}")
            elapsed = asyncio.get_running_loop().time() - started
        return _with_elapsed(result, elapsed)

    def _error(self, url: str, fetched_at: datetime, message: str) -> FetchResult:
        return FetchResult(url=url, status=FetchStatus.ERROR, fetched_at=fetched_at, error=message)

    async def _get(
        self, url: str, etag: str | None, last_modified: str | None, fetched_at: datetime
    ) -> FetchResult:
        conditional = {}
        if etag:
            conditional["If-None-Match"] = etag
        if last_modified:
            conditional["If-Modified-Since"] = last_modified
        request = self.client.build_request("GET", url, headers=conditional)
        moves: list[int] = []  # statuses of the redirects followed
        for _ in range(self.settings.max_redirects + 1):
            response = await self.client.send(request, stream=True, follow_redirects=False)
            try:
                hop = response.next_request  # built by httpx for a 3xx with a Location
                if hop is None:
                    return await self._answer(response, url, etag, last_modified, fetched_at, moves)
                moves.append(response.status_code)
                # a redirect from a public address may not lead into the local network
                from_public = response.extensions.get(PUBLIC_PEER, True)  # proxied: assume so
                hop.extensions = {**hop.extensions, REDIRECTED_FROM_PUBLIC: from_public}
                await _drain(response)
            finally:
                await response.aclose()
            request = hop
        raise httpx.TooManyRedirects(
            f"more than {self.settings.max_redirects} redirects", request=request
        )

    async def _answer(
        self, response: httpx.Response, url: str, etag: str | None, last_modified: str | None,
        fetched_at: datetime, moves: list[int],
    ) -> FetchResult:  # fmt: skip
        """The result of the last hop's response."""
        headers = {k.lower(): v for k, v in response.headers.items()}
        common = dict(
            url=url,
            fetched_at=fetched_at,
            http_status=response.status_code,
            headers=headers,
            etag=headers.get("etag") or etag,
            last_modified=headers.get("last-modified") or last_modified,
            final_url=str(response.url),
            permanent_redirect=_permanent_redirect(moves, str(response.url)),
            max_age=parse_max_age(headers.get("cache-control")),
        )
        code = response.status_code
        if code == 304:
            await _drain(response)  # no body: this lets its connection be reused
            return FetchResult(status=FetchStatus.NOT_MODIFIED, **common)
        if code == 410:
            return FetchResult(
                status=FetchStatus.GONE,
                error="410 Gone: the publisher removed this feed; delete it from feeds.yaml",
                **common,
            )
        if code in (429, 503):
            wait = parse_retry_after(headers.get("retry-after"), fetched_at)
            hint = f"; retrying after {format_duration(round(wait))}" if wait is not None else ""
            return FetchResult(
                status=FetchStatus.RETRY_LATER,
                retry_after=wait,
                error=f"HTTP {code} {response.reason_phrase}: the server asked us to slow down{hint}",
                **common,
            )
        if code >= 400 or code < 200 or code in (204, 205):
            return FetchResult(
                status=FetchStatus.ERROR,
                error=f"HTTP {code} {response.reason_phrase}" + _status_hint(code),
                **common,
            )
        body = await self._read_limited(response)
        if body is None:
            return FetchResult(
                status=FetchStatus.ERROR,
                error=f"the feed is larger than settings.max_bytes ({self.settings.max_bytes:,} bytes); "
                "raise max_bytes if it is genuine",
                **common,
            )
        return FetchResult(status=FetchStatus.OK, body=body, **common)

    async def _read_limited(self, response: httpx.Response) -> bytes | None:
        """The decoded body, or None as soon as it grows past max_bytes. We decompress
        ourselves, never more than the limit at a time: httpx would inflate each network
        read whole (64 KB of a gzip bomb is 64 MB)."""
        limit = self.settings.max_bytes
        encoding = response.headers.get("content-encoding", "").strip().lower()
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit and encoding in ("", "identity"):
            return None
        decoder = _Decoder(encoding)
        chunks: list[bytes] = []
        size = 0
        async for raw in response.aiter_raw():
            for data in decoder.feed(raw, limit - size + 1):
                size += len(data)
                if size > limit:
                    return None
                chunks.append(data)
        tail = decoder.finish(limit - size + 1)
        if size + len(tail) > limit:
            return None
        chunks.append(tail)
        return b"".join(chunks)


class _Decoder:
    """Content-Encoding gzip / deflate (zlib or raw) / identity, with bounded output."""

    def __init__(self, encoding: str):
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
            self._deflate_guess = True
        else:
            raise httpx.DecodingError(f"unsupported Content-Encoding {encoding!r}")
        self._started = False

    def feed(self, raw: bytes, room: int) -> Iterator[bytes]:
        """Decoded pieces of `raw`, each at most `room` bytes (the caller stops early)."""
        if self._z is None:
            yield raw
            return
        try:
            data = self._z.decompress(raw, room)
        except zlib.error:
            if getattr(self, "_deflate_guess", False) and not self._started:
                # "deflate" servers often send raw deflate without the zlib header
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                self._deflate_guess = False
                data = self._z.decompress(raw, room)
            else:
                raise httpx.DecodingError("invalid compressed data") from None
        self._started = True
        yield data
        while self._z.unconsumed_tail:
            yield self._z.decompress(self._z.unconsumed_tail, room)

    def finish(self, room: int) -> bytes:
        if self._z is None:
            return b""
        try:
            return self._z.flush(max(room, 1)) if hasattr(self._z, "flush") else b""
        except zlib.error:
            raise httpx.DecodingError("truncated compressed data") from None


async def _drain(response: httpx.Response) -> None:
    """Read a body we do not need (a redirect's, a 304's) when it is small, so its
    connection can serve the next request; a larger or unannounced one is left unread and
    the connection closed. (httpx reads a redirect's whole body, however large.)"""
    declared = response.headers.get("content-length", "")
    bodyless = response.status_code in (204, 304)
    if not bodyless and not (declared.isdigit() and int(declared) <= DRAIN_LIMIT):
        return
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > DRAIN_LIMIT:
            return


def _permanent_redirect(moves: list[int], final_url: str) -> str | None:
    """Where a feed moved for good: set only when every hop was a 301/308."""
    if moves and all(code in (301, 308) for code in moves):
        return final_url
    return None


def _status_hint(code: int) -> str:
    if code == 404:
        return ": the feed is not at this URL any more; check it in a browser"
    if code in (401, 403):
        return ": the server refuses us; the feed may need a login or block bots"
    if code >= 500:
        return ": the server failed; it will be retried with backoff"
    return ""


def _with_elapsed(result: FetchResult, elapsed: float) -> FetchResult:
    return replace(result, elapsed=elapsed)
