"""`python -m bench.delay_proxy LISTEN_PORT TARGET_PORT DELAY_MS`: a TCP forwarder on 127.0.0.1
that holds every chunk for DELAY_MS in each direction, to stand in for a Redis across a network."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable


async def forward(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    before_each: Callable[[], Awaitable[None]],
) -> None:
    """Copy `reader` to `writer` chunk by chunk, awaiting `before_each` before each chunk."""
    try:
        while chunk := await reader.read(65536):
            await before_each()
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(listen_port: int, target_port: int, delay: float) -> None:
    """Forward every connection to `target_port`, delayed both ways."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            forward(client_r, server_w, lambda: asyncio.sleep(delay)),
            forward(server_r, client_w, lambda: asyncio.sleep(delay)),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    listen, target, delay_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    asyncio.run(serve(listen, target, delay_ms / 1000))
