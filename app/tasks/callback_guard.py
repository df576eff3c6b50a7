"""Callbacks go to public addresses only, unless an operator allows a private network.

A gateway key holder chooses `callback_url`, so without a guard the gateway would POST to
whatever it can reach: its own admin port, cloud metadata, internal services. Each delivery
resolves the host, refuses if any address is loopback, private, link-local or otherwise not
global (and not in `GATEWAY_CALLBACK_ALLOWED_NETWORKS`), and then connects to the address it
checked, so a DNS answer that changes between check and connect cannot redirect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import httpx

from app.limits.clients import Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CallbackHostRefused(httpx.ConnectError):
    """The callback host resolves to an address callbacks may not reach."""


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    """Resolves, checks and pins the callback host, then sends through `inner`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, allowed: Sequence[Network]) -> None:
        self._inner = inner
        self._allowed = list(allowed)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` to the checked address of its host, or raise `CallbackHostRefused`."""
        host = request.url.host
        addresses = await _resolve(host, request.url.port or _default_port(request.url.scheme))
        refused = [address for address in addresses if not self._permitted(address)]
        if not addresses or refused:
            raise CallbackHostRefused(
                f"callback host {host} does not resolve to public addresses only", request=request
            )
        request.url = request.url.copy_with(host=str(addresses[0]))
        request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()

    def _permitted(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_global or any(address in network for network in self._allowed)


async def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
