"""Downloads of a task's outputs from the upstream's presigned URLs (its object storage).

The URLs carry their own signature, so no key is sent: the master key never goes to the storage
host. Answers stream through in chunks (a video is never held whole in memory), with the
client's `Range` and `If-None-Match` passed on and the storage's range headers relayed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from app.errors import Gone, RangeNotSatisfiable, UpstreamFailure, UpstreamTimeout
from app.upstream.transport import upstream_transport

logger = logging.getLogger(__name__)

# What a download answer may carry on to the client.
RELAYED_HEADERS = (
    "content-type",
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
)
CHUNK_BYTES = 64 * 1024


def create_content_client(
    *, timeout: float, connect_timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A client for presigned download URLs: no credentials, no redirects followed."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=connect_timeout),
        follow_redirects=False,
        transport=transport or upstream_transport(max_connections=100),
    )


@dataclass
class Download:
    """An answer under way: its status and headers now, its body as it arrives."""

    status_code: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


async def _chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body, chunk by chunk; the connection is released at the end (or on error)."""
    try:
        async for chunk in response.aiter_raw(CHUNK_BYTES):
            yield chunk
    finally:
        await response.aclose()


async def open_download(
    http: httpx.AsyncClient, url: str, *, range_header: str | None, if_none_match: str | None
) -> Download:
    """Start downloading `url`: 200, 206 or 304 as a `Download`; 410 once the URL has expired
    (the storage refuses it), 416 for a range outside the object, 502/504 when it fails."""
    headers = {"Accept-Encoding": "identity"}  # byte ranges of the stored bytes, not of a gzip
    if range_header is not None:
        headers["Range"] = range_header
    if if_none_match is not None:
        headers["If-None-Match"] = if_none_match
    try:
        response = await http.send(http.build_request("GET", url, headers=headers), stream=True)
    except httpx.TimeoutException:
        raise UpstreamTimeout("The upstream storage did not answer in time.") from None
    except httpx.HTTPError as exc:
        logger.warning("download failed: %s", type(exc).__name__)
        raise UpstreamFailure("The upstream storage could not be reached.") from None
    relayed = {name: response.headers[name] for name in RELAYED_HEADERS if name in response.headers}
    if response.status_code in (200, 206, 304):
        return Download(response.status_code, relayed, _chunks(response))
    await response.aclose()
    if response.status_code in (403, 404, 410):
        raise Gone(
            "The upstream's link to this output has expired; only an archived copy could be "
            "served now.",
            code="ContentExpired",
        )
    if response.status_code == 416:
        raise RangeNotSatisfiable(content_range=relayed.get("content-range"))
    logger.warning("download answered %d", response.status_code)
    raise UpstreamFailure("The upstream storage failed to serve the output.")
