"""A TCP forwarder on 127.0.0.1 that a test can cut, freeze and restore: a database that goes
away, or hangs, while a gateway process uses it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class ToggleProxy:
    """Forwards `port` to `target_port` in a thread of its own."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.frozen = False
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
    def freeze(self) -> Iterator[None]:
        """Hold every byte in both directions for the block."""
        self.frozen = True
        try:
            yield
        finally:
            self.frozen = False
