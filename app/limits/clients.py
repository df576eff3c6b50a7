"""The client's address: the peer, or what trusted proxies say in X-Forwarded-For."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Sequence[str]) -> list[Network]:
    """Addresses or CIDR ranges (trusted proxies, allowed callback networks) as networks."""
    return [ipaddress.ip_network(entry.strip(), strict=False) for entry in entries if entry.strip()]


def client_address(request: Request, trusted: Sequence[Network]) -> str:
    """The peer address; behind trusted proxies, the nearest untrusted hop of X-Forwarded-For."""
    peer = request.client.host if request.client else "unknown"
    if not trusted or not in_networks(peer, trusted):
        return peer
    hops = [
        hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()
    ]
    for hop in reversed(hops):
        if not in_networks(hop, trusted):
            return hop
    return hops[0] if hops else peer


def in_networks(address: str, networks: Sequence[Network]) -> bool:
    """Whether an address lies in one of the networks (an unparsable one in none)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)
