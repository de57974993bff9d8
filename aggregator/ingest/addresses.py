"""Which network addresses a fetch may reach: pure decisions over resolved addresses.

A feed's URL is trusted as the user wrote it, local or not (a feed on the LAN or on this
machine works). A redirect is the feed server's choice, not the user's: one from a public
address may not lead into the local network (loopback, private, link-local, ... or this
machine's own addresses), where it would read a router's admin page, a cloud metadata
service or a local admin API and put the answer into the digest. And no hop, configured
or redirected, may reach this daemon's own digest server: it would ingest its own output
and count every story twice.

The fetcher resolves each hop's host, asks `refusal` about exactly the addresses it will
connect to, and connects to nothing else (see aggregator/ingest/transport.py).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address
NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052: IPv6-only networks reach IPv4 through it
SHARED = IPv4Network("100.64.0.0/10")  # RFC 6598: carrier-grade NAT, not the Internet


def embedded_ipv4(ip: IPAddress) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4, NAT64), whose rules
    apply: `::ffff:127.0.0.1` is loopback however it is written."""
    if isinstance(ip, IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public Internet address ("loopback", "private", ...), or None
    when it is one. Checked on the address the IPv6 form embeds, if any."""
    ip = embedded_ipv4(ip) or ip
    for name, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("shared (carrier-grade NAT)", isinstance(ip, IPv4Address) and ip in SHARED),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, IPv6Address) and ip.is_site_local),
        ("non-global", not ip.is_global),
    ):
        if flag:
            return name
    return None


def is_public(ip: IPAddress) -> bool:
    """True for an address on the public Internet."""
    return kind(ip) is None


def parse_address(text: str) -> IPAddress:
    """An address as getaddrinfo or a socket gives it (`fe80::1%eth0` keeps its zone)."""
    return ip_address(text)


@dataclass(frozen=True)
class OwnServer:
    """Where this daemon serves its digest (settings.http), as the addresses that reach it."""

    port: int
    addresses: frozenset[IPAddress]  # what the bind address resolved to
    any_interface: bool  # bound to 0.0.0.0 or ::, so every address of this machine reaches it
    label: str  # host:port as configured, for messages


def own_server(
    address: tuple[str, int] | None,
    resolve: Callable[[str], Sequence[str]] | None = None,
) -> OwnServer | None:
    """The digest server bound at `address` ((host, port) from settings.http; None: off).
    A host name is resolved once with `resolve` (default getaddrinfo): it is the local
    name the server binds to, usually `localhost`."""
    if address is None:
        return None
    host, port = address
    label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        found = [parse_address(host)]
    except ValueError:
        found = [parse_address(a) for a in (resolve or _resolve_locally)(host)]
    normal = frozenset(embedded_ipv4(ip) or ip for ip in found)
    return OwnServer(port, normal, any(ip.is_unspecified for ip in normal), label)


def _resolve_locally(host: str) -> list[str]:
    try:
        return [str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
    except OSError:
        return []


def reaches_own(
    ip: IPAddress, port: int, own: OwnServer, this_host: Collection[IPAddress] = ()
) -> bool:
    """Whether connecting to (ip, port) reaches our own digest server. `this_host` holds
    those addresses that belong to this machine (the kernel's answer, see
    transport.this_machine): a server bound to 0.0.0.0 answers on all of them. On the
    digest's port, any loopback address, and 0.0.0.0 or :: (which connect to this machine),
    count as the digest when it listens on loopback: refusing a different service on
    127.0.0.2 at that port is the safe side of a rare case."""
    if port != own.port:
        return False
    if ip in this_host and own.any_interface:
        return True
    ip = embedded_ipv4(ip) or ip
    if ip in own.addresses:
        return True
    if ip.is_loopback or ip.is_unspecified:
        return own.any_interface or any(a.is_loopback for a in own.addresses)
    return False


def refusal(
    url: str,
    addresses: Sequence[IPAddress],
    port: int,
    *,
    redirected_from_public: bool,
    own: OwnServer | None,
    this_host: Collection[IPAddress] = (),
    public: Callable[[IPAddress], bool] = is_public,
) -> str | None:
    """Why this hop must not be connected, or None. `addresses` are all the addresses its
    host resolved to: the hop is refused if any of them is refused (a name that resolves
    to a public and a loopback address is a trick, not a mirror). The text names the target
    and says what to do; it is decided before connecting, so it never tells whether the
    refused port was open."""
    how = "redirect to " if redirected_from_public else ""
    if own is not None and any(reaches_own(ip, port, own, this_host) for ip in addresses):
        return (f"refused {how}{url}: that is this daemon's own digest (settings.http "
                f"{own.label}), and fetching it would count every story twice; remove the "
                "feed from feeds.yaml")  # fmt: skip
    if not redirected_from_public:
        return None
    for ip in addresses:
        if ip in this_host:
            what = "an address of this machine"
        elif not public(ip):
            what = f"a {kind(ip) or 'non-public'} address"
        else:
            continue
        return (f"refused redirect to {url}: it leads to {ip}, {what}, and a public site may "
                "not send the daemon into the local network; if you trust that address, put "
                "it in feeds.yaml as the feed's URL")  # fmt: skip
    return None
