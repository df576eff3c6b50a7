"""The simulator's outputs, served as the upstream's object storage serves them: a real,
playable MP4 (3 s of H.264 at 24 fps, made once with ffmpeg's test pattern) and its last frame,
behind presigned URLs that stop working at their expiry (403, as TOS answers), with ETags and
single byte-range requests (206, 416). Its own code: the gateway's range handling is what this
checks, so none of it is shared."""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlencode

from fastapi import Response

MEDIA = Path(__file__).with_name("media")
KINDS = {"videos": ("sample.mp4", "video/mp4"), "frames": ("last_frame.jpg", "image/jpeg")}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@cache
def media_bytes(kind: str) -> bytes:
    """The bytes of one kind of output (`videos` or `frames`)."""
    return (MEDIA / KINDS[kind][0]).read_bytes()


def signed_url(base_url: str, path: str, *, expires_at: int, secret: str) -> str:
    """A presigned URL for `path`, valid until `expires_at` (unix seconds)."""
    query = {
        "X-Tos-Expires": str(expires_at),
        "X-Tos-Signature": _signature(path, expires_at, secret),
    }
    return f"{base_url}{path}?{urlencode(query)}"


def valid_signature(path: str, *, expires: str, signature: str, secret: str, now: float) -> bool:
    """Whether a presented URL was signed here and has not expired."""
    if not expires.isdigit() or int(expires) < now:
        return False
    return hmac.compare_digest(signature, _signature(path, int(expires), secret))


def _signature(path: str, expires_at: int, secret: str) -> str:
    message = f"{path}\n{expires_at}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def serve(kind: str, *, range_header: str | None, if_none_match: str | None) -> Response:
    """The whole object (200), one byte range of it (206), 304 for a matching ETag, or 416."""
    content, media_type = media_bytes(kind), KINDS[kind][1]
    etag = f'"{hashlib.md5(content).hexdigest()}"'  # noqa: S324 (object stores' ETag is MD5)
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    if range_header is None:
        return Response(content, media_type=media_type, headers=headers)
    match = _RANGE.fullmatch(range_header.strip())
    size = len(content)
    if match is None or match.groups() == ("", ""):
        return Response(content, media_type=media_type, headers=headers)  # ignored, per RFC
    first, last = match.groups()
    if first == "":  # the last N bytes
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        headers["Content-Range"] = f"bytes */{size}"
        return Response(status_code=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(
        content[start : end + 1], status_code=206, media_type=media_type, headers=headers
    )


def access_denied() -> Response:
    """What the object store answers for an expired or forged URL."""
    body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
    return Response(body, status_code=403, media_type="application/xml")
