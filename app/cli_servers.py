"""The CLI commands that run something: migrate, serve, simulate and worker.

Kept apart from `app.cli` and imported only when one of them runs: they pull in the web stack
and Alembic, which the user and key commands do not need to start quickly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvicorn
from sqlalchemy.engine import make_url

from app import demo
from app.config import Settings
from app.lifespan import open_resources, running_background
from app.main import create_app
from app.migrate import upgrade_to_head
from app.ops.router import worker_metrics_app
from app.server import serve_gateway, server_options
from app.simulator.app import create_simulator_app
from app.simulator.state import SimConfig


def migrate(_args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(upgrade_to_head(settings.database_url))
    print(f"database at head: {_safe_url(settings.database_url)}")


def serve(args: argparse.Namespace, settings: Settings) -> None:
    asyncio.run(upgrade_to_head(settings.database_url))
    if not settings.demo_mode:
        serve_gateway(settings, host=args.host, port=args.port, workers=args.workers)
        return
    settings = demo.demo_settings(settings)
    demo.check_ports(args.host, args.port, settings.demo_simulator_port)
    key = asyncio.run(demo.create_demo_key(settings))
    print(demo.banner(settings, host=args.host, port=args.port, key=key), flush=True)
    asyncio.run(_serve_with_simulator(settings, host=args.host, port=args.port))


async def _serve_with_simulator(settings: Settings, *, host: str, port: int) -> None:
    gateway = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=host, port=port, **server_options(settings))
    )
    simulator = uvicorn.Server(
        uvicorn.Config(
            demo.demo_simulator(settings),
            host="127.0.0.1",
            port=settings.demo_simulator_port,
            log_config=None,
        )
    )
    await asyncio.gather(gateway.serve(), simulator.serve())


def simulate(args: argparse.Namespace, settings: Settings) -> None:
    config = SimConfig(
        api_key=args.api_key or settings.upstream_key(),
        queued_seconds=args.queued_seconds,
        running_seconds=args.running_seconds,
        public_base_url=f"http://{args.host}:{args.port}",
    )
    uvicorn.run(create_simulator_app(config), host=args.host, port=args.port, log_config=None)


def worker(args: argparse.Namespace, settings: Settings) -> None:
    async def work() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        worker_settings = settings.model_copy(update={"poller_enabled": True})
        async with open_resources(worker_settings) as resources, running_background(resources):
            if args.metrics_port is None:
                await stop.wait()
                return
            # The poller's, callbacks' and archive's counters live in this process: serve them.
            config = uvicorn.Config(
                worker_metrics_app(resources),
                host=args.host,
                port=args.metrics_port,
                log_config=None,
            )
            server = uvicorn.Server(config)
            serving = asyncio.create_task(server.serve())
            await stop.wait()
            server.should_exit = True
            await serving

    asyncio.run(work())


def _safe_url(url: str) -> str:
    """The URL without a password."""
    return make_url(url).render_as_string(hide_password=True)
