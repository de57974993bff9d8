"""Issue #12, items 6 and 11: redirects into the local network, the daemon's own digest,
and keep-alive desync. Real servers on loopback, the real fetcher and store, the real
CLI and daemon.

The seam for "a public site": nothing on 127.0.0.1 is public, so the redirect tests give
make_client a `public` rule under which 127.0.0.2 (another loopback address, where the
"outside" EvilServer listens) counts as the public Internet; which addresses the real rule
treats as public is tested directly on many addresses (test_which_addresses_are_public).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path

import pytest
from evilserver import GB, EvilServer, Handler, Request, redirect
from feedserver import Route
from harness import Workspace, good_feed, record, rss
from test_daemon import Rig, story, wait_for

from aggregator.config import Config, Settings, dump_yaml, parse_config
from aggregator.ingest.addresses import OwnServer, is_public, kind, own_server, reaches_own, refusal
from aggregator.ingest.fetch import Fetcher, make_client
from aggregator.ingest.transport import proxy_routes
from aggregator.records import FetchStatus
from aggregator.service.poll import Poller
from aggregator.store.database import Store
from aggregator.timeutil import utcnow

OUTSIDE = "127.0.0.2"  # stands in for a public site (see the module docstring)
SECRET = "INTERNAL ADMIN TOKEN=7f3a9c"


def outside_is_public(ip) -> bool:
    return ip == ip_address(OUTSIDE)


def items(title: str, *texts: str) -> list[dict[str, str]]:
    return [{"guid": f"{title}-{i}", "title": f"{title} story {i}", "description": t}
            for i, t in enumerate(texts)]  # fmt: skip


def closed_port() -> socket.socket:
    """A port bound but not listening (connection refused); keep the socket open."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


# ---------------------------------------------------------------- which addresses are local

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2a00:1450:4001::200e",
          "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]  # fmt: skip
LOCAL = {
    "127.0.0.1": "loopback", "127.255.255.254": "loopback", "::1": "loopback",
    "0.0.0.0": "unspecified", "::": "unspecified",
    "10.0.0.1": "private", "172.16.0.1": "private", "172.31.255.255": "private",
    "192.168.1.1": "private", "fc00::1": "private", "fd12:3456::1": "private",
    "169.254.169.254": "link-local", "fe80::1": "link-local", "fe80::1%eth0": "link-local",
    "100.64.0.1": "shared (carrier-grade NAT)",
    "224.0.0.1": "multicast", "239.255.255.250": "multicast", "ff02::1": "multicast",
    "240.0.0.1": "private", "255.255.255.255": "private", "192.0.2.1": "private",
    "198.18.0.1": "private", "2001:db8::1": "private", "fec0::1": "site-local",
    # IPv6 spellings of IPv4 addresses are judged as the IPv4 address they carry
    "::ffff:127.0.0.1": "loopback", "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "link-local", "2002:7f00:1::": "loopback",
    "2002:a00:1::": "private", "64:ff9b::7f00:1": "loopback", "64:ff9b::a9fe:a9fe": "link-local",
    "::127.0.0.1": "reserved", "2001::1": "private",  # IPv4-compatible (deprecated), Teredo
}  # fmt: skip


@pytest.mark.parametrize("text", PUBLIC)
def test_which_addresses_are_public(text: str) -> None:
    assert is_public(ip_address(text)) and kind(ip_address(text)) is None


@pytest.mark.parametrize("text", list(LOCAL))
def test_which_addresses_are_local(text: str) -> None:
    assert not is_public(ip_address(text))
    assert kind(ip_address(text)) == LOCAL[text]


def test_refusal_trusts_the_configured_url_but_not_a_public_sites_redirect() -> None:
    loopback, lan, web = ip_address("127.0.0.1"), ip_address("192.168.1.9"), ip_address("8.8.8.8")
    assert (
        refusal("http://127.0.0.1/f", [loopback], 80, redirected_from_public=False, own=None)
        is None
    )
    assert refusal("http://nas/f", [lan], 80, redirected_from_public=False, own=None) is None
    assert refusal("http://web/f", [web], 80, redirected_from_public=True, own=None) is None
    message = refusal(
        "http://admin.example/x", [loopback], 80, redirected_from_public=True, own=None
    )
    assert message == (
        "refused redirect to http://admin.example/x: it leads to 127.0.0.1, a loopback address, "
        "and a public site may not send the daemon into the local network; if you trust that "
        "address, put it in feeds.yaml as the feed's URL"
    )
    # one local address among public ones is a trick, not a mirror
    assert "192.168.1.9, a private address" in refusal(
        "http://mixed/", [web, lan], 80, redirected_from_public=True, own=None
    )
    # an address of this machine (the kernel's answer) is local, whatever its kind
    mine = refusal("http://me/", [web], 80, redirected_from_public=True, own=None, this_host={web})
    assert "8.8.8.8, an address of this machine" in mine


OWN_CASES = [
    # (settings.http, target address, reaches the digest?)
    ("127.0.0.1:8080", "127.0.0.1", True), ("127.0.0.1:8080", "127.0.0.2", True),
    ("127.0.0.1:8080", "0.0.0.0", True), ("127.0.0.1:8080", "::ffff:127.0.0.1", True),
    ("127.0.0.1:8080", "192.0.2.7", False), ("0.0.0.0:8080", "127.0.0.1", True),
    ("0.0.0.0:8080", "::1", True), ("0.0.0.0:8080", "::", True),
    ("[::]:8080", "127.0.0.1", True), ("[::1]:8080", "::1", True),
    ("localhost:8080", "127.0.0.1", True), ("192.168.1.5:8080", "192.168.1.5", True),
    ("192.168.1.5:8080", "127.0.0.1", False), ("192.168.1.5:8080", "192.168.1.6", False),
]  # fmt: skip


@pytest.mark.parametrize(("http", "target", "own"), OWN_CASES)
def test_own_digest_server_and_its_equivalents(http: str, target: str, own: bool) -> None:
    server = own_server(Settings(http=http).http_address(), resolve=lambda host: ["127.0.0.1"])
    assert server is not None
    assert reaches_own(ip_address(target), 8080, server) is own
    assert not reaches_own(ip_address(target), 8081, server)  # another port is another service
    if own:  # refused even as the configured URL, and the message says what to do
        text = refusal("http://x:8080/digest.atom", [ip_address(target)], 8080,
                       redirected_from_public=False, own=server)  # fmt: skip
        assert text and "own digest" in text and "remove the feed" in text


def test_own_digest_on_all_interfaces_includes_this_machines_addresses() -> None:
    server = OwnServer(8080, frozenset({ip_address("0.0.0.0")}), True, "0.0.0.0:8080")
    public_ip = ip_address("203.0.113.80")
    assert reaches_own(public_ip, 8080, server, this_host={public_ip})
    assert not reaches_own(public_ip, 8080, server)


def test_proxies_from_the_environment_are_routed_as_httpx_would() -> None:
    routes = proxy_routes({"http": "proxy:3128", "https": "http://proxy:3128",
                           "no": "localhost, .corp.example,10.0.0.0/8,::1,https://svc"})  # fmt: skip
    assert routes == {
        "http://": "http://proxy:3128", "https://": "http://proxy:3128",
        "all://localhost": None, "all://*.corp.example": None, "all://10.0.0.0/8": None,
        "all://[::1]": None, "https://svc": None,
    }  # fmt: skip
    assert proxy_routes({"all": "socks5://p:1080", "no": "*"}) == {}


# ---------------------------------------------------------------- redirects, end to end


def config_for(tmp_path: Path, feeds: list, **settings) -> Config:
    base = {"http": "off", "parse_workers": 0, "timeout": "5s", "connect_timeout": "2s",
            "interval": "1h", "per_host": 1}  # fmt: skip
    path = tmp_path / "feeds.yaml"
    path.write_text(dump_yaml({"settings": {**base, **settings}, "feeds": feeds}), "utf-8")
    return parse_config(path.read_text("utf-8"), path)


def poll(config: Config, public: Callable = is_public) -> dict[str, dict]:
    """One real poll (fetch, parse, store) in this process; {feed name: its row + titles}."""
    store = Store.open(config.path.parent / "agg.db")

    async def run() -> None:
        async with make_client(config.settings, public=public) as client:
            poller = Poller(config, store, Fetcher(client, config.settings))
            await poller.poll(store.sync_feeds(config, utcnow()))

    try:
        asyncio.run(run())
        out = {}
        for row in store.db.query("SELECT * FROM feeds"):
            texts = [r["title"] + " " + r["text"] for r in store.db.query(
                "SELECT title, text FROM items WHERE feed_id = ? ORDER BY id", [row["id"]])]  # fmt: skip
            out[row["name"]] = {**row, "items": texts}
        return out
    finally:
        store.close()


def test_a_public_site_cannot_redirect_into_the_local_network(tmp_path: Path) -> None:
    """The brief's case: a redirect to a loopback service put its text into the digest, and
    the errors told a closed port from an open one. Now every spelling of a local target is
    refused before connecting, with the same text whatever listens there; a configured local
    feed, and a public site's redirect to another public address, still work."""
    with EvilServer("127.0.0.1") as inside, EvilServer(OUTSIDE) as outside:
        service = inside.static("/admin.xml", rss("Admin", items("admin", SECRET)))
        port = inside.port
        with closed_port() as closed:
            targets = {
                "open service": service,
                "closed port": f"http://127.0.0.1:{closed.getsockname()[1]}/admin.xml",
                "localhost": f"http://localhost:{port}/admin.xml",
                "decimal": f"http://2130706433:{port}/admin.xml",
                "hex": f"http://0x7f.1:{port}/admin.xml",
                "short": f"http://127.1:{port}/admin.xml",
                "mapped": f"http://[::ffff:127.0.0.1]:{port}/admin.xml",
                "zero": f"http://0.0.0.0:{port}/admin.xml",
                "ipv6 loopback": f"http://[::1]:{port}/admin.xml",
                "metadata": "http://169.254.169.254/latest/meta-data/",
                "private": "http://10.20.30.40/feed.xml",
            }
            feeds = [{"url": outside.route(f"/to/{i}", redirect(url)), "name": name}
                     for i, (name, url) in enumerate(targets.items())]  # fmt: skip
            outside.static("/real.xml", good_feed("outside"))
            feeds.append({"url": outside.route("/moved", redirect(outside.url("/real.xml"), 301)),
                          "name": "public to public"})  # fmt: skip
            feeds.append(
                {"url": inside.route("/old", redirect(service)), "name": "configured local"}
            )
            result = poll(config_for(tmp_path, feeds), public=outside_is_public)

    for name, url in targets.items():
        feed = result[name]
        assert feed["status"] == "error" and feed["items"] == [], name
        assert feed["last_error"].startswith(f"refused redirect to {url}: it leads to "), name
        assert "put it in feeds.yaml as the feed's URL" in feed["last_error"]
    # the same words for an open and a closed port: nothing tells them apart
    shape = {
        result[n]["last_error"].replace(targets[n], "URL") for n in ("open service", "closed port")
    }
    assert len(shape) == 1, shape
    assert inside.hits("/admin.xml") == 1  # only the configured local feed's own request
    assert result["configured local"]["status"] == "ok"
    assert any(SECRET in t for t in result["configured local"]["items"])
    assert (
        result["public to public"]["status"] == "ok"
        and len(result["public to public"]["items"]) == 2
    )
    assert all(SECRET not in t for name in targets for t in result[name]["items"])


def test_an_address_of_this_machine_is_local_even_if_it_looked_public(tmp_path: Path) -> None:
    """With 127.0.0.1 counted as public too, the kernel still says it is this machine's."""
    with EvilServer("127.0.0.1") as inside, EvilServer(OUTSIDE) as outside:
        target = inside.static("/admin.xml", rss("Admin", items("admin", SECRET)))
        url = outside.route("/to", redirect(target))
        result = poll(config_for(tmp_path, [{"url": url, "name": "Away"}]),
                      public=lambda ip: str(ip) in ("127.0.0.1", OUTSIDE))  # fmt: skip
        assert inside.hits("/admin.xml") == 0
    assert "it leads to 127.0.0.1, an address of this machine" in result["Away"]["last_error"]


def test_the_daemon_never_fetches_its_own_digest(rig: Rig) -> None:
    """The brief's case: a feed redirecting to the daemon's digest was ingested (its stories
    counted again, inflating "N sources"). Refused, redirected or configured directly."""
    b = rig.serve("/b.xml", "Bay News", [story("bridge", "b1"), story("rail_strike", "b2")])
    rig.server.set(
        "/loop.xml", Route(status=302, redirect_to=f"http://127.0.0.1:{rig.port}/digest.atom")
    )
    loop, direct = rig.server.url("/loop.xml"), f"http://localhost:{rig.port}/digest.json"
    rig.write_config(
        [b, {"url": loop, "name": "Loop"}, {"url": direct, "name": "Direct"}], interval="1s"
    )
    daemon = rig.start_serving()

    def errors() -> dict[str, str]:
        rows = rig.query("SELECT name, last_error FROM feeds WHERE name IN ('Loop', 'Direct')")
        return {n: e for n, e in rows if e and "own digest" in e}

    found = wait_for("both digest feeds refused", lambda: len(e := errors()) == 2 and e)
    assert found["Loop"].startswith(
        f"refused http://127.0.0.1:{rig.port}/digest.atom: that is this daemon's own digest"
    )
    assert found["Direct"].startswith(f"refused {direct}: that is this daemon's own digest")
    entries = wait_for("Bay News' 2 stories served", lambda: len(e := rig.entries()) == 2 and e)
    hits = rig.server.hits("/loop.xml")
    wait_for("another poll of Loop", lambda: rig.server.hits("/loop.xml") > hits + 1)
    assert rig.count("items") == 2
    assert (
        sorted(e["sources"] for e in rig.entries().values())
        == [1, 1]
        == sorted(e["sources"] for e in entries.values())
    )
    assert daemon.stop() == 0


def test_a_huge_redirect_body_is_not_read(ws: Workspace, evil: EvilServer) -> None:
    """httpx read a redirect's whole body before following it (1 GB here)."""
    evil.static("/good.xml", good_feed("moved"), "application/rss+xml")

    async def moved(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 301 Moved Permanently\r\nLocation: /good.xml\r\n"
                     b"Content-Length: %d\r\n\r\n" % GB)  # fmt: skip
        block = b"<!-- moved -->" * 4096
        for _ in range(GB // len(block)):  # until the client hangs up
            writer.write(block)
            await writer.drain()

    url = evil.route("/moved", moved)
    ws.write_config([{"url": url, "name": "Moved"}])
    run = ws.fetch()
    assert run.summary()["Moved"]["status"] == "new", run.out
    assert ws.feed(url)["moved_to"] == evil.url("/good.xml")
    record("peak RSS, 1 GB redirect body", f"{run.peak_rss_mb:.0f} MB")
    assert run.peak_rss_mb < 300


# ---------------------------------------------------------------- keep-alive desync


def injected(title: str) -> bytes:
    """A complete fake HTTP response carrying a feed, to be sent after a real one."""
    body = rss("Injected", items("injected", f"{title} was written by another feed's server"))
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip


class Connections:
    """Which client connection (its port) each request arrived on."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}

    def note(self, request: Request, writer: asyncio.StreamWriter) -> None:
        self.seen.setdefault(request.path, []).append(writer.get_extra_info("peername")[1])

    def of(self, path: str) -> int:
        (port,) = self.seen[path]
        return port


def answer(connections: Connections, body: bytes, then: bytes = b"", framing: str = "length",
           status: int = 200) -> Handler:  # fmt: skip
    """A feed response framed by Content-Length or chunked (or a bodyless 304), followed in
    the same write by `then`."""

    async def handle(request: Request, writer: asyncio.StreamWriter) -> None:
        connections.note(request, writer)
        head = f'HTTP/1.1 {status} OK\r\nContent-Type: application/rss+xml\r\nETag: "v1"\r\n'
        if status == 304:
            raw = head.encode() + b"\r\n"
        elif framing == "chunked":
            raw = head.encode() + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
                len(body),
                body,
            )
        else:
            raw = head.encode() + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        writer.write(raw + then)
        await writer.drain()

    return handle


def test_bytes_after_a_response_are_not_the_next_feeds_answer(
    ws: Workspace, evil: EvilServer
) -> None:
    """The brief's case through the real CLI: feed A's server sends a second, fake response
    after A's; B on the same origin must store its own feed. The connection A spoiled is
    closed, and the clean ones are still reused (keep-alive is not simply switched off)."""
    seen = Connections()
    feeds = {"A": evil.route("/a.xml", answer(seen, rss("A", items("a", "alpha text")), injected("B"))),
             "B": evil.route("/b.xml", answer(seen, rss("B", items("b", "bravo text")))),
             "C": evil.route("/c.xml", answer(seen, rss("C", items("c", "charlie text")))),
             "D": evil.route("/d.xml", answer(seen, rss("D", items("d", "delta text"))))}  # fmt: skip
    ws.write_config([{"url": u, "name": n} for n, u in feeds.items()], per_host=1)
    run = ws.fetch()
    summary = run.summary()
    for name, word in {"A": "alpha", "B": "bravo", "C": "charlie", "D": "delta"}.items():
        assert summary[name]["status"] == "new", summary
        assert [i["text"] for i in ws.items(feeds[name])] == [f"{word} text"]
    assert "another feed's server" not in ws.all_text()
    a, b, c, d = (seen.of(f"/{n}.xml") for n in "abcd")
    assert b != a  # A's connection was not reused
    assert b == c == d  # clean responses keep their connection


@pytest.mark.parametrize("framing", ["length", "chunked", "304"])
def test_no_framing_lets_leftover_bytes_through(framing: str) -> None:
    """Leftover bytes after a Content-Length body, after the last chunk, and after a
    bodyless 304 (whose connection is reused now that 304s are drained)."""
    seen = Connections()
    with EvilServer() as evil:
        status = 304 if framing == "304" else 200
        a = evil.route(
            "/a.xml", answer(seen, rss("A", items("a", "alpha")), injected("B"), framing, status)
        )
        b_body = rss("B", items("b", "bravo"))
        b = evil.route("/b.xml", answer(seen, b_body, framing=framing))
        settings = Settings(http="off", per_host=1, timeout=5, connect_timeout=2)

        async def run():
            async with make_client(settings) as client:
                fetcher = Fetcher(client, settings)
                first = await fetcher.fetch(a, etag='"v1"')
                return first, await fetcher.fetch(b)

        first, second = asyncio.run(run())
    assert first.status is (FetchStatus.NOT_MODIFIED if status == 304 else FetchStatus.OK)
    assert second.status is FetchStatus.OK and second.body == b_body
    assert seen.of("/a.xml") != seen.of("/b.xml")


def test_bytes_arriving_after_a_response_are_not_the_next_feeds_answer() -> None:
    """Sent a moment after the response, when the connection already waits in the pool."""
    seen, sent = Connections(), threading.Event()
    b_body = rss("B", items("b", "bravo"))

    async def late(request: Request, writer: asyncio.StreamWriter) -> None:
        await answer(seen, rss("A", items("a", "alpha")))(request, writer)
        await asyncio.sleep(0.2)
        writer.write(injected("B"))
        await writer.drain()
        sent.set()

    with EvilServer() as evil:
        a, b = evil.route("/a.xml", late), evil.route("/b.xml", answer(seen, b_body))
        settings = Settings(http="off", per_host=1, timeout=5, connect_timeout=2)

        async def run():
            async with make_client(settings) as client:
                fetcher = Fetcher(client, settings)
                await fetcher.fetch(a)
                await asyncio.to_thread(sent.wait, 10)
                return await fetcher.fetch(b)

        second = asyncio.run(run())
    assert second.status is FetchStatus.OK and second.body == b_body


def test_not_modified_answers_keep_their_connection() -> None:
    """A warm poll of 12 feeds on one host (all 304): each 304 used to close its
    connection; now they share at most per_host connections."""
    seen = Connections()
    with EvilServer() as evil:
        urls = [evil.route(f"/f{i}.xml", answer(seen, b"", status=304)) for i in range(12)]
        settings = Settings(http="off", per_host=2, timeout=5, connect_timeout=2)

        async def run():
            async with make_client(settings) as client:
                fetcher = Fetcher(client, settings)
                return await asyncio.gather(*(fetcher.fetch(u, etag='"v1"') for u in urls))

        results = asyncio.run(run())
    assert {r.status for r in results} == {FetchStatus.NOT_MODIFIED}
    connections = len({port for ports in seen.seen.values() for port in ports})
    record("connections for a warm poll of 12 feeds on one host (per_host 2)", str(connections))
    assert connections <= 2


def test_idle_connections_to_many_hosts_stay_within_the_keep_alive_limit() -> None:
    """The transport keeps a pool per origin; of the origins with nothing in flight, at
    most settings.concurrency keep their connections, the least recently used closing
    first. A poll over thousands of hosts must not hold a socket open to each."""
    seen = Connections()
    settings = Settings(http="off", concurrency=2, per_host=2, timeout=5, connect_timeout=2)
    with EvilServer() as a, EvilServer() as b, EvilServer() as c:
        urls = {name: server.route(f"/{name}.xml", answer(seen, b"", status=304))
                for name, server in (("a", a), ("b", b), ("c", c))}  # fmt: skip

        async def run():
            async with make_client(settings) as client:
                fetcher = Fetcher(client, settings)
                for name in ("a", "b", "c", "b", "a"):
                    await fetcher.fetch(urls[name], etag='"v1"')

        asyncio.run(run())
    b_first, b_again = seen.seen["/b.xml"]
    a_first, a_again = seen.seen["/a.xml"]
    assert b_again == b_first  # among the two most recent: kept and reused
    assert a_again != a_first  # the least recently used when c came: closed
