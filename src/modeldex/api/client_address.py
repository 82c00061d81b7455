"""Who is asking: the client address, taking X-Forwarded-For only from proxies we were told to trust."""

from __future__ import annotations

import ipaddress
from typing import Protocol

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: tuple[str, ...]) -> tuple[Network, ...] | None:
    """`--forwarded-allow-ips`: addresses or CIDR ranges; `*` trusts every peer (None)."""
    if "*" in values:
        return None
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip())


def _trusted(address: str, trusted: tuple[Network, ...] | None) -> bool:
    if trusted is None:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


class HeaderItems(Protocol):
    def items(self) -> list[tuple[str, str]]: ...


def peer_host(peer: str) -> str:
    """The host of granian's `host:port` peer (`127.0.0.1:5000`, `[::1]:5000`); IPv4 seen on a dual-stack
    socket (`[::ffff:10.0.0.1]`) as plain IPv4, so it matches IPv4 ranges."""
    host = peer.rpartition(":")[0]
    if host.startswith("["):
        host = host[1:-1]
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
    return host or "unknown"


def _hop_host(hop: str) -> str:
    """An X-Forwarded-For hop's address without the port some proxies add (`203.0.113.7:5555`,
    `[2001:db8::1]:443`, `[2001:db8::1]`): with it, each connection counted as an address of its own for the
    failed-attempt limit, and a trusted proxy's own hop was not recognised. Anything else is kept as it is."""
    if hop.startswith("["):
        host = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        host = hop.partition(":")[0]
    else:
        return hop
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return hop
    return host


MAX_REMEMBERED_PEERS = 4096


class ClientAddress:
    def __init__(self, forwarded_allow_ips: tuple[str, ...]) -> None:
        self._trusted = parse_networks(forwarded_allow_ips)
        self._enabled = bool(forwarded_allow_ips)
        # peer -> host: a connection's requests share its peer, and parsing it costs ~0.4 µs (measured).
        self._hosts: dict[str, str] = {}
        # The same table for the hot path to read directly (a lookup instead of a call: 0.1 µs), when no
        # header can change the answer; None when some peers are trusted proxies.
        self.known_hosts: dict[str, str] | None = None if self._enabled else self._hosts

    def __call__(self, peer: str, headers: HeaderItems) -> str:
        """The peer's address, or, when the peer is a trusted proxy, the nearest untrusted address in
        X-Forwarded-For (walking from the right, as each proxy appends the address it saw)."""
        host = self._hosts.get(peer)
        if host is None:
            if len(self._hosts) >= MAX_REMEMBERED_PEERS:
                self._hosts.clear()
            host = self._hosts[peer] = peer_host(peer)
        if not self._enabled or not _trusted(host, self._trusted):
            return host
        forwarded = [value for name, value in headers.items() if name == "x-forwarded-for"]
        if not forwarded:
            return host
        hops = [_hop_host(hop.strip()) for hop in ",".join(forwarded).split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _trusted(hop, self._trusted):
                return hop
        return hops[0] if hops else host
