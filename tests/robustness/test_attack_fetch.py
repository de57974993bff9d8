"""Issue #12, item 6: which addresses count as local, and the daemon's own digest server
(aggregator/addresses.py, pure decisions tested on many addresses)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from aggregator.addresses import (
    OwnServer,
    is_public,
    kind,
    own_server,
    reaches_own,
    refusal,
)
from aggregator.config import Settings

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
