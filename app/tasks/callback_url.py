"""Checking a create's `callback_url` fully, so every stored URL is one the gateway can call.

Resolvers and HTTP clients read odd host forms differently (`127.1`, `0177.0.0.1` and
`2130706433` all mean 127.0.0.1 to some of them), so only plain forms are accepted: a DNS name,
a dotted-quad IPv4 address or a bracketed IPv6 address, and a port in range. Where the URL may
lead is checked again at delivery (`callback_guard`), against what the host resolves to then.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

import httpx

from app.errors import InvalidParameter

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_DOTTED_QUAD = re.compile(
    r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$"
)


def check_callback_url(url: str | None) -> str | None:
    """`url` if the gateway can deliver to it; 400 `InvalidParameter` naming `callback_url`."""
    if url is None:
        return None
    reason = _problem(url)
    if reason is not None:
        raise InvalidParameter("callback_url", reason)
    return url


def _problem(url: str) -> str | None:
    if not url.isascii() or not url.isprintable() or " " in url:
        return "it must be an ASCII URL without spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        return f"it is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "it must be an http or https URL"
    if parts.username is not None or parts.password is not None:
        return "it must not carry credentials"
    if port == 0:
        return "its port must be between 1 and 65535"
    host = parts.hostname or ""
    return (
        None
        if _plain_host(host, bracketed=parts.netloc.find("[") >= 0)
        else (
            f"its host {host!r} is not a DNS name, a dotted-quad IPv4 or a bracketed IPv6 address"
        )
    )


def _plain_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:
        try:
            return ipaddress.ip_address(host).version == 6
        except ValueError:
            return False
    labels = host.rstrip(".").split(".")
    if labels[-1].isdigit():  # numeric top label: only a plain dotted quad is an address
        return bool(_DOTTED_QUAD.match(host))
    return len(host) <= 253 and all(_LABEL.match(label) for label in labels)
