"""Who is asking: the client address, taking X-Forwarded-For only from proxies we were told to trust."""

from __future__ import annotations

import ipaddress
from typing import Any

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


class ClientAddress:
    def __init__(self, forwarded_allow_ips: tuple[str, ...]) -> None:
        self._trusted = parse_networks(forwarded_allow_ips)
        self._enabled = bool(forwarded_allow_ips)

    def __call__(self, scope: dict[str, Any]) -> str:
        """The peer's address, or, when the peer is a trusted proxy, the nearest untrusted address in
        X-Forwarded-For (walking from the right, as each proxy appends the address it saw)."""
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self._enabled or not _trusted(peer, self._trusted):
            return peer
        forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
        if not forwarded:
            return peer
        hops = [hop.strip() for hop in b",".join(forwarded).decode("latin-1").split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _trusted(hop, self._trusted):
                return hop
        return hops[0] if hops else peer
