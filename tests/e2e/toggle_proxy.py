"""A TCP forwarder on 127.0.0.1 that a test can cut, freeze and restore: a database that goes
away, or hangs, while a gateway process uses it; or, for PostgreSQL, one that restarts (new
logins refused as a starting server refuses them)."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class ToggleProxy:
    """Forwards `port` to `target_port` in a thread of its own."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
        self.starting = False
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        self._call(self._listen())

    def _call(self, coroutine) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.starting:
            await _refuse_as_starting_up(reader, writer)
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.target_port
        )
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                while self.frozen:
                    await asyncio.sleep(0.05)
                writer.write(chunk)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        """Refuse new connections and drop every open one."""

        async def cut() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(cut())

    def restore(self) -> None:
        """Accept again, on the same port."""
        self.frozen = False
        self._call(self._listen())

    @contextmanager
    def starting_up(self) -> Iterator[None]:
        """For the block, PostgreSQL restarting: every open connection dropped, every new login
        refused with SQLSTATE 57P03 ("the database system is starting up")."""
        self.cut()
        self.starting = True
        self.restore()
        try:
            yield
        finally:
            self.starting = False

    @contextmanager
    def freeze(self) -> Iterator[None]:
        """Hold every byte in both directions for the block."""
        self.frozen = True
        try:
            yield
        finally:
            self.frozen = False


SSL_REQUEST = 80877103  # the code a client sends before its startup message to ask for TLS


async def _refuse_as_starting_up(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """What a starting PostgreSQL answers a login: no TLS, then a FATAL ErrorResponse."""
    with suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        if length == 8 and code == SSL_REQUEST:
            writer.write(b"N")
            (length,) = struct.unpack("!i", await reader.readexactly(4))
            await reader.readexactly(length - 4)
        else:
            await reader.readexactly(length - 8)
        fields = b"".join(
            kind + text.encode() + b"\0"
            for kind, text in (
                (b"S", "FATAL"),
                (b"V", "FATAL"),
                (b"C", "57P03"),
                (b"M", "the database system is starting up"),
            )
        )
        writer.write(b"E" + struct.pack("!i", len(fields) + 5) + fields + b"\0")
        await writer.drain()
    writer.close()
