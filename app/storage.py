"""Where archived outputs are kept: a local directory or S3-compatible object storage, through
obstore (one async API for both, streaming in and out, multipart uploads for large objects).

`GATEWAY_ARCHIVE_URL` names the place: `file:///var/lib/seedance/archive` or
`s3://bucket/prefix` (with the `GATEWAY_ARCHIVE_S3_*` settings for the endpoint and credentials).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import obstore
from obstore.store import LocalStore, S3Store

from app.config import Settings

CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What was written: its size and a digest of its bytes (the ETag served for it)."""

    size: int
    sha256: str


@dataclass
class ObjectStore:
    """Objects under one prefix of one store."""

    store: LocalStore | S3Store
    prefix: str

    def _path(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> StoredObject:
        """Write `chunks` as the object `key` (replacing it), hashing them on the way."""
        digest, size = hashlib.sha256(), 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        await obstore.put_async(self.store, self._path(key), counted())
        return StoredObject(size=size, sha256=digest.hexdigest())

    async def read(self, key: str, *, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` to `end` (exclusive) of the object, chunk by chunk."""
        result = await obstore.get_async(
            self.store, self._path(key), options={"range": (start, end)}
        )
        async for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
            yield bytes(chunk)

    async def delete(self, key: str) -> None:
        """Remove the object; removing one that is gone is not an error."""
        try:
            await obstore.delete_async(self.store, self._path(key))
        except FileNotFoundError:
            return


def open_store(settings: Settings) -> ObjectStore | None:
    """The archive's store, or None when the archive is off."""
    url = settings.archive_url
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme == "file":
        return ObjectStore(LocalStore(unquote(parts.path), mkdir=True), prefix="")
    if parts.scheme == "s3":
        secret = settings.archive_s3_secret_access_key
        options = {
            "endpoint": settings.archive_s3_endpoint_url,
            "region": settings.archive_s3_region,
            "access_key_id": settings.archive_s3_access_key_id,
            "secret_access_key": secret.get_secret_value() if secret is not None else None,
        }
        # Unset options fall back to the AWS_* environment and the instance's credentials.
        given = {name: value for name, value in options.items() if value is not None}
        store = S3Store(
            parts.netloc,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
            **given,  # type: ignore[arg-type]
        )
        return ObjectStore(store, prefix=parts.path.strip("/"))
    raise ValueError(f"GATEWAY_ARCHIVE_URL must be file:///… or s3://bucket/prefix, not {url!r}")
